"""The loops' data-parallel bookkeeping with a faked two-rank `rlx.core.distributed` (per-rank RNG
in the checkpoint, the world-size check, the rank named in divergence messages, the learner
synced at the start), the non-finite-parameter check of `save`, constructor defaults and
pass-through, float64 envs, and `finite_state` on large half-precision values. Every test here
(and in test_loop_rules, test_offpolicy_loop) fails after 1 s of CPU time instead of hanging when a
broken counter stops the budget or the evaluation schedule from advancing."""

from __future__ import annotations

import contextlib
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlx.core import loops
from rlx.core.buffers import ReplayBuffer
from rlx.core.errors import DivergenceError, EnvFailure
from rlx.core.logging import RunLogger
from rlx.core.loops import OfflineLoop, OnPolicyLoop, SamplerLoop, TrainerConfig, finite_state, rng_state


@contextlib.contextmanager
def cpu_time_limit(seconds: float):
    """Raise TimeoutError in this process after `seconds` of its CPU time (SIGPROF)."""

    def stop(signum, frame):
        raise TimeoutError(f"the loop did not finish within {seconds:g} s of CPU time")

    old = signal.signal(signal.SIGPROF, stop)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


@pytest.fixture(autouse=True)
def fail_instead_of_hanging():
    """SIGPROF after 1 s of this process's CPU time (each of these tests uses about 0.01 s; CPU
    time, so a loaded machine does not trip it): a loop that never ends fails its test, where a
    mutant that makes `next_eval` or `steps` stand still would otherwise spin until mutmut's
    timeout. mutmut's is at least 10 CPU seconds but also half that in wall time (5 s), which a
    niced worker on a loaded machine reaches before 5 s of CPU: 1 s leaves it a 20% CPU share."""
    with cpu_time_limit(1.0):
        yield


def cfg(**kw):
    return TrainerConfig(**{"progress": False, "tensorboard": False, "eval_every": 0, "total_steps": 3, **kw})


class Param:
    def __init__(self, value=0.0):
        self.w = torch.full((1,), value)
        self.batches = []

    def update(self, batch=None):
        self.batches.append(batch)
        return {"loss/x": 0.0}

    def state_dict(self):
        return {"w": self.w.clone()}

    def load_state_dict(self, state):
        self.w = state["w"].clone()


class Unit(loops.Loop):
    unit = "grad_steps"

    def iteration(self):
        return 1, self.learner.update()


@pytest.fixture
def two_ranks(monkeypatch):
    """This process is rank 1 of 2; every rank holds the same objects; the non-None item is rank 1's."""
    d = loops.distributed
    synced = []
    monkeypatch.setattr(d, "is_distributed", lambda: True)
    monkeypatch.setattr(d, "world_size", lambda: 2)
    monkeypatch.setattr(d, "rank", lambda: 1)
    monkeypatch.setattr(d, "is_main", lambda: True)
    monkeypatch.setattr(d, "all_gather_object", lambda x: [x, x])
    monkeypatch.setattr(d, "first_on_any_rank", lambda item: None if item is None else (1, item))
    monkeypatch.setattr(d, "sync_learner", lambda learner: synced.append(learner))
    return synced


def test_eval_schedule_starts_at_eval_every():
    assert [Unit(Param(), cfg(eval_every=e)).next_eval for e in (0, 1, 5)] == [None, 1, 5]


def test_every_rank_keeps_its_own_rng_in_the_checkpoint(two_ranks):
    loop = Unit(Param(), cfg(), seed=3)
    state = loop.state_dict()
    assert list(state["rng"]) == ["per_rank"] and len(state["rng"]["per_rank"]) == 2
    assert torch.equal(state["rng"]["per_rank"][1]["loop"], loop.generator.get_state())
    # resuming on rank 1 takes rank 1's entry
    mine = {**rng_state(), "loop": torch.Generator().manual_seed(42).get_state()}
    other = {**rng_state(), "loop": torch.Generator().manual_seed(7).get_state()}
    state["rng"] = {"per_rank": [other, mine]}
    fresh = Unit(Param(), cfg(), seed=0)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.generator.get_state(), mine["loop"])
    state["rng"] = {"per_rank": [other, mine, other]}
    with pytest.raises(RuntimeError) as e:
        fresh.load_state_dict(state)
    assert str(e.value) == ("checkpoint was written by 3 ranks, resuming with 2; resume with the same "
                            "--nproc_per_node")


def test_divergence_messages_name_the_rank(two_ranks, tmp_path, capsys):
    loop = Unit(Param(float("nan")), cfg())
    with pytest.raises(DivergenceError) as e:  # no run dir: under DDP every rank still checks its own state
        loop.save()
    assert str(e.value).startswith("non-finite parameter on rank 1 (in the learner state) at grad_step 0 (iteration 0); "
                                   "lower the learning rate")
    with pytest.raises(DivergenceError, match=r"^non-finite loss/q on rank 1 \(nan\) at grad_step 0"):
        loop._check_finite({"loss/q": float("nan")})
    warn = Unit(Param(float("nan")), cfg(on_nonfinite="warn"))
    assert warn.save() is None
    assert capsys.readouterr().err == ("rlx: warning: non-finite parameter on rank 1 (in the learner state) at "
                                       "grad_step 0 (iteration 0); not saving this checkpoint\n")
    ok = Unit(Param(1.0), cfg(), logger=RunLogger(tmp_path, tensorboard=False))
    ok.run()
    assert two_ranks == [ok.learner] and (tmp_path / "checkpoints" / "last.pt").is_file()


