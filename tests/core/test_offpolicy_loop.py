"""OffPolicyLoop on a counting env with a stub learner: the update credit (fractional and several
updates per env step), per-iteration metric means, episode statistics, discrete warm-up,
the non-finite observation error and an exact continue from `state_dict`."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlx.core.logging import RunLogger
from rlx.core.loops import TrainerConfig
from rlx.core.offpolicy import OffPolicyLoop
from tests.offpolicy.conftest import count_env
from tests.core.test_loop_more import fail_instead_of_hanging  # noqa: F401 (autouse: a loop that never ends fails)


class Recorder:
    """Acts with a constant; update k returns loss/x = k."""

    def __init__(self):
        self.updates = 0

    def act(self, obs, deterministic=False):
        return TensorDict({"action": torch.full((obs.shape[0], 1), 0.5)}, batch_size=[obs.shape[0]])

    def update(self, batch):
        self.updates += 1
        return {"loss/x": float(self.updates)}

    def state_dict(self):
        return {"updates": self.updates}

    def load_state_dict(self, state):
        self.updates = state["updates"]


def _loop(total, num_envs=1, env_fn=count_env, learner=None, **kw):
    envs = gym.vector.SyncVectorEnv([env_fn] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    kw = {"batch_size": 4, "learning_starts": 0, "steps_per_iteration": 10, **kw}
    cfg = TrainerConfig(total_steps=total, eval_every=0, progress=False, tensorboard=False)
    return OffPolicyLoop(learner or Recorder(), envs, cfg, buffer_size=1000, **kw)


@pytest.mark.parametrize("utd", [0, -0.5])
def test_utd_must_be_positive(utd):
    with pytest.raises(ValueError, match=rf"utd={utd} must be > 0 \(gradient updates per env step\)"):
        _loop(10, utd=utd)


def test_fractional_update_credit_carries_over_iterations():
    loop = _loop(20, num_envs=2, utd=0.25)  # 0.5 updates per vector step, 5 vector steps per iteration
    n1, m1 = loop.iteration()
    loop.steps += n1
    n2, m2 = loop.iteration()
    assert (n1, n2) == (10, 10)
    assert (m1["train/updates"], m2["train/updates"]) == (2.0, 3.0)  # the half update left over is not lost
    assert m1["loss/x"] == pytest.approx((1 + 2) / 2) and m2["loss/x"] == pytest.approx((3 + 4 + 5) / 3)


def test_several_updates_per_env_step():
    loop = _loop(4, utd=1.5, steps_per_iteration=4)
    _, m = loop.iteration()
    assert m["train/updates"] == 6.0 and loop.learner.updates == 6


def test_episode_statistics_and_metric_means():
    loop = _loop(10)  # one env: episode 0 terminates after 4 steps (return 1+2+3+4), episode 1 is cut at 6
    n, m = loop.iteration()
    assert n == 10 and m["train/updates"] == 10.0 and m["loss/x"] == pytest.approx(5.5)
    assert m["train/episode_return"] == pytest.approx((10 + 21) / 2)
    assert m["train/episode_length"] == pytest.approx((4 + 6) / 2)
    assert loop.steps == 0  # Loop.run adds the units the iteration returns
    _, warm = _loop(10, learning_starts=10).iteration()
    assert warm["train/updates"] == 0.0 and "loss/x" not in warm


class Discrete3(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, False, False, {}


def test_discrete_warm_up_draws_every_action_uniformly():
    loop = _loop(300, num_envs=3, env_fn=Discrete3, learning_starts=300, steps_per_iteration=300)
    loop.run()
    assert loop.iterations == 1  # the whole warm-up in one iteration of 300 steps
    a = loop.buffer.data["action"][:300]
    assert a.dtype == torch.int64
    freq = torch.bincount(a.flatten(), minlength=3).float() / 300
    torch.testing.assert_close(freq, torch.full((3,), 1 / 3), atol=0.08, rtol=0)


class NaNAfter2(Discrete3):
    def reset(self, *, seed=None, options=None):
        self.t = 0
        return super().reset(seed=seed)

    def step(self, action):
        self.t += 1
        return np.full(1, np.nan if self.t == 2 else 0.0, np.float32), 0.0, False, False, {}


def test_a_non_finite_observation_stops_with_the_step_count():
    with pytest.raises(FloatingPointError, match="the env returned a non-finite observation after 2 steps"):
        _loop(10, env_fn=NaNAfter2, learning_starts=10).run()


def test_continuing_from_state_dict_matches_an_uninterrupted_run():
    whole = _loop(40, num_envs=2, learning_starts=25, utd=0.5)
    whole.run()
    first = _loop(14, num_envs=2, learning_starts=25, utd=0.5)
    first.run()  # stops mid-episode (t = 1 of the odd episodes) and inside the random warm-up
    second = _loop(40, num_envs=2, learning_starts=25, utd=0.5)
    second.load_state_dict(first.state_dict())
    second.run()
    assert len(second.buffer) == len(whole.buffer) == 40
    for key in ("obs", "action", "reward", "next_obs", "terminated", "truncated"):
        torch.testing.assert_close(second.buffer.data[key][:40], whole.buffer.data[key][:40])
    # warm-up while fewer than 25 steps were taken (vector steps at 0, 2, ..., 24), then 7 vector steps of 1 update
    assert second.learner.updates == whole.learner.updates == 7
    np.testing.assert_array_equal(second.episode_return, whole.episode_return)
    np.testing.assert_array_equal(second.episode_length, whole.episode_length)


def test_defaults_and_what_the_constructor_passes_on():
    def evaluate():
        return {}

    envs = gym.vector.SyncVectorEnv([count_env], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    logger = RunLogger(None)
    loop = OffPolicyLoop(Recorder(), envs, TrainerConfig(progress=False, tensorboard=False), buffer_size=10,
                         logger=logger, evaluate=evaluate, seed=7)
    assert (loop.batch_size, loop.learning_starts, loop.utd, loop.vector_steps) == (256, 5000, 1.0, 1000)
    assert loop.logger is logger and loop.evaluate is evaluate and loop.seed == 7
    few = _loop(10, num_envs=2, steps_per_iteration=1)  # fewer steps per iteration than envs: one vector step
    assert few.iteration()[0] == 2


class Float64Env(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (1,), np.float64)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 1), {}

    def step(self, action):
        return np.full(1, 1 / 3), 0.1, False, False, {}


def test_rows_are_float32_whatever_the_env_gives():
    loop = _loop(4, env_fn=Float64Env, learning_starts=2, steps_per_iteration=4)
    loop.run()
    for key in ("obs", "action", "reward", "next_obs"):
        assert loop.buffer.data[key].dtype == torch.float32, key


def test_resets_are_seeded_and_warm_up_draws_from_the_loop_generator():
    firsts, actions = [], []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        loop = _loop(4, env_fn=Float64Env, learning_starts=4, steps_per_iteration=4)
        loop.run()
        firsts.append(loop.buffer.data["obs"][0].tolist())
        actions.append(loop.buffer.data["action"][:4].tolist())
    assert firsts[0] == firsts[1] and actions[0] == actions[1]
    ref, _ = Float64Env().reset(seed=0)  # env 0 of the vector env is reset with the loop's seed
    assert firsts[0] == pytest.approx(ref.astype(np.float32).tolist())
    other = _loop(4, env_fn=Float64Env, learning_starts=4, steps_per_iteration=4)
    other.seed = 5
    other.run()
    assert other.buffer.data["obs"][0].tolist() != firsts[0]


class NoHandle(gym.vector.VectorWrapper):
    """A vector env whose sub-envs cannot be reached (like AsyncVectorEnv)."""

    @property
    def unwrapped(self):
        return self


def test_without_env_snapshots_a_continue_restarts_episodes_from_a_seeded_reset():
    def make():
        envs = NoHandle(gym.vector.SyncVectorEnv([Float64Env], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP))
        cfg = TrainerConfig(total_steps=8, eval_every=0, progress=False, tensorboard=False)
        return OffPolicyLoop(Recorder(), envs, cfg, buffer_size=100, batch_size=2, learning_starts=0,
                             steps_per_iteration=3)

    first = make()
    first.cfg.total_steps = 5
    first.run()  # 2 iterations, mid-episode
    assert first.episode_length.tolist() == [5]
    second = make()
    second.load_state_dict(first.state_dict())
    assert second.obs is None and second.episode_length.tolist() == [0] and second.episode_return.tolist() == [0.0]
    second.run()
    ref, _ = Float64Env().reset(seed=0 + 1000 * 2)  # the reset after a continue is seeded by the iteration count
    assert second.buffer.data["obs"][5].tolist() == pytest.approx(ref.astype(np.float32).tolist())
    assert second.episode_length.tolist() == [3]


class BatchRecorder(Recorder):
    def __init__(self):
        super().__init__()
        self.seen = []

    def update(self, batch):
        self.seen.append(batch["obs"].tolist())
        return super().update(batch)


def test_minibatches_and_discrete_warm_up_come_from_the_loop_generator():
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # the global RNG must not matter
        learner = BatchRecorder()
        loop = _loop(20, num_envs=2, learner=learner)
        loop.run()
        discrete = _loop(30, num_envs=3, env_fn=Discrete3, learning_starts=30, steps_per_iteration=30)
        discrete.run()
        runs.append((learner.seen, discrete.buffer.data["action"][:30].tolist()))
    assert runs[0] == runs[1]


def test_a_loop_saved_before_its_first_step_loads_and_runs():
    fresh = _loop(10)
    state = fresh.state_dict()
    other = _loop(10)
    other.load_state_dict(state)
    assert other.obs is None
    other.run()
    assert len(other.buffer) == 10
