"""rlx.core.fit: the one auxiliary fitting loop (fused Adam through make_optimizer, schedules,
EMA, clipping, progress callback)."""

import math

import pytest
import torch
from torch import nn

from rlx.core.fit import SCHEDULES, fit


def _regression(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    return model, lambda step: ((model(x).squeeze(-1) - y) ** 2).mean()


def test_fit_solves_a_least_squares_problem_and_returns_every_loss():
    model, loss_fn = _regression()
    losses = fit(model, loss_fn, 300, lr=0.05)
    assert len(losses) == 300 and losses[-1] < 1e-3 < losses[0]
    assert torch.allclose(model.weight.detach(), torch.tensor([[1.0, -2.0, 0.5]]), atol=0.02)


def test_fit_is_the_shared_fused_adam_and_matches_a_hand_written_loop():
    model, loss_fn = _regression()
    fit(model, loss_fn, 50, lr=0.01)
    ref, ref_loss = _regression()
    opt = torch.optim.Adam(ref.parameters(), lr=0.01, fused=True)
    for step in range(50):
        opt.zero_grad()
        ref_loss(step).backward()
        opt.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_schedules_ema_clipping_and_callback():
    assert SCHEDULES["linear"](0, 10) == 1 and SCHEDULES["linear"](5, 10) == 0.5
    assert SCHEDULES["cosine"](10, 10) == pytest.approx(0.0) and SCHEDULES["cosine"](5, 10) == pytest.approx(0.5)
    model, loss_fn = _regression()
    ema = nn.Linear(3, 1).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    start = [p.detach().clone() for p in model.parameters()]
    seen = []
    fit(model, loss_fn, 20, lr=0.1, schedule="cosine", ema=ema, ema_decay=0.9, max_grad_norm=1e-3,
        callback=lambda step, loss: seen.append(step))
    assert seen == list(range(20))
    # the EMA lags behind the weights but has left its start
    for e, p, s in zip(ema.parameters(), model.parameters(), start):
        assert 0 < float((e - s).abs().max()) < float((p.detach() - s).abs().max())
    assert math.isclose(SCHEDULES["cosine"](20, 20), 0.0, abs_tol=1e-12)


def test_bad_arguments_are_one_line_errors():
    model, loss_fn = _regression()
    with pytest.raises(ValueError, match="unknown schedule='warm'; choose one of constant, linear, cosine"):
        fit(model, loss_fn, 1, 0.1, schedule="warm")
    with pytest.raises(ValueError, match="ema needs the module"):
        fit(list(model.parameters()), loss_fn, 1, 0.1, ema=model)
    assert fit(model, loss_fn, 0, 0.1) == []
