"""HyperGrid's rules on hand-computed cases: masks, steps, parents, the reward formula's
thresholds, the enumeration order and the exact terminal distribution of a given policy."""

import math

import pytest
import torch
from tensordict import TensorDict

from rlx.envs.hypergrid import HyperGrid, l1_distance, log_z_error


def states(*rows) -> TensorDict:
    return TensorDict({"pos": torch.tensor(rows, dtype=torch.int64)}, batch_size=[len(rows)])


@pytest.mark.parametrize("args,match", [((0, 3), "ndim >= 1"), ((2, 1), "height >= 2"),
                                        ((2, 3, 0.0), "R0 > 0"), ((2, 3, 0.1, -0.1), "R1, R2 >= 0"),
                                        ((2, 3, 0.1, 0.5, -1.0), "R1, R2 >= 0"), ((25, 2), "too large")])
def test_bad_sizes_and_rewards_are_one_clear_error(args, match):
    with pytest.raises(ValueError, match=match):
        HyperGrid(*args)


def test_the_limits_themselves_are_allowed_and_sizes_follow_d_and_h():
    HyperGrid(1, 2, 1e-3, 0.0, 0.0)  # the smallest grid, zero bonuses
    assert HyperGrid(24, 2).height ** 24 == 2**24  # exactly at the enumeration limit
    default = HyperGrid()  # the paper's 4-D grid of side 8 with R0, R1, R2 = 0.1, 0.5, 2
    assert (default.ndim, default.height, default.R0, default.R1, default.R2) == (4, 8, 0.1, 0.5, 2.0)
    env = HyperGrid(3, 5)
    assert env.reset(2).batch_size == torch.Size([2]) and env.all_states().batch_size == torch.Size([125])
    assert (env.num_actions, env.action_width, env.max_steps, env.obs_dim) == (4, 4, 3 * 4 + 1, 15)
    assert env.reset(2)["pos"].tolist() == [[0, 0, 0], [0, 0, 0]] and env.reset(2)["pos"].dtype == torch.int64


def test_encode_is_one_hot_per_coordinate():
    env = HyperGrid(2, 3)
    feats = env.encode(states([2, 0], [1, 1]))
    assert feats.dtype == torch.float32
    assert feats.tolist() == [[0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 1, 0]]
    assert env.encode(states([0, 1])).shape == (1, 6)  # H classes per coordinate even when H - 1 is unused


def test_action_layout_masks_and_steps():
    env = HyperGrid(2, 3)
    s = states([0, 2], [1, 1], [2, 2])
    assert env.action_ptr(s).tolist() == [0, 3, 6, 9]
    assert env.forward_mask(s).dtype == torch.bool
    assert env.forward_mask(s).tolist() == [True, True, False, True, True, True, True, False, False]
    nxt = env.step(s, torch.tensor([1, 0, 0]))  # increment x_0 / stop / stop
    assert nxt["pos"].tolist() == [[1, 2], [1, 1], [2, 2]] and nxt.batch_size == s.batch_size
    assert env.step(states([1, 1]), torch.tensor([2]))["pos"].tolist() == [[1, 2]]
    assert env.is_stop(torch.tensor([0, 1, 2])).tolist() == [True, False, False]
    with pytest.raises(ValueError, match=r"^HyperGrid.step got an increment that leaves the grid; sample with "
                                         r"forward_mask$"):
        env.step(states([0, 2]), torch.tensor([2]))


def test_backward_moves_and_parents():
    env = HyperGrid(2, 3)
    s = states([0, 2], [1, 1], [0, 0])
    assert env.num_parents(s).tolist() == [1, 2, 0]
    assert env.backward_mask(s).tolist() == [[False, True], [True, True], [False, False]]
    assert env.backward_action(torch.tensor([1, 2])).tolist() == [0, 1]
    parent, action, valid = env.parents(s)
    # candidate d of state b is row b * D + d: the state with x_d decremented (clamped at 0 where invalid)
    assert parent["pos"].tolist() == [[0, 2], [0, 1], [0, 1], [1, 0], [0, 0], [0, 0]]
    assert parent["pos"].dtype == torch.int64
    assert action.tolist() == [1, 2, 1, 2, 1, 2]
    assert valid.tolist() == [False, True, True, True, False, False]
    assert parent.batch_size == torch.Size([6])
    for p, a, ok, child in zip(parent["pos"], action, valid, s["pos"].repeat_interleave(2, 0)):
        if ok:  # the forward action from the parent leads back to the state
            assert env.step(states(p.tolist()), a[None])["pos"][0].tolist() == child.tolist()


@pytest.mark.parametrize("height,x,bonus", [
    (8, 0, "R1"),          # |0/7 - 0.5| = 0.5: outside the band
    (8, 1, "R1+R2"),       # 0.357: in (0.3, 0.4)
    (8, 3, ""),            # 0.071 <= 0.25
    (5, 1, ""),            # exactly 0.25: the threshold is strict
    (6, 1, "R1"),          # exactly 0.3 (in float32): the band is open below
    (11, 1, "R1"),         # exactly 0.4 (in float32): the band is open above
    (11, 9, "R1+R2"),      # 0.39999998: just inside
])
def test_log_reward_thresholds_in_one_dimension(height, x, bonus):
    R0, R1, R2 = 0.25, 1.5, 4.0
    env = HyperGrid(1, height, R0, R1, R2)
    expected = R0 + (R1 if "R1" in bonus else 0.0) + (R2 if "R2" in bonus else 0.0)
    assert float(env.log_reward(states([x]))) == pytest.approx(math.log(expected), rel=1e-6)


