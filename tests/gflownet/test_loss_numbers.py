"""The four GFlowNet objectives on hand-computed numbers (not only zero at an optimum), and the
learner's flow-matching assembly (inflow, outflow, exit edge) on the HyperGrid perfect flow.

The batch: trajectory A has 2 transitions (states s0, s1, then x_A), trajectory B has 1.
  log F = [1.0, 0.5 | 0.3], log P_F = [0.2, -0.1 | 0.4], log P_B = [0.1, 0.0 | 0.0],
  log R = [0.0 | 1.0], so the per-step log P_F - log P_B are d = [0.1, -0.1 | 0.4].
"""

import math

import pytest
import torch

import rlx.algos.gflownet as gfn
from rlx.algos.gflownet import (GFlowNet, GFlowNetConfig, detailed_balance, flow_matching, subtrajectory_balance,
                                trajectory_balance)
from rlx.envs.hypergrid import HyperGrid
from tests.gflownet.test_hypergrid import TablePolicy

LOG_F = torch.tensor([1.0, 0.5, 0.3])
LOG_PF = torch.tensor([0.2, -0.1, 0.4])
LOG_PB = torch.tensor([0.1, 0.0, 0.0])
LOG_R = torch.tensor([0.0, 1.0])
PTR = torch.tensor([0, 2, 3])


def test_trajectory_balance_numbers():
    # A: 0.2 + (0.1 - 0.1) - 0 = 0.2; B: 0.2 + 0.4 - 1 = -0.4; mean of squares 0.1
    loss = trajectory_balance(torch.tensor(0.2), LOG_PF, LOG_PB, LOG_R, PTR)
    assert float(loss) == pytest.approx((0.2**2 + 0.4**2) / 2)


def test_detailed_balance_numbers():
    # rows: F0 + pf0 - F1 - pb0 = 1 + 0.2 - 0.5 - 0.1 = 0.6; exit of A: 0.5 - 0.1 - log R_A = 0.4;
    # exit of B: 0.3 + 0.4 - 1 = -0.3; summed squares over the 3 transitions / 3
    loss = detailed_balance(LOG_F, LOG_PF, LOG_PB, LOG_R, PTR)
    assert float(loss) == pytest.approx((0.36 + 0.16 + 0.09) / 3)


@pytest.mark.parametrize("lam", [0.5, 0.9, 1.0, 2.0])
def test_subtrajectory_balance_weights_lambda_to_the_length(lam):
    # A: residuals r01 = 1 + 0.1 - 0.5 = 0.6, r12 = 0.5 - 0.1 - 0 = 0.4, r02 = 1 + 0.1 - 0.1 - 0 = 1.0 with
    # weights lam, lam, lam^2; B: r01 = 0.3 + 0.4 - 1 = -0.3 (weight lam, normalized away)
    a = (lam * 0.36 + lam * 0.16 + lam**2 * 1.0) / (2 * lam + lam**2)
    b = 0.09
    loss = subtrajectory_balance(LOG_F, LOG_PF, LOG_PB, LOG_R, PTR, lam)
    assert float(loss) == pytest.approx((a + b) / 2, rel=1e-6)


def test_subtrajectory_balance_long_subtrajectories_dominate_as_lambda_grows():
    small = subtrajectory_balance(LOG_F, LOG_PF, LOG_PB, LOG_R, PTR, 0.01)  # -> the one-step residuals (DB-like)
    big = subtrajectory_balance(LOG_F, LOG_PF, LOG_PB, LOG_R, PTR, 100.0)  # -> the whole trajectory (TB-like)
    assert float(small) == pytest.approx(((0.36 + 0.16) / 2 + 0.09) / 2, rel=2e-2)
    assert float(big) == pytest.approx((1.0 + 0.09) / 2, rel=2e-2)


def test_flow_matching_numbers_and_exit_term():
    eps = 1e-12  # log(eps + e^x) = x
    loss = flow_matching(torch.tensor([0.0, 1.0]), torch.tensor([0.5, 1.0]), torch.tensor([2.0]), torch.tensor([1.0]), eps)
    assert float(loss) == pytest.approx(0.25 / 2 + 1.0)  # state term mean(0.5^2, 0) + exit term (2 - 1)^2
    # the exit term alone: balanced states, exit flow vs reward; eps enters both sides of every term
    loss = flow_matching(torch.tensor([0.3]), torch.tensor([0.3]), torch.tensor([math.log(1.5), 0.0]),
                         torch.tensor([math.log(0.5), 0.0]), 0.5)
    assert float(loss) == pytest.approx(math.log(2.0) ** 2 / 2)  # log(0.5 + 1.5) - log(0.5 + 0.5); second: 0
    # no non-initial states: only the exit term (the empty state term is 0, not a sum of exit flows),
    # still differentiable in the exit flow: d/dx (x - r)^2 = 2 (x - r)
    exit_flow = torch.tensor([0.5], requires_grad=True)
    loss = flow_matching(torch.zeros(0), torch.zeros(0), exit_flow, torch.tensor([-0.5]), eps)
    assert float(loss.detach()) == pytest.approx(1.0)
    loss.backward()
    assert float(exit_flow.grad) == pytest.approx(2.0)


def test_flow_matching_loss_assembles_inflow_outflow_and_exit_edges(monkeypatch):
    torch.manual_seed(0)
    env = HyperGrid(2, 4)
    model = TablePolicy(env)
    learner = GFlowNet(GFlowNetConfig(objective="fm", beta=2.0), env, model)
    store, terminal, log_r = learner.sample(32)
    seen = {}

    def capture(log_in, log_out, log_exit, log_reward, eps):
        seen.update(log_in=log_in, log_out=log_out, log_exit=log_exit, log_reward=log_reward, eps=eps)
        return log_exit.sum() * 0

    monkeypatch.setattr(gfn, "flow_matching", capture)
    learner.loss(store, log_r)
    # exit edge of every terminal state = its stop-edge flow, which the perfect flow sets to log R(x)
    torch.testing.assert_close(seen["log_exit"], log_r)
    torch.testing.assert_close(seen["log_reward"], 2.0 * log_r)  # R^beta
    inner = store.data["t"] > 0  # every visited state but s_0: inflow = outflow at the perfect flow
    assert seen["log_in"].shape[0] == int(inner.sum()) > 0
    torch.testing.assert_close(seen["log_in"], seen["log_out"], atol=1e-5, rtol=0)
    torch.testing.assert_close(seen["log_out"], model.log_flow[env.state_index(store.data["obs"][inner])], atol=1e-5, rtol=0)
    assert seen["eps"] == learner.cfg.fm_epsilon
