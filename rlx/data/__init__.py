"""Data files that ship inside the package (read with `importlib.resources`, so they work from a
clone, an editable install and a wheel alike). Nothing here is code: JSON and `.npz` only.

* `gflownet_seh/`: the 105-block fragment library and the sEH proxy weights (MIT, see its README).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["path", "SEH_WEIGHTS", "FRAGMENT_LIBRARIES"]

SEH_WEIGHTS = "gflownet_seh/seh_proxy_params.npz"
FRAGMENT_LIBRARIES = {"PDB_105": "gflownet_seh/blocks_PDB_105.json"}  # name -> packaged file


def path(name: str) -> Path:
    """The file system path of a packaged data file, e.g. `path("gflownet_seh/blocks_PDB_105.json")`."""
    p = Path(str(resources.files(__name__).joinpath(name)))
    if not p.is_file():
        raise FileNotFoundError(f"rlx package data {name!r} not found in {p.parent} (a broken install? reinstall rlx)")
    return p
