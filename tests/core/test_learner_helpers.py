"""The optimizer / target-network helpers every learner uses, on hand-checked numbers."""

import pytest
import torch
from torch import nn

from rlx.core.learner import frozen_copy, make_optimizer, optimizer_step


def test_make_optimizer_picks_adamw_only_with_decay_and_skips_frozen_parameters():
    net = nn.Linear(2, 2)
    net.bias.requires_grad_(False)
    opt = make_optimizer(net.parameters(), lr=0.01, eps=1e-5)
    assert type(opt) is torch.optim.Adam and opt.defaults["fused"] is True
    assert opt.defaults["lr"] == 0.01 and opt.defaults["eps"] == 1e-5 and opt.defaults["weight_decay"] == 0.0
    assert [p for g in opt.param_groups for p in g["params"]] == [net.weight]
    decayed = make_optimizer(net.parameters(), lr=0.01, weight_decay=0.1)
    assert type(decayed) is torch.optim.AdamW and decayed.defaults["weight_decay"] == 0.1
    assert make_optimizer([nn.Parameter(torch.zeros(2))], lr=0.5, weight_decay=0.5).defaults["eps"] == 1e-8


def test_optimizer_step_clears_old_gradients_clips_and_returns_the_pre_clip_norm():
    w = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=1.0)
    w.grad = torch.full((2,), 100.0)  # a stale gradient must not leak into this step
    target = torch.tensor([3.0, 4.0])
    norm = optimizer_step(opt, -(w * target).sum(), max_grad_norm=1.0)  # gradient -target, norm 5
    assert norm == pytest.approx(5.0)
    torch.testing.assert_close(w.detach(), target / 5.0)  # clipped to norm 1, one SGD step
    assert w.grad is not None
    norm = optimizer_step(opt, -(w * target).sum(), max_grad_norm=0.0)  # no clipping, no norm measured
    assert norm == 0.0
    torch.testing.assert_close(w.detach(), target / 5.0 + target)
    norm = optimizer_step(opt, -(w * target).sum(), params=[w], max_grad_norm=10.0)  # under the limit: unchanged
    assert norm == pytest.approx(5.0)
    torch.testing.assert_close(w.detach(), target / 5.0 + 2 * target)
    norm = optimizer_step(opt, -(w * target).sum(), max_grad_norm=0.5)  # a limit below 1 clips too
    torch.testing.assert_close(w.detach(), target / 5.0 + 2 * target + target / 10.0)


def test_frozen_copy_is_a_deep_copy_without_gradients_in_eval_mode():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    frozen = frozen_copy(net)
    assert not frozen.training and net.training
    assert all(not p.requires_grad for p in frozen.parameters()) and all(p.requires_grad for p in net.parameters())
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert not torch.equal(frozen[0].weight, net[0].weight)  # a copy, not shared storage
