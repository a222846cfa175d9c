import pytest
import torch

from rlx.envs.rewards import RewardConfig, transform_rewards

R = torch.tensor([1.0, -2.0, 3.5, 0.0])


@pytest.mark.parametrize("mode,expected", [("original", R), ("zero", torch.zeros(4)), ("negative", -R)])
def test_deterministic_modes(mode, expected):
    r = R.clone()
    out = transform_rewards(r, RewardConfig(mode=mode))
    assert torch.equal(out, expected) and torch.equal(r, R)  # input untouched


def test_random_is_uniform_in_range_seeded_and_independent_of_reward():
    big = torch.zeros(20_000)
    out = transform_rewards(big, RewardConfig(mode="random", low=-1.0, high=3.0, seed=7))
    assert out.min() >= -1.0 and out.max() < 3.0 and abs(out.mean().item() - 1.0) < 0.05
    assert torch.equal(out, transform_rewards(big + 5, RewardConfig(mode="random", low=-1.0, high=3.0, seed=7)))
    assert not torch.equal(out, transform_rewards(big, RewardConfig(mode="random", low=-1.0, high=3.0, seed=8)))


def test_affine_after_mode_and_errors():
    assert torch.equal(transform_rewards(R, RewardConfig(mode="negative", scale=2.0, shift=1.0)), -2 * R + 1)
    with pytest.raises(ValueError, match="reward.mode"):
        transform_rewards(R, RewardConfig(mode="inverted"))
    with pytest.raises(ValueError, match="must exceed"):
        transform_rewards(R, RewardConfig(mode="random", low=1.0, high=1.0))


def test_shape_and_dtype_are_kept():
    r = torch.randn(5, 1, dtype=torch.float64)
    for mode in ("original", "zero", "random", "negative"):
        out = transform_rewards(r, RewardConfig(mode=mode))
        assert out.shape == r.shape and out.dtype == r.dtype
