"""A user's own batched environment (docs/gflownet.md, "Your own environment"): the doc's code,
extracted from the fenced block and run as it is, trains with every objective from the CLI; and a
broken env is refused in one line naming what is wrong."""

import importlib
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from rlx.core.errors import EnvError
from rlx.envs.batched import check_batched_env
from rlx.train import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "gflownet.md"


def doc_code() -> str:
    text = DOC.read_text()
    section = text[text.index("## Your own environment"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def bitseq(tmp_path_factory):
    """The doc's code saved as bitseq.py on sys.path, as a user would (the CLI imports it by name)."""
    folder = tmp_path_factory.mktemp("user_env")
    (folder / "bitseq.py").write_text(doc_code())
    sys.path.insert(0, str(folder))
    sys.modules.pop("bitseq", None)
    yield importlib.import_module("bitseq")
    sys.path.remove(str(folder))
    sys.modules.pop("bitseq", None)


def test_the_doc_env_is_short():
    assert len(doc_code().splitlines()) <= 80


class Uniform:
    """The uniform sampler (every allowed action alike), the reference the trained ones must beat."""

    def __init__(self, env):
        self.env, self.cfg = env, type("Cfg", (), {"beta": 1.0})

    def policy_log_probs(self, states):
        m = self.env.forward_mask(states).reshape(-1, 3).float()
        return (m / m.sum(1, keepdim=True)).log()


@pytest.mark.parametrize("objective, samples", [("tb", 3200), ("db", 4800), ("subtb", 4800), ("fm", 4800)])
def test_the_doc_env_trains_from_the_cli(bitseq, tmp_path, objective, samples):
    env = bitseq.BitSequence()
    uniform = env.evaluate_sampler(Uniform(env), 0)  # l1 0.34, 1/32 of the mass on the two modes
    assert main(["algo=gflownet", "env.entry_point=bitseq:BitSequence", f"algo.objective={objective}",
                 f"trainer.total_steps={samples}", "trainer.eval_every=1600", f"trainer.root={tmp_path}",
                 "trainer.progress=false"]) == 0
    run = next(tmp_path.glob("gflownet/BitSequence/*"))  # filed under the entry point's class
    evals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval/l1" in r]
    final = evals[-1]
    assert final["eval/l1"] < 0.3 * uniform["eval/l1"]  # the sampler's distribution approaches R/Z
    assert final["eval/mode_mass"] > 3 * uniform["eval/mode_mass"]


def test_the_doc_env_takes_its_kwargs_from_the_cli(bitseq):
    from rlx.envs.registry import construct
    from rlx.train import compose_config

    cfg = compose_config(["algo=gflownet", "env.entry_point=bitseq:BitSequence", 'env.kwargs.modes=["1111","0000"]'])
    assert cfg.env.kwargs == {"modes": ["1111", "0000"]}  # only what was given: no HyperGrid kwargs
    env = construct(cfg.env.entry_point, cfg.env.kwargs)
    assert env.n == 4 and env.max_steps == 5


def test_the_doc_env_in_python(bitseq):
    from rlx.algos.gflownet import GFlowNet, GFlowNetConfig, MLPPolicy

    torch.manual_seed(0)
    env = bitseq.BitSequence(modes=("1111", "0000"))
    learner = GFlowNet(GFlowNetConfig(objective="tb"), env, MLPPolicy(env, 64, 2))
    before = env.evaluate_sampler(learner, 0)["eval/l1"]
    for _ in range(150):
        store, _, log_r = learner.sample(16)
        learner.update(store.to_batch(log_reward=log_r))
    after = env.evaluate_sampler(learner, 0)["eval/l1"]
    assert after < 0.3 * before


def _broken(bitseq, **overrides):
    """A BitSequence with some members replaced (a user's mistakes)."""
    return type("Broken", (bitseq.BitSequence,), overrides)()


@pytest.mark.parametrize("overrides, message", [
    ({"action_ptr": lambda self, s: torch.arange(s.shape[0]) * 3}, "action_ptr of 2 states returned torch.int64 [2], not int64 [3]"),
    ({"action_ptr": lambda self, s: (torch.arange(s.shape[0] + 1) * 3).int()}, "not int64 [3] CSR offsets"),
    ({"action_width": 4}, "action_width=4 but action_ptr gives sets of sizes [3, 3]"),
    ({"forward_mask": lambda self, s: torch.ones(2 * s.shape[0], dtype=torch.bool)}, "forward_mask returned torch.bool [4], not bool [6]"),
    ({"forward_mask": lambda self, s: torch.zeros(3 * s.shape[0], dtype=torch.bool)}, "allows no action in an initial state"),
    ({"reset": lambda self, b: torch.zeros(b, 6)}, "reset(2) returned Tensor torch.float32 [2, 6], not a TensorDict"),
    ({"is_stop": lambda self, a: (a == 0)[:1]}, "is_stop of 2 states returned torch.bool [1], not a Tensor [2]"),
    ({"encode": lambda self, s: torch.zeros(s.shape[0], 5)}, "encode of 2 states returned torch.float32 [2, 5], not a float Tensor [2, obs_dim=18]"),
    ({"step": lambda self, s, a: s["bits"]}, "step of 2 states returned Tensor"),
])
def test_protocol_violations_are_one_line(bitseq, overrides, message):
    with pytest.raises(EnvError) as err:
        check_batched_env(_broken(bitseq, **overrides), "env.entry_point=bitseq:Broken")
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith("env.entry_point=bitseq:Broken: Broken breaks")


def test_a_missing_member_is_refused_before_any_work(bitseq, tmp_path, capsys):
    members = {k: v for k, v in vars(bitseq.BitSequence).items() if k not in ("parents", "__dict__", "__weakref__")}
    bitseq.NoParents = type("NoParents", (), members)  # has_parents = True, but no parents()
    assert main(["algo=gflownet", "env.entry_point=bitseq:NoParents", f"trainer.root={tmp_path}",
                 "trainer.progress=false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("NoParents is not a BatchedEnv (missing parents); see rlx/envs/batched.py for the "
                            "members and their shapes")
    assert not any(tmp_path.iterdir())  # nothing on disk


def test_a_probe_failure_leaves_nothing_on_disk(bitseq, tmp_path, capsys):
    bitseq.WrongMask = type("WrongMask", (bitseq.BitSequence,),
                            {"forward_mask": lambda self, s: torch.ones(s.shape[0], dtype=torch.bool)})
    assert main(["algo=gflownet", "env.entry_point=bitseq:WrongMask", f"trainer.root={tmp_path}",
                 "trainer.progress=false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "forward_mask returned torch.bool [2], not bool [6]" in err[-1]
    assert not list(tmp_path.rglob("*.jsonl"))


@pytest.mark.parametrize("algo", ["gflownet", "sampler_random"])
def test_a_non_cpu_device_is_refused_not_ignored(algo, tmp_path, capsys):
    assert main([f"algo={algo}", "trainer.device=cuda:0", f"trainer.root={tmp_path}", "trainer.progress=false"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"trainer.device=cuda:0: algo={algo} runs on the CPU" in line and "use trainer.device=cpu" in line
    assert not any(tmp_path.iterdir())
