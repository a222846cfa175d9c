"""OffPolicyLoop: what goes into the replay buffer, warm-up, the update schedule, exact resume."""

import json

import gymnasium as gym
import pytest
import torch
from tensordict import TensorDict

from rlx.algos.sac import SAC, SACConfig
from rlx.core.logging import RunLogger
from rlx.core.loops import TrainerConfig, evaluate_policy, seed_everything
from rlx.core.offpolicy import OffPolicyLoop
from tests.core.test_loop_more import cpu_time_limit

from .conftest import count_env


@pytest.fixture
def no_hang():
    """A loop whose budget or update credit stops advancing fails after 1 s of CPU time (the
    tests using this take 0.01 s) instead of spinning until mutmut's timeout."""
    with cpu_time_limit(1.0):
        yield


class Recorder:
    """A learner that acts with a constant and counts its updates."""

    def __init__(self, action=0.5):
        self.action, self.updates, self.batches = action, 0, []

    def act(self, obs, deterministic=False):
        return TensorDict({"action": torch.full((obs.shape[0], 1), self.action)}, batch_size=[obs.shape[0]])

    def update(self, batch):
        self.updates += 1
        self.batches.append(batch)
        return {"loss/x": float(self.updates)}

    def state_dict(self):
        return {"updates": self.updates}

    def load_state_dict(self, state):
        self.updates = state["updates"]


def _trainer(total, **kw):
    return TrainerConfig(total_steps=total, eval_every=0, progress=False, tensorboard=False, **kw)


def _loop(learner, total, num_envs=2, **kw):
    envs = gym.vector.SyncVectorEnv([count_env] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    kw = {"batch_size": 4, "learning_starts": 0, "steps_per_iteration": 10, **kw}
    return OffPolicyLoop(learner, envs, _trainer(total), buffer_size=1000, **kw)


@pytest.mark.usefixtures("no_hang")
def test_buffer_keeps_final_obs_and_terminated_apart_from_truncated():
    loop = _loop(Recorder(), 60, num_envs=2)
    loop.run()
    d = loop.buffer.data[: len(loop.buffer)]
    assert len(loop.buffer) == 60
    t, parity, nt = d["obs"][:, 0], d["obs"][:, 1], d["next_obs"][:, 0]
    assert torch.equal(nt, t + 1)  # the true next observation, also on the last step (not the reset one)
    even, odd = parity == 0, parity == 1
    assert torch.equal(d["terminated"], even & (nt == 4))  # even episodes end by termination at t=4
    assert torch.equal(d["truncated"], odd & (nt == 6))  # odd ones by the TimeLimit at t=6
    assert not (d["terminated"] & d["truncated"]).any()
    assert torch.equal(d["reward"], nt)


@pytest.mark.usefixtures("no_hang")
def test_warmup_is_random_in_bounds_and_updates_follow_utd():
    learner = Recorder(action=0.5)
    loop = _loop(learner, 100, num_envs=2, learning_starts=40, utd=0.5)
    metrics = loop.run()
    a = loop.buffer.data["action"][:100, 0]
    warm = a[:40]
    assert (warm != 0.5).all() and (warm >= -2).all() and (warm <= 2).all() and warm.std() > 0.5
    assert (a[40:] == 0.5).all()  # the learner acts after warm-up
    assert learner.updates == (100 - 40) // 2  # utd 0.5 per env step, over all envs
    assert metrics["train/updates"] == 5.0  # 10 env steps per iteration -> 5 updates
    assert all(b.shape == torch.Size([4]) for b in learner.batches)


@pytest.mark.usefixtures("no_hang")
def test_budget_is_exact_when_not_a_multiple_of_the_iteration():
    loop = _loop(Recorder(), 35, num_envs=1, steps_per_iteration=10)
    loop.run()
    assert loop.steps == 35 and len(loop.buffer) == 35


def _sac_run(run_dir, total, resume=None):
    seed_everything(0)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1")] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    cfg = SACConfig(hidden=[16, 16], batch_size=16, learning_starts=60)
    learner = SAC(cfg, envs.single_observation_space, envs.single_action_space)

    def evaluate():
        return evaluate_policy(lambda o: learner.act(o, deterministic=True)["action"], lambda: gym.make("Pendulum-v1"),
                               1, seed=123)

    logger = RunLogger(run_dir, tensorboard=False, resume_step=None if resume is None else 120)
    loop = OffPolicyLoop(learner, envs, _trainer(total, checkpoint_every=1), cfg.buffer_size, cfg.batch_size,
                         cfg.learning_starts, cfg.utd, 40, logger, evaluate, seed=0)
    if resume is not None:
        loop.resume(resume)
    summary = loop.run()
    logger.close()
    return loop, summary


def _train_lines(run_dir, after):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in lines if m["step"] > after]


def test_resume_is_exact(tmp_path):
    straight, s_summary = _sac_run(tmp_path / "a", 240)
    _sac_run(tmp_path / "b", 120)  # half the budget (it also evaluates at its end) ...
    ckpt = tmp_path / "b" / "checkpoints" / "last.pt"
    resumed, r_summary = _sac_run(tmp_path / "b", 240, resume=ckpt)  # ... then the rest in a new loop
    for p, q in zip(straight.learner.modules.parameters(), resumed.learner.modules.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(straight.buffer.data["obs"], resumed.buffer.data["obs"])
    assert _train_lines(tmp_path / "a", 120) == _train_lines(tmp_path / "b", 120)
    assert s_summary["eval/return_mean"] == r_summary["eval/return_mean"]
    state = torch.load(ckpt, weights_only=True)["loop"]["buffer"]  # numpy-free: weights_only loads it
    assert state["data"]["obs"].shape[0] == 240  # only the filled rows are saved, not the 1e6 capacity
