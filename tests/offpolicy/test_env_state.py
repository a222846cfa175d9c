"""env_state / set_env_state: a restored env continues exactly (MuJoCo and classic control)."""

import gymnasium as gym
import numpy as np
import pytest

from rlx.core.env_state import env_state, set_env_state


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Pendulum-v1", "CartPole-v1"])
def test_restored_env_continues_exactly(env_id):
    a = gym.make(env_id)
    a.reset(seed=0)
    a.action_space.seed(0)
    actions = [a.action_space.sample() for _ in range(300)]

    def play(env, acts):
        out = []
        for x in acts:
            obs, r, term, trunc, _ = env.step(x)
            out.append((obs.copy(), r, term, trunc))
            if term or trunc:
                out.append(env.reset()[0])  # the reset draws from the env's RNG: restored too
        return out

    play(a, actions[:40])
    snap = env_state(a)
    expected = play(a, actions[40:])
    b = gym.make(env_id)
    b.reset(seed=123)  # a different episode, then the snapshot
    set_env_state(b, snap)
    got = play(b, actions[40:])
    assert len(got) == len(expected) and any(isinstance(x, np.ndarray) for x in expected)  # an episode ended
    for x, y in zip(got, expected):
        if isinstance(x, tuple):
            assert np.array_equal(x[0], y[0]) and x[1:] == y[1:]
        else:
            assert np.array_equal(x, y)
