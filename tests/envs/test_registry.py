import gymnasium as gym
import numpy as np
import pytest

from rlx.core.autoreset import final_observations
from rlx.core.errors import EnvError
from rlx.envs.registry import EnvConfig, make_env, make_vec_env
from tests.envs.custom_envs import LineWorld


def test_gym_id_and_entry_point_and_callable():
    assert make_env("CartPole-v1").observation_space.shape == (4,)
    env = make_env(EnvConfig(id=None, entry_point="tests.envs.custom_envs:LineWorld", kwargs={"size": 7}))
    assert env.unwrapped.size == 7
    assert make_env(lambda: LineWorld(3)).unwrapped.size == 3


def test_unknown_id_is_one_clear_line():
    with pytest.raises(EnvError, match="unknown gymnasium env id 'CartPol-v1'.*CartPole-v1"):
        make_env("CartPol-v1")


@pytest.mark.parametrize("cls,rule", [("WrongShapeEnv", "observation"), ("NaNEnv", "")])
def test_broken_custom_env_fails_checker(cls, rule):
    with pytest.raises(EnvError) as info:
        make_env(EnvConfig(id=None, entry_point=f"tests.envs.custom_envs:{cls}"))
    msg = str(info.value)
    assert "\n" not in msg and cls in msg and "env checker" in msg
    assert rule in msg.lower()


def test_vector_env_same_step_autoreset_keeps_final_obs():
    envs = make_vec_env(EnvConfig(id=None, entry_point="tests.envs.custom_envs:LineWorld", kwargs={"size": 2}), 2)
    envs.reset(seed=0)
    obs, r, term, trunc, info = envs.step(np.array([1, 0]))
    assert term.tolist() == [True, False]
    real = final_observations(obs, info)
    assert real[0, 0] == 1.0 and obs[0, 0] == 0.0  # the reset obs is returned, the real one kept


def test_truncation_is_reported_separately():
    envs = make_vec_env(EnvConfig(id=None, entry_point="tests.envs.custom_envs:LineWorld", max_episode_steps=3), 1)
    envs.reset(seed=0)
    flags = [envs.step(np.array([0]))[2:4] for _ in range(3)]
    assert [bool(t[0]) for t, _ in flags] == [False, False, False]
    assert [bool(tr[0]) for _, tr in flags] == [False, False, True]
    assert isinstance(envs, gym.vector.SyncVectorEnv)
