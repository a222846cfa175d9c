#!/usr/bin/env bash
# The prepared GPU check of issue 21 (see scripts/gpu_check.py and docs/kernels.md, "GPU check").
#   bash scripts/gpu_check.sh [--only kernels,bench,train,tests] [--caps ...] [--out PATH]
# Writes $OUT/gpu_check.jsonl (or --out), gpu_check.log and pytest.log beside it. Wheels in .whl/
# (scripts/gpu_wheels.sh) are installed into /tmp/site first, for an image that lacks rlx's
# dependencies. Exit status: 0 all checks passed, 1 some failed, 2 bad use, 124 overran 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${OUT:-}" ] && [[ " $* " != *" --out "* ]]; then
  echo "gpu_check.sh: set \$OUT or pass --out PATH" >&2
  exit 2
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check.sh: installing .whl/*.whl failed" >&2; exit 2; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv 2>/dev/null || echo "no nvidia-smi"
timeout -k 10 470 python3 scripts/gpu_check.py "$@"
