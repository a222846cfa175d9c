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


def test_make_optimizer_steps_parameters_the_fused_kernel_cannot_take():
    # complex parameters have no fused Adam kernel: the optimizer must fall back and step them
    z = nn.Parameter(torch.tensor([1.0 + 1.0j, -2.0 + 0.5j]))
    ref = nn.Parameter(z.detach().clone())
    opt, ref_opt = make_optimizer([z], lr=0.1), torch.optim.Adam([ref], lr=0.1)
    for p, o in ((z, opt), (ref, ref_opt)):
        p.grad = torch.tensor([0.5 - 1.0j, 2.0 + 0.0j])
        o.step()
    assert opt.defaults["fused"] is False
    torch.testing.assert_close(z.detach(), ref.detach())


def test_optimizer_step_does_not_clip_unless_asked_and_treats_a_non_positive_limit_as_off():
    w = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=1.0)
    target = torch.tensor([3.0, 4.0])  # gradient -target, norm 5: any limit below 5 would shrink it
    assert optimizer_step(opt, -(w * target).sum()) == 0.0  # the default: no clipping
    torch.testing.assert_close(w.detach(), target)
    assert optimizer_step(opt, -(w * target).sum(), max_grad_norm=-1.0) == 0.0  # negative: off, not flipped
    torch.testing.assert_close(w.detach(), 2 * target)


def test_optimizer_step_frees_gradients_so_parameters_outside_this_loss_stay_put():
    # one optimizer over two parameters, the second loss reaches only `a`: Adam must not move `b`
    # with its momentum (a zeroed instead of freed gradient would)
    a, b = nn.Parameter(torch.ones(1)), nn.Parameter(torch.ones(1))
    opt = torch.optim.Adam([a, b], lr=0.1)
    optimizer_step(opt, (a + b).sum())
    b_after_first = b.detach().clone()
    optimizer_step(opt, a.sum())
    assert b.grad is None
    torch.testing.assert_close(b.detach(), b_after_first, rtol=0, atol=0)
    assert a.item() < b.item()  # `a` took its second step


def test_optimizer_step_accumulates_an_iterable_of_losses():
    w = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=1.0)
    pieces = (-(w * torch.tensor([1.0, 0.0])).sum(), -(w * torch.tensor([2.0, 3.0])).sum())
    optimizer_step(opt, iter(pieces))  # each piece backpropagated, one step on the summed gradient
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 3.0]))


def _averaging_rank(rank: int, init_file: str) -> torch.Tensor:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        w = nn.Parameter(torch.zeros(2))
        opt = torch.optim.SGD([w], lr=1.0)
        grad = torch.tensor([2.0, 0.0]) if rank == 0 else torch.tensor([0.0, 4.0])
        optimizer_step(opt, -(w * grad).sum())  # rank gradients -[2, 0] and -[0, 4]: the mean is -[1, 2]
        return w.detach()
    finally:
        dist.destroy_process_group()


def test_optimizer_step_steps_every_data_parallel_rank_on_the_mean_gradient(tmp_path):
    import multiprocessing

    # rank 1 is a forked child (no re-import of torch: a fraction of a second), rank 0 this process
    other = multiprocessing.get_context("fork").Process(target=_averaging_rank, args=(1, str(tmp_path / "init")))
    other.start()
    w = _averaging_rank(0, str(tmp_path / "init"))
    other.join(timeout=60)
    assert other.exitcode == 0
    torch.testing.assert_close(w, torch.tensor([1.0, 2.0]))


def test_clip_grad_norm_edges_no_gradients_mixed_dtypes_and_the_guard():
    import torch

    from rlx.core.learner import clip_grad_norm

    # no gradient at all: the norm is exactly 0.0 and nothing is touched
    p = torch.nn.Parameter(torch.ones(3))
    out = clip_grad_norm([p], 1.0)
    assert out.item() == 0.0 and out.dtype == torch.float32 and p.grad is None
    # mixed dtypes take torch's own grouped path: same norm and the same clipped gradients
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0], dtype=torch.float64)
    norm = clip_grad_norm([a, b], 1.0)
    assert float(norm) == 5.0
    torch.testing.assert_close(a.grad, torch.tensor([3.0, 0.0]) / (5.0 + 1e-6))
    torch.testing.assert_close(b.grad, torch.tensor([0.0, 4.0], dtype=torch.float64) / (5.0 + 1e-6))
    # the 1e-6 guard is added, as in torch: visible on a small float64 norm (1e-3, clipped to 1e-4)
    c = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    c.grad = torch.tensor([1e-3], dtype=torch.float64)
    clip_grad_norm([c], 1e-4)
    torch.testing.assert_close(c.grad, torch.tensor([1e-3 * 1e-4 / (1e-3 + 1e-6)], dtype=torch.float64), rtol=1e-12, atol=0)


