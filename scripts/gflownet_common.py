"""Shared helpers of the GFlowNet scripts: run the torchgfn side in its own virtual environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TORCHGFN_PYTHON = os.environ.get("TORCHGFN_PYTHON", "/tmp/gfn-venv/bin/python")
SIDE = Path(__file__).with_name("_torchgfn_hypergrid.py")


def run_torchgfn(**kwargs) -> dict:
    """Run scripts/_torchgfn_hypergrid.py with `--key value` arguments; return its JSON line."""
    if not Path(TORCHGFN_PYTHON).exists():
        sys.exit(f"torchgfn venv not found at {TORCHGFN_PYTHON}: create it with `python -m venv /tmp/gfn-venv && "
                 "/tmp/gfn-venv/bin/pip install torch==2.13.0 torchgfn==2.4.1`, or set TORCHGFN_PYTHON")
    args = [TORCHGFN_PYTHON, str(SIDE)] + [x for k, v in kwargs.items() for x in (f"--{k}", str(v))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        sys.exit(f"torchgfn side failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
