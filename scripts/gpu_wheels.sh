#!/usr/bin/env bash
# Fetch (here, where PyPI is reachable) the wheels rlx needs that the GPU machine's image lacks
# (its python3 is 3.12 with torch, triton and torch-geometric but no tensordict, gymnasium or
# hydra), into .whl/ at the repo root; scripts/gpu_check.sh installs them there into /tmp/site.
#   bash scripts/gpu_wheels.sh          # then carry ".whl" in the device call
# .whl/ must be git-ignored: echo /.whl/ >> "$(git rev-parse --git-path info/exclude)"
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64"
platforms="$platforms --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms -d .whl \
  tensordict==0.14.3 pyvers==0.2.2 orjson==3.11.4 importlib_metadata==8.7.0 \
  gymnasium==1.4.0 farama-notifications==0.0.6 hydra-core==1.3.8 omegaconf==2.3.1 mujoco==3.3.7
# antlr4-python3-runtime 4.9.3 (hydra's parser runtime) is published as a source archive only: build its pure wheel
python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl antlr4-python3-runtime==4.9.3
ls -la .whl
