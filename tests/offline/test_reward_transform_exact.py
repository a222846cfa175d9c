"""The reward transforms' exact values: the random draw is a fixed float64 stream per seed (so
a run's random rewards do not change between versions or dtypes), the affine map applies when
either of scale and shift is not the identity, and the mode error lists the modes."""

import pytest
import torch

from rlx.envs.rewards import RewardConfig, transform_rewards

R = torch.tensor([1.0, -2.0, 3.5, 0.0])


def test_random_draw_is_the_seeded_float64_stream_cast_to_the_reward_dtype():
    out = transform_rewards(R, RewardConfig(mode="random", low=-1.0, high=3.0, seed=3))
    u = torch.rand(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert out.dtype == torch.float32
    assert torch.equal(out, (-1.0 + 4.0 * u).float())


@pytest.mark.parametrize("scale,shift", [(2.0, 0.0), (1.0, 1.0), (1.0, 1.5), (0.5, -1.0)])
def test_affine_map_applies_when_either_part_is_not_the_identity(scale, shift):
    out = transform_rewards(R, RewardConfig(mode="original", scale=scale, shift=shift))
    assert torch.equal(out, R * scale + shift)


def test_unknown_mode_error_lists_the_modes():
    with pytest.raises(ValueError, match="choose one of original, zero, random, negative"):
        transform_rewards(R, RewardConfig(mode="flipped"))
