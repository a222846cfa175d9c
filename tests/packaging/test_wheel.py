"""A built wheel carries everything a run needs: the presets (rlx/configs) and the data (rlx/data).

Builds the wheel, installs it (no dependencies: they are this environment's) into a folder of its own and,
from an unrelated directory, prints the resolved config of every registered algorithm and preset, and scores
a molecule with the packaged sEH proxy, all from the installed copy rather than this checkout."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dist, target = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("site")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = dist.glob("rlx-*.whl")
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr[-2000:]
    return target


def _run(code: str, site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(cwd), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def test_wheel_ships_presets_and_data(installed, tmp_path):
    files = {str(p.relative_to(installed)) for p in installed.rglob("*") if p.is_file()}
    assert "rlx/configs/config.yaml" in files and "rlx/configs/algo/td3bc.yaml" in files
    assert "rlx/configs/env/molecules_fragments_seh.yaml" in files
    assert {"rlx/data/gflownet_seh/seh_proxy_params.npz", "rlx/data/gflownet_seh/blocks_PDB_105.json",
            "rlx/data/gflownet_seh/LICENSE"} <= files


def test_every_algorithm_and_preset_composes_from_the_wheel(installed, tmp_path):
    code = """
import contextlib, io, sys
import rlx
assert rlx.__file__.startswith(sys.argv[-1] if False else %r), rlx.__file__
from rlx.train import group_options, main
bad = []
for choice in group_options("algo"):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([f"algo={choice}", "--cfg"])
    if code != 0 or "trainer:" not in out.getvalue():
        bad.append(choice)
print("choices", len(group_options("algo")), "bad", bad)
""" % str(installed)
    r = _run(code, installed, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    n = int(r.stdout.split()[1])
    assert n >= 20 and r.stdout.strip().endswith("bad []"), r.stdout


def test_seh_task_runs_from_the_wheel(installed, tmp_path):
    code = """
import rlx
from rlx.train import compose_config
from rlx.envs.fragments import FragmentMoleculeEnv
cfg = compose_config(["algo=gflownet", "env=molecules_fragments_seh"])
env = FragmentMoleculeEnv(**cfg.env.kwargs)
print(len(env.lib), env.rewarder.score("c1ccccc1") > 0, rlx.__file__)
"""
    r = _run(code, installed, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    n, ok, where = r.stdout.split()
    assert n == "105" and ok == "True" and where.startswith(str(installed))
