"""`--help` and config errors are answered without torch or any algorithm module (issue 20): the
algorithms' names, descriptions and config fields are read from their source by
`rlx.algos.registry.catalog()`, which must agree with what importing them registers."""

import ast
import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlx.algos import registry

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
from rlx.train import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensordict')
               or (m.startswith('rlx.algos.') and m != 'rlx.algos.registry'))
print(json.dumps({"code": code, "heavy": heavy[:5]}))
"""


@pytest.mark.parametrize("args, code", [(["--help"], 0), (["algo.lrr=0.1"], 2), (["algo=ppx"], 2),
                                        (["algo=cppo", "algo.retentoin=kl"], 2), (["trainer.total_step=5"], 2)])
def test_help_and_config_errors_import_no_torch(args, code):
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"code": code, "heavy": []}
    if code == 2:
        assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("rlx.train: error: unknown")


def test_catalog_matches_the_imported_registry():
    static, dynamic = registry._scan_builtins()
    assert dynamic == ()  # every built-in registration is readable from source
    real = registry.algorithms()
    assert set(static) == set(real)
    for name, spec in real.items():
        info = static[name]
        assert (info.module, info.description, info.default_env) == (spec.train.__module__, spec.description,
                                                                     spec.default_env), name
        assert list(info.fields) == [f.name for f in dataclasses.fields(spec.config)], name


def test_a_run_imports_only_its_algorithm():
    probe = ("import sys; from rlx.train import compose_config; compose_config(['algo=ppo']); "
             "print(sorted(m for m in sys.modules if m.startswith('rlx.algos.')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert ast.literal_eval(out.stdout) == ["rlx.algos.ppo", "rlx.algos.registry"]


def test_source_reader_reads_literal_registrations_and_refuses_the_rest(tmp_path, monkeypatch):
    pkg = tmp_path / "toyalgos"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "base.py").write_text("from dataclasses import dataclass\n\n@dataclass\nclass Base:\n    lr: float = 1.0\n")
    (pkg / "literal.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from typing import ClassVar
        from rlx.algos.registry import register
        from toyalgos.base import Base

        @dataclass
        class Cfg(Base):
            hidden: list[int] = None
            kind: ClassVar[str] = "toy"

        @register("toy", Cfg, "a toy", default_env="cartpole")
        def train(ctx):
            return {}
    """))
    (pkg / "computed.py").write_text("from rlx.algos.registry import register\nNAME = 'x'\n"
                                     "register(NAME, dict, 'computed')(print)\n")
    (pkg / "hidden.py").write_text("from rlx.algos.registry import register\nreg = register\n"
                                   "reg('x', dict, 'not a register(...) call')(print)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError):  # toyalgos.base is not an rlx module: its fields are not followed
        registry._read_registrations("toyalgos.literal")
    for module in ("toyalgos.computed", "toyalgos.hidden"):  # never a silently missing algorithm
        with pytest.raises(ValueError):
            registry._read_registrations(module)
    (pkg / "local.py").write_text((pkg / "literal.py").read_text().replace("from toyalgos.base import Base\n", "")
                                  .replace("class Cfg(Base)", "class Cfg"))
    (info,) = registry._read_registrations("toyalgos.local")
    assert (info.name, info.description, info.default_env, info.fields) == ("toy", "a toy", "cartpole",
                                                                            {"hidden": "list[int]"})


def test_the_run_log_times_its_phases(tmp_path, capsys):
    import re

    from rlx.envs.text import StreamConfig, load_stream
    from rlx.train import main
    from tests.test_train_cli import QUICK

    assert main([*QUICK, f"trainer.run_dir={tmp_path / 'run'}"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"rlx\.train: writing .*run \(configured in \d+\.\d s, \d+\.\d s CPU\)", err[0]), err
    assert re.fullmatch(r"rlx\.train: done \(finished in \d+\.\d s, \d+\.\d s CPU\)", err[-1]), err
    load_stream(StreamConfig(num_tasks=1, sft_steps=2, rm_steps=2, cache_dir=str(tmp_path)), verbose=True)
    out = capsys.readouterr().out
    assert re.search(r"^built the reward models in \d+\.\d s \(\d+\.\d s CPU\)$", out, re.M), out
    assert re.search(r"^pretrained the SFT policy in \d+\.\d s \(\d+\.\d s CPU\)$", out, re.M), out


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_cli_lets_openmp_threads_sleep(given, expected):
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | ({"OMP_WAIT_POLICY": given} if given else {})
    probe = "import os, sys, rlx.train; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert out.stdout.split() == [expected, "False"]  # set before torch (and its OpenMP runtime) loads
