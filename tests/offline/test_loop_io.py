"""Checkpoint file permissions, the offline checkpoint cadence, and resuming a finished run."""

import json
import os
import stat

import torch
from tensordict import TensorDict

from rlx.core.buffers import ReplayBuffer
from rlx.core.checkpoint import atomic_write
from rlx.core.logging import RunLogger
from rlx.core.loops import OfflineLoop, OnPolicyLoop, TrainerConfig
from tests.core.test_loop_more import fail_instead_of_hanging  # noqa: F401 (autouse: a loop that never ends fails)


class _Learner:
    """A one-parameter learner: enough for the loop's data flow, state and checkpoints."""

    def __init__(self):
        self.w = torch.zeros(1)
        self.updates = 0

    def update(self, batch):
        self.updates += 1
        self.w += batch["reward"].mean()
        return {"loss": float(self.w)}

    def state_dict(self):
        return {"w": self.w.clone(), "updates": self.updates}

    def load_state_dict(self, state):
        self.w, self.updates = state["w"].clone(), state["updates"]


def _buffer(n=64):
    buf = ReplayBuffer(n)
    buf.add(TensorDict({"obs": torch.randn(n, 3), "action": torch.randn(n, 1), "reward": torch.ones(n),
                        "next_obs": torch.randn(n, 3), "terminated": torch.zeros(n, dtype=torch.bool),
                        "truncated": torch.zeros(n, dtype=torch.bool)}, batch_size=[n]))
    return buf


def test_atomic_write_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.txt", lambda f: f.write(b"x"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        path = atomic_write(tmp_path / "b.txt", lambda f: f.write(b"x"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_bytes() == b"x"
    assert not list(tmp_path.glob(".*.tmp"))


def test_offline_checkpoint_cadence(monkeypatch):
    assert OfflineLoop.default_checkpoint_every == 5_000  # gradient steps, not the on-policy 50 iterations
    assert OnPolicyLoop.default_checkpoint_every == 50
    saved = []
    for every, steps, expected in ((None, 120, [120]), (40, 120, [40, 80, 120, 120]), (0, 50, [50])):
        saved.clear()
        loop = OfflineLoop(_Learner(), _buffer(), TrainerConfig(total_steps=steps, eval_every=0, progress=False,
                                                                 checkpoint_every=every), batch_size=8)
        monkeypatch.setattr(loop, "save", lambda loop=loop: saved.append(loop.steps))
        loop.run()
        assert saved == expected, (every, saved)  # periodic saves, then the final one


def test_resume_of_finished_run_is_a_noop(tmp_path, capsys):
    evals = []

    def evaluate():
        evals.append(1)
        return {"eval/return_mean": float(len(evals))}

    def make(total):
        cfg = TrainerConfig(total_steps=total, eval_every=0, progress=False, tensorboard=False)
        logger = RunLogger(tmp_path, tensorboard=False)
        return OfflineLoop(_Learner(), _buffer(), cfg, batch_size=8, logger=logger, evaluate=evaluate), logger

    loop, logger = make(30)
    first = loop.run()
    logger.close()
    assert len(evals) == 1 and first["eval/return_mean"] == 1.0
    lines = (tmp_path / "metrics.jsonl").read_text()
    ckpt_mtime = (tmp_path / "checkpoints" / "last.pt").stat().st_mtime_ns

    loop, logger = make(30)  # same budget: nothing to do
    loop.resume(tmp_path / "checkpoints" / "last.pt")
    again = loop.run()
    logger.close()
    assert len(evals) == 1, "the final evaluation ran again"
    assert (tmp_path / "metrics.jsonl").read_text() == lines, "metrics were logged twice"
    assert (tmp_path / "checkpoints" / "last.pt").stat().st_mtime_ns == ckpt_mtime
    assert again["eval/return_mean"] == first["eval/return_mean"]
    assert "already finished" in capsys.readouterr().err

    loop, logger = make(50)  # a larger budget continues from step 30
    loop.resume(tmp_path / "checkpoints" / "last.pt")
    more = loop.run()
    logger.close()
    assert len(evals) == 2 and loop.learner.updates == 50 and more["eval/return_mean"] == 2.0
    final = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum("eval/return_mean" in m for m in final) == 2
