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
    """Each condition alone sends the step back to `opt.step()` (which then does what torch does)."""
    import torch

    from rlx.core import learner as L

    def stepped(opt):
        for p in (q for g in opt.param_groups for q in g["params"]):
            p.grad = torch.ones_like(p)
        opt.step()  # the state exists from here on
        return L._fused_adam_step(opt)

    a, _ = _twin_models()
    opt = L.make_optimizer(a.parameters(), 1e-3)
    for p in a.parameters():
        p.grad = torch.ones_like(p)
    assert not L._fused_adam_step(opt)  # no state yet
    assert stepped(opt)
    a[0].bias.grad = None
    assert not L._fused_adam_step(opt)  # a parameter without gradient: torch skips it, so must we
    a[0].bias.grad = torch.ones_like(a[0].bias)
    handle = opt.register_step_pre_hook(lambda *args: None)
    assert not L._fused_adam_step(opt)  # hooks run only through opt.step()
    handle.remove()
    handle = opt.register_step_post_hook(lambda *args: None)
    assert not L._fused_adam_step(opt)
    handle.remove()
    import torch.optim.optimizer as optim_module

    for register in (optim_module.register_optimizer_step_pre_hook, optim_module.register_optimizer_step_post_hook):
        handle = register(lambda *args: None)  # global hooks too
        assert not L._fused_adam_step(opt)
        handle.remove()
    assert L._fused_adam_step(opt)
    for attr in ("grad_scale", "found_inf"):  # set by a GradScaler's unscale path
        setattr(opt, attr, torch.tensor(1.0))
        assert not L._fused_adam_step(opt), attr
        delattr(opt, attr)
    opt.param_groups[0]["lr"] = torch.tensor(1e-3)  # a tensor learning rate
    assert not L._fused_adam_step(opt)
    for kw in (dict(amsgrad=True), dict(maximize=True), dict(capturable=True)):
        assert not stepped(torch.optim.Adam(a.parameters(), lr=1e-3, fused=True, **kw)), kw
    assert not stepped(torch.optim.Adam(a.parameters(), lr=1e-3, fused=False))
    assert not stepped(torch.optim.Adam([{"params": [a[0].weight]}, {"params": [a[2].weight]}], lr=1e-3, fused=True))
    assert not stepped(torch.optim.SGD(a.parameters(), lr=1e-3))
    mixed = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))]
    assert not stepped(torch.optim.Adam(mixed, lr=1e-3, fused=True))  # one dtype per kernel call
    assert not stepped(torch.optim.Adam(mixed[::-1], lr=1e-3, fused=True))


def test_the_direct_step_takes_adams_l2_decay_and_keeps_the_scheduler_quiet():
    """Adam's (coupled) weight decay is `_fused_adam_`'s, not AdamW's; a scheduler on an optimizer
    whose state was loaded (no `opt.step()` in this process) sees the step as taken."""
    import warnings

    import torch

    from rlx.core import learner as L

    a, b = _twin_models()
    oa = torch.optim.Adam(a.parameters(), lr=1e-2, weight_decay=0.1, fused=True)
    ob = torch.optim.Adam(b.parameters(), lr=1e-2, weight_decay=0.1, fused=True)
    x = torch.randn(8, 4)
    for step in range(3):
        for model, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            model(x).sum().backward()
        oa.step() if step == 0 else L._fused_adam_step(oa)
        ob.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    c, _ = _twin_models()
    oc = torch.optim.Adam(c.parameters(), lr=1e-2, fused=True)
    oc.load_state_dict(oa.state_dict() | {"param_groups": [dict(oa.state_dict()["param_groups"][0], weight_decay=0.0)]})
    sched = torch.optim.lr_scheduler.LambdaLR(oc, lambda i: 0.5)
    c(x).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Detected call of `lr_scheduler.step()` before `optimizer.step()`"
        L.optimizer_step(oc, None)
        sched.step()


def test_optimizer_step_takes_the_direct_step_after_the_first():
    import torch

    from rlx.core import learner as L

    a, _ = _twin_models()
    opt = L.make_optimizer(a.parameters(), 1e-3)
    calls = []
    real = opt.step
    opt.step = lambda *args, **kw: calls.append(1) or real(*args, **kw)
    x = torch.randn(8, 4)
    for _ in range(3):
        L.optimizer_step(opt, a(x).sum(), max_grad_norm=1.0)
    assert calls == [1]  # only the first step (it creates the state) goes through opt.step()


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
    q = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))  # the 1e-6 guard, visible on a small norm
    q.grad = torch.tensor([1e-3], dtype=torch.float64)
    assert optimizer_step(torch.optim.SGD([q], lr=1.0), None, max_grad_norm=1e-4) == pytest.approx(1e-3, rel=1e-12)
    torch.testing.assert_close(q.detach(), torch.tensor([-1e-3 * 1e-4 / (1e-3 + 1e-6)], dtype=torch.float64),
                               rtol=1e-12, atol=0)
    u, v = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))  # mixed dtypes
    u.grad, v.grad = torch.tensor([3.0]), torch.tensor([4.0], dtype=torch.float64)
    assert optimizer_step(torch.optim.SGD([u, v], lr=1.0), None, max_grad_norm=1.0) == pytest.approx(5.0)
    torch.testing.assert_close(v.detach(), torch.tensor([-4.0 / (5.0 + 1e-6)], dtype=torch.float64))
    w = torch.nn.Parameter(torch.ones(2))  # no gradient at all: norm 0.0, nothing moves
    assert optimizer_step(torch.optim.SGD([w], lr=1.0), None, max_grad_norm=1.0) == 0.0
    assert torch.equal(w.detach(), torch.ones(2))
    p.grad = torch.tensor([6.0, 8.0])  # zero_grad + backward replace the stale gradient when a loss is given
    optimizer_step(opt, (p * torch.tensor([1.0, 0.0])).sum(), max_grad_norm=0.0)
    torch.testing.assert_close(p.detach(), before - torch.tensor([0.3, 0.4]) - torch.tensor([1.0, 0.0]))


def test_the_direct_step_with_one_parameter_and_an_unclipped_tensor_clip():
    """A one-parameter optimizer takes the direct step too; `clip_grad_norm` under its limit
    leaves the gradients exactly as they are (factor clamped at 1)."""
    import torch

    from rlx.core import learner as L

    w = torch.nn.Parameter(torch.ones(3))
    ref = torch.nn.Parameter(torch.ones(3))
    ow, oref = L.make_optimizer([w], 0.1), L.make_optimizer([ref], 0.1)
    for step in range(3):
        w.grad, ref.grad = torch.full((3,), 0.5), torch.full((3,), 0.5)
        ow.step() if step == 0 else assert_true(L._fused_adam_step(ow))
        oref.step()
    assert torch.equal(w, ref)
    g = torch.tensor([0.3, 0.4])
    w2 = torch.nn.Parameter(torch.zeros(2))
    w2.grad = g.clone()
    assert float(L.clip_grad_norm([w2], 1.0)) == pytest.approx(0.5)
    assert torch.equal(w2.grad, g)


def assert_true(x):
    assert x

