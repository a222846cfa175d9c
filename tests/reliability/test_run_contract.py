"""The run's error contract: divergence stops with exit code 3 and never overwrites the last
good checkpoint; a failure mid-run is one line naming what failed (the env and global step),
the traceback is in <run>/error.txt and the run directory with its checkpoint is kept."""

import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from rlx.core.checkpoint import load_checkpoint
from rlx.core.errors import DivergenceError
from rlx.core.logging import RunLogger
from rlx.core.loops import Loop, TrainerConfig, finite_state
from rlx.train import main

PPO = ["algo=ppo", "env.num_envs=2", "algo.num_steps=16", "trainer.total_steps=320", "trainer.eval_every=0",
       "trainer.eval_episodes=1", "trainer.checkpoint_every=1", "trainer.progress=false", "trainer.tensorboard=false"]
BROKEN = "tests.reliability.broken_envs"


class _Learner:
    """One parameter; `update` makes it (and the loss) NaN from iteration `bad_at` on."""

    def __init__(self, bad_at: int, what: str = "loss/q"):
        self.net, self.bad_at, self.what, self.n = nn.Linear(1, 1), bad_at, what, 0

    def update(self):
        self.n += 1
        if self.n >= self.bad_at:
            with torch.no_grad():
                self.net.weight.fill_(float("nan"))
        value = float(self.net.weight.detach().sum()) if self.what.startswith("loss") else 1.0
        return {self.what: value, "train/explained_variance": float("nan")}  # NaN outside loss/grad: fine

    def state_dict(self):
        return {"net": self.net.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])


class _Loop(Loop):
    unit = "grad_steps"

    def iteration(self):
        return 1, self.learner.update()


def _loop(tmp_path, bad_at, mode="stop", what="loss/q"):
    cfg = TrainerConfig(total_steps=10, eval_every=0, checkpoint_every=1, progress=False, tensorboard=False,
                        on_nonfinite=mode)
    return _Loop(_Learner(bad_at, what), cfg, RunLogger(tmp_path, tensorboard=False))


def test_nonfinite_loss_stops_within_one_update_and_keeps_last_good_checkpoint(tmp_path):
    loop = _loop(tmp_path, bad_at=4)
    with pytest.raises(DivergenceError) as e:
        loop.run()
    msg = str(e.value)
    assert "loss/q" in msg and "grad_step 4" in msg and "\n" not in msg and "last good checkpoint" in msg
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["loop"]["steps"] == 3 and finite_state(state["learner"])


def test_nonfinite_parameter_is_never_saved(tmp_path):
    """A NaN parameter that no logged loss shows is caught when the state is saved."""
    loop = _loop(tmp_path, bad_at=3, what="train/other")
    with pytest.raises(DivergenceError, match="non-finite parameter"):
        loop.run()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["loop"]["steps"] == 2


def test_warn_mode_goes_on_warns_once_and_keeps_good_checkpoint(tmp_path, capsys):
    loop = _loop(tmp_path, bad_at=5, mode="warn")
    loop.run()
    err = capsys.readouterr().err
    assert loop.steps == 10
    assert err.count("non-finite loss/q") == 1 and err.count("not saving this checkpoint") == 1
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["loop"]["steps"] == 4


def test_grad_norm_is_guarded(tmp_path):
    loop = _loop(tmp_path, bad_at=2, what="train/grad_norm")
    loop.learner.update = lambda: {"train/grad_norm": math.inf}
    with pytest.raises(DivergenceError, match="train/grad_norm"):
        loop.run()


def _ddp_rank_main(rank: int, world: int, init_file: str, folder: str, what: str) -> None:
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    loop = _loop(Path(folder) / f"rank{rank}", bad_at=4 if rank == 1 else 10**6, what=what)  # only rank 1 goes NaN
    try:
        loop.run()
        result = {"steps": loop.steps, "error": None}
    except DivergenceError as e:
        result = {"steps": loop.steps, "error": str(e)}
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.parametrize("what,text", [("loss/q", "non-finite loss/q on rank 1"),
                                       ("train/other", "non-finite parameter on rank 1")])
def test_nonfinite_value_on_one_ddp_rank_stops_every_rank(what, text, tmp_path):
    """2 gloo ranks: rank 1's parameter (and loss) goes NaN at update 4; both ranks stop at that
    update, naming rank 1. Without the all-reduced flag rank 0 dies in the next collective when
    rank 1 stops (loss), or nobody notices: rank 0 saves and only its own state is checked."""
    import json

    import torch.multiprocessing as mp

    procs = mp.spawn(_ddp_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path), what), nprocs=2, join=False)
    deadline = time.time() + 120
    while not procs.join(timeout=1):
        assert time.time() < deadline, "a rank did not stop"
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["steps"] == 4 and text in result["error"], (rank, result)
    assert load_checkpoint(tmp_path / "rank0" / "checkpoints" / "last.pt")["loop"]["steps"] == 3


def test_finite_state_walks_nested_states():
    assert finite_state({"a": [torch.ones(2), {"b": torch.zeros(3, dtype=torch.float16)}], "c": 1.0})
    assert not finite_state({"a": [torch.ones(2), {"b": torch.tensor([0.0, math.inf])}]})
    assert finite_state({"i": torch.tensor([1, 2])}) and finite_state({})


def test_iql_absurd_lr_exits_3(tmp_path, capsys, offline_data):
    code = main(["algo=iql", "env=pendulum-tiny", "algo.critic_lr=1e8", "algo.actor_lr=1e8", "algo.hidden=[16,16]",
                 "algo.batch_size=32", "trainer.total_steps=200", "trainer.eval_every=0", "trainer.eval_episodes=1",
                 "trainer.checkpoint_every=1", "trainer.progress=false", "trainer.tensorboard=false",
                 f"trainer.run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 2 and err[1].startswith("rlx.train: diverged: non-finite loss/")
    assert finite_state(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["learner"])


@pytest.mark.parametrize("env,what", [
    ("RaisesMidRun", "raised ValueError in step() at global step 58: simulator lost contact"),
    ("NaNRewardMidRun", "non-finite (NaN/inf) reward at global step 58"),
    ("InfObsMidRun", "non-finite (NaN/inf) observation at global step 60"),
])
def test_env_failure_mid_run_names_env_and_step(tmp_path, capsys, env, what):
    run_dir = tmp_path / "run"
    code = main([*PPO, f"env.entry_point={BROKEN}:{env}", f"trainer.run_dir={run_dir}"])
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("rlx.train:")]  # (not warnings)
    assert code == 1 and len(err) == 2, err
    assert err[1].startswith(f"rlx.train: failed: env {BROKEN}:{env} ") and what in err[1], err[1]
    assert "Traceback" in (run_dir / "error.txt").read_text()
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["loop"]["steps"] == 32