def test_host_metrics_keeps_plain_numbers_next_to_tensors():
    import torch

    from rlx.core.learner import host_metrics

    out = host_metrics({"a": 1.5, "n": 3, "b": torch.tensor(2.0), "c": torch.tensor([[0.25]], dtype=torch.float64)})
    assert out == {"a": 1.5, "n": 3.0, "b": 2.0, "c": 0.25} and all(type(v) is float for v in out.values())


def _twin_models(seed=0):
    import torch

    torch.manual_seed(seed)
    a = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    b = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    b.load_state_dict(a.state_dict())
    return a, b



@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_the_direct_fused_adam_step_is_bitwise_torchs_step(weight_decay):
    """`optimizer_step` calls the fused kernel itself after the first step; parameters, moments and
    step counters stay bitwise what `opt.step()` gives, under a learning-rate schedule, for Adam
    and AdamW (weight decay)."""
    import torch

    from rlx.core import learner as L

    a, b = _twin_models()
    oa, ob = L.make_optimizer(a.parameters(), 1e-2, weight_decay), L.make_optimizer(b.parameters(), 1e-2, weight_decay)
    sa = torch.optim.lr_scheduler.LambdaLR(oa, lambda i: 1.0 / (1 + i))
    sb = torch.optim.lr_scheduler.LambdaLR(ob, lambda i: 1.0 / (1 + i))
    x = torch.randn(16, 4)
    for step in range(5):
        for model, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
        if step == 0:
            assert not L._fused_adam_step(oa)  # no state yet: the first step goes through opt.step()
            oa.step()
        else:
            assert L._fused_adam_step(oa)
        ob.step()
        sa.step(), sb.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(oa.state[pa][k], ob.state[pb][k]), k


def test_the_direct_adam_step_declines_what_it_does_not_cover():
    import torch

    from rlx.core import learner as L

    a, _ = _twin_models()
    opt = L.make_optimizer(a.parameters(), 1e-3)
    for p in a.parameters():
        p.grad = torch.ones_like(p)
    assert not L._fused_adam_step(opt)  # no state yet
    opt.step()
    assert L._fused_adam_step(opt)
    a[0].bias.grad = None
    assert not L._fused_adam_step(opt)  # a parameter without gradient: torch skips it, so must we
    a[0].bias.grad = torch.ones_like(a[0].bias)
    handle = opt.register_step_pre_hook(lambda *args: None)
    assert not L._fused_adam_step(opt)  # hooks run only through opt.step()
    handle.remove()
    for kw in (dict(amsgrad=True), dict(maximize=True), dict(fused=False)):
        o = torch.optim.Adam(a.parameters(), lr=1e-3, **kw)
        o.step()
        assert not L._fused_adam_step(o), kw
    two = torch.optim.Adam([{"params": [a[0].weight]}, {"params": [a[2].weight]}], lr=1e-3, fused=True)
    two.step()
    assert not L._fused_adam_step(two)
    sgd = torch.optim.SGD(a.parameters(), lr=1e-3)
    assert not L._fused_adam_step(sgd)


def test_optimizer_step_clips_with_a_host_factor_and_takes_given_gradients():
    """`loss=None` steps on the gradients already in `.grad`; the clip factor is
    max_norm / (norm + 1e-6), applied only when it is below 1, and the pre-clip norm is returned."""
    import torch

    from rlx.core.learner import optimizer_step

    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    p.grad = torch.tensor([3.0, 4.0])
    assert optimizer_step(opt, None, max_grad_norm=1.0) == pytest.approx(5.0)
    torch.testing.assert_close(p.detach(), -torch.tensor([3.0, 4.0]) / (5.0 + 1e-6))
    p.grad = torch.tensor([0.3, 0.4])
    before = p.detach().clone()
    assert optimizer_step(opt, None, max_grad_norm=1.0) == pytest.approx(0.5)
    torch.testing.assert_close(p.detach(), before - torch.tensor([0.3, 0.4]), rtol=0, atol=0)  # not scaled
    p.grad = torch.tensor([6.0, 8.0])  # zero_grad + backward replace the stale gradient when a loss is given
    optimizer_step(opt, (p * torch.tensor([1.0, 0.0])).sum(), max_grad_norm=0.0)
    torch.testing.assert_close(p.detach(), before - torch.tensor([0.3, 0.4]) - torch.tensor([1.0, 0.0]))
