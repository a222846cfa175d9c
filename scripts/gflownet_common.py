"""Shared helpers of the GFlowNet scripts: run the torchgfn side in its own virtual environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TORCHGFN_PYTHON = os.environ.get("TORCHGFN_PYTHON", "/tmp/gfn-venv/bin/python")
SIDE = Path(__file__).with_name("_torchgfn_hypergrid.py")


def torchgfn_python() -> str:
    """The venv Python that has torchgfn; one clear line and exit 2 when it is missing."""
    if not Path(TORCHGFN_PYTHON).exists():
        print(f"torchgfn venv not found at {TORCHGFN_PYTHON}: create it with `python -m venv --system-site-packages "
              "/tmp/gfn-venv && /tmp/gfn-venv/bin/pip install torchgfn==2.4.1` (it shares this torch and pins "
              "numpy<2 inside the venv), or set TORCHGFN_PYTHON", file=sys.stderr)
        sys.exit(2)
    return TORCHGFN_PYTHON


def run_torchgfn(**kwargs) -> dict:
    """Run scripts/_torchgfn_hypergrid.py with `--key value` arguments; return its JSON line."""
    args = [torchgfn_python(), str(SIDE)] + [x for k, v in kwargs.items() for x in (f"--{k}", str(v))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        sys.exit(f"torchgfn side failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