def test_log_reward_needs_every_coordinate_in_the_region():
    env = HyperGrid(2, 8, 0.25, 1.5, 4.0)
    got = env.log_reward(states([0, 7], [1, 6], [0, 1], [1, 3])).exp()
    # [0, 7]: both 0.5 (R1 only); [1, 6]: both 0.357 (R1 + R2); [0, 1]: 0.5 is outside R2's band; [1, 3]: 0.071
    torch.testing.assert_close(got, torch.tensor([1.75, 5.75, 1.75, 0.25]))


def test_enumeration_order_index_and_target():
    env = HyperGrid(2, 3, 0.25, 1.5, 4.0)
    pos = env.all_states()["pos"]
    assert pos.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1], [0, 2], [1, 2], [2, 2]]
    assert env.state_index(states([2, 1], [0, 2])).tolist() == [5, 6]
    assert env.state_index(env.all_states()).tolist() == list(range(9))
    # H = 3: |x/2 - 0.5| is 0.5 at x in {0, 2} and 0 at x = 1; the band (0.3, 0.4) is empty
    R = torch.tensor([1.75 if 1 not in p else 0.25 for p in pos.tolist()])
    torch.testing.assert_close(env.target_distribution(), R / R.sum())
    assert env.log_partition() == pytest.approx(math.log(float(R.sum())), rel=1e-6)
    assert log_z_error(2.0, env) == pytest.approx(abs(2.0 - math.log(float(R.sum()))), abs=1e-6)
    assert log_z_error(-2.0, env) == pytest.approx(2.0 + math.log(float(R.sum())), abs=1e-6)


def _table_policy(env: HyperGrid, table: dict[tuple, list[float]]):
    """log P_F(. | s) looked up by state; probabilities listed as [stop, +x_0, +x_1]."""
    rows = torch.tensor([table[tuple(p)] for p in env.all_states()["pos"].tolist()])

    def log_pf(s: TensorDict) -> torch.Tensor:
        return rows[env.state_index(s)].log()

    return log_pf


def test_terminal_distribution_sums_every_parent_path():
    env = HyperGrid(2, 2)
    log_pf = _table_policy(env, {(0, 0): [0.2, 0.5, 0.3], (1, 0): [0.6, 0.0, 0.4],
                                 (0, 1): [0.7, 0.3, 0.0], (1, 1): [1.0, 0.0, 0.0]})
    exact = env.terminal_distribution(log_pf)
    # P_T(0,0) = 0.2; P_T(1,0) = 0.5 * 0.6; P_T(0,1) = 0.3 * 0.7; P_T(1,1) = 0.5 * 0.4 + 0.3 * 0.3
    torch.testing.assert_close(exact, torch.tensor([0.2, 0.3, 0.21, 0.29]))


def test_terminal_distribution_along_one_axis():
    env = HyperGrid(1, 4)
    log_pf = _table_policy(env, {(0,): [0.5, 0.5], (1,): [0.25, 0.75], (2,): [0.0, 1.0], (3,): [1.0, 0.0]})
    exact = env.terminal_distribution(log_pf)
    torch.testing.assert_close(exact, torch.tensor([0.5, 0.125, 0.0, 0.375]))


def test_empirical_distribution_and_l1():
    env = HyperGrid(1, 3)
    torch.testing.assert_close(env.empirical_distribution(states([0], [2], [2], [2])), torch.tensor([0.25, 0.0, 0.75]))
    torch.testing.assert_close(env.empirical_distribution(states([1])), torch.tensor([0.0, 1.0, 0.0]))
    grid = HyperGrid(2, 3)  # H^D = 9 bins, also when only low indices were sampled
    torch.testing.assert_close(grid.empirical_distribution(states([1, 0])), torch.eye(9)[1])
    none = TensorDict({"pos": torch.zeros(0, 1, dtype=torch.int64)}, batch_size=[0])
    torch.testing.assert_close(env.empirical_distribution(none), torch.zeros(3))  # no samples: zeros, not NaN
    assert l1_distance(torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.25, 0.5])) == pytest.approx(0.5)


class _FixedSampler:
    """A sampler with a fixed forward policy that samples a fixed batch, only greedily."""

    def __init__(self, env, log_pf, terminal, log_z):
        self.env, self.log_pf, self.terminal, self.log_z = env, log_pf, terminal, log_z

    def policy_log_probs(self, s):
        return self.log_pf(s)

    def sample(self, n, epsilon):
        assert epsilon == 0.0, "evaluation must sample without exploration"
        assert n == self.terminal.shape[0], "evaluation draws num_samples terminal states"
        return None, self.terminal, None

    def estimated_log_z(self):
        return self.log_z


def test_evaluate_sampler_reports_exact_empirical_and_log_z_errors():
    env = HyperGrid(2, 2, 0.25, 1.5, 4.0)
    log_pf = _table_policy(env, {(0, 0): [0.2, 0.5, 0.3], (1, 0): [0.6, 0.0, 0.4],
                                 (0, 1): [0.7, 0.3, 0.0], (1, 1): [1.0, 0.0, 0.0]})
    terminal = states([0, 0], [1, 1], [1, 1], [1, 0])
    target = env.target_distribution()
    out = env.evaluate_sampler(_FixedSampler(env, log_pf, terminal, 1.0), num_samples=4)
    assert set(out) == {"eval/l1", "eval/l1_empirical", "eval/log_z_error"}
    assert out["eval/l1"] == pytest.approx(0.5 * float((torch.tensor([0.2, 0.3, 0.21, 0.29]) - target).abs().sum()))
    assert out["eval/l1_empirical"] == pytest.approx(0.5 * float((torch.tensor([0.25, 0.25, 0.0, 0.5]) - target)
                                                                 .abs().sum()))
    assert out["eval/log_z_error"] == pytest.approx(abs(1.0 - env.log_partition()))