def test_a_non_finite_parameter_is_checked_only_where_a_checkpoint_would_be_written(tmp_path):
    assert Unit(Param(float("nan")), cfg()).save() is None  # one process, no run dir: nothing to write, no check
    loop = Unit(Param(float("inf")), cfg(), logger=RunLogger(tmp_path, tensorboard=False))
    with pytest.raises(DivergenceError) as e:
        loop.save()
    assert str(e.value).startswith("non-finite parameter (in the learner state) at grad_step 0 (iteration 0); lower")
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def test_finished_summary_line(tmp_path, capsys):
    loop = Unit(Param(), cfg())
    loop.steps, loop.iterations = 3, 3
    loop.run()
    assert capsys.readouterr().err == ("rlx: run already finished (3 grad_steps >= trainer.total_steps=3); nothing to "
                                       "do (raise trainer.total_steps to train further)\n")


def test_finite_state_takes_the_max_not_the_norm():
    big = torch.tensor([6e4, 6e4], dtype=torch.float16)  # finite; its 2-norm overflows float16
    assert finite_state({"a": big}) and not finite_state({"a": big, "b": torch.tensor([float("nan")])})


def test_constructor_defaults_and_what_reaches_the_base(tmp_path):
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

    class Learner(Param):
        gamma, gae_lambda = 0.9, 0.9

    evaluate = lambda: {}  # noqa: E731
    logger = RunLogger(None)
    for loop in (Unit(Param(), cfg()), OnPolicyLoop(Learner(), envs, cfg(), 4), OfflineLoop(Param(), ReplayBuffer(4), cfg()),
                 SamplerLoop(Param(), lambda: None, cfg())):
        assert loop.seed == 0 and loop.generator.initial_seed() == 0, type(loop).__name__
    assert OfflineLoop(Param(), ReplayBuffer(4), cfg()).batch_size == 256
    for loop in (OnPolicyLoop(Learner(), envs, cfg(), 4, logger=logger, evaluate=evaluate, seed=3),
                 SamplerLoop(Param(), lambda: None, cfg(), logger=logger, evaluate=evaluate, seed=3)):
        assert loop.logger is logger and loop.evaluate is evaluate and loop.seed == 3, type(loop).__name__
        assert loop.generator.initial_seed() == 3


def test_sampler_loop_updates_on_the_sampled_batch():
    batch = {"x": torch.ones(2)}
    loop = SamplerLoop(Param(), lambda: (batch, 2), cfg(total_steps=2))
    loop.run()
    assert loop.learner.batches == [batch]


class Wide(gym.Env):
    """float64 observations [t, value]; the observation at step `big_at` is 1e39 (finite in float64 only)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, big_at=None):
        self.big_at, self.t = big_at, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0, 0.1]), {}

    def step(self, action):
        self.t += 1
        value = 1e39 if self.t == self.big_at else 0.1
        return np.array([float(self.t), value]), 0.25, False, False, {}


class Seen:
    gamma, gae_lambda = 0.9, 0.9

    def __init__(self):
        self.dtypes = []

    def act(self, obs, deterministic=False):
        from tensordict import TensorDict

        self.dtypes.append(obs.dtype)
        n = obs.shape[0]
        return TensorDict({"action": torch.zeros(n, dtype=torch.int64), "logp": torch.zeros(n), "value": torch.zeros(n)},
                          batch_size=[n])

    def value(self, obs):
        assert obs.dtype == torch.float32
        return torch.zeros(obs.shape[0])


def test_a_float64_env_is_stored_and_seen_in_float32():
    envs = gym.vector.SyncVectorEnv([Wide], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    loop = OnPolicyLoop(Seen(), envs, cfg(), 3)
    loop.collect()
    d = loop.buffer.data
    assert loop.learner.dtypes == [torch.float32] * 3
    for key in ("obs", "next_obs", "reward", "next_value"):
        assert d[key].dtype == torch.float32, key
    assert d["next_obs"][:, 0, 0].tolist() == [1, 2, 3] and d["reward"].eq(0.25).all()
    # 1e39 overflows float32: the observation the learner would see is inf, and the rollout says so
    envs = gym.vector.SyncVectorEnv([lambda: Wide(big_at=2)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    with pytest.raises(EnvFailure, match=r"^returned a non-finite \(NaN/inf\) observation at global step 2$"):
        OnPolicyLoop(Seen(), envs, cfg(), 3).collect()


def test_checkpoint_carries_how_to_rebuild_the_learner():
    from rlx.core.checkpoint import Saveable, learner_init

    class Rebuildable(Saveable, Param):
        def __init__(self, value: float = 0.0):
            Param.__init__(self, value)

    learner = Rebuildable(2.5)
    state = Unit(learner, cfg()).state_dict()
    assert state["init"] is not None and state["init"] == learner_init(learner)  # what rlx.load rebuilds from
    assert Unit(Param(), cfg()).state_dict()["init"] is None  # a learner that is not Saveable
