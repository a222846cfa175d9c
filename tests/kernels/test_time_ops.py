"""gae, lambda_returns, discount_cumsum: twin vs Python loops, Triton vs twin, gradients."""

import pytest
import torch

import rlx.kernels as K
from rlx.kernels import reference
from tests.kernels import loops

GAMMA, LAM = 0.9, 0.8


def rollout(T, N, seed, done_dtype=torch.bool, dtype=torch.float64, p=0.2):
    """Random [T, N] rollout; dones at the first and last step of some columns, truncation
    mixed with termination (sometimes both on one step)."""
    g = torch.Generator().manual_seed(seed)
    r, v, nv = (torch.randn(T, N, generator=g, dtype=dtype) for _ in range(3))
    term = torch.rand(T, N, generator=g) < p
    trunc = torch.rand(T, N, generator=g) < p
    term[0, ::2] = True
    trunc[-1, 1::2] = True
    return r, v, nv, term.to(done_dtype), trunc.to(done_dtype)


SHAPES = [(1, 1), (2, 3), (10, 2), (17, 5), (64, 3), (101, 2)]


@pytest.mark.parametrize("T,N", SHAPES)
def test_twin_matches_python_loops(T, N):
    r, v, nv, term, trunc = rollout(T, N, seed=T * 100 + N)
    adv, ret = reference.gae(r, v, nv, term, trunc, GAMMA, LAM)
    adv_loop, ret_loop = loops.gae(r, v, nv, term, trunc, GAMMA, LAM)
    torch.testing.assert_close(adv, adv_loop)
    torch.testing.assert_close(ret, ret_loop)
    torch.testing.assert_close(reference.lambda_returns(r, nv, term, trunc, GAMMA, LAM),
                               loops.lambda_returns(r, nv, term, trunc, GAMMA, LAM))
    lengths = torch.randint(0, T + 1, (N,), generator=torch.Generator().manual_seed(T))
    valid = torch.arange(T)[:, None] < lengths[None, :]
    torch.testing.assert_close(reference.discount_cumsum(r, GAMMA, lengths=lengths),
                               loops.discount_cumsum(r, GAMMA, valid))
    torch.testing.assert_close(reference.discount_cumsum(r, GAMMA, mask=~term),
                               loops.discount_cumsum(r, GAMMA, ~term))
    torch.testing.assert_close(reference.discount_cumsum(r, GAMMA),
                               loops.discount_cumsum(r, GAMMA, torch.ones(T, N, dtype=torch.bool)))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_truncated_step_bootstraps_terminated_does_not(run, backend):
    # Column 0 terminates at t=1, column 1 is truncated at t=1; V(s') = 10 at that step.
    reward = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    value = torch.zeros(3, 2)
    next_value = torch.tensor([[0.0, 0.0], [10.0, 10.0], [0.0, 0.0]])
    next_value[1, 0] = float("nan")  # a terminated step's next value is never read
    terminated = torch.tensor([[False, False], [True, False], [False, False]])
    truncated = torch.tensor([[False, False], [False, True], [False, False]])
    adv, ret = run(backend, K.gae, reward, value, next_value, terminated, truncated, 0.5, 1.0)
    assert adv[1, 0] == 1.0  # no bootstrap, no NaN
    assert adv[1, 1] == 1.0 + 0.5 * 10.0  # bootstraps from V(real final obs)
    assert adv[0, 0] == 0.5 * 1.0 and adv[0, 1] == 0.5 * 6.0  # recursion flows into the done step
    assert adv[2].tolist() == [5.0, 5.0]  # the done step cut the recursion from t=2
    torch.testing.assert_close(ret, adv)
    lam_ret = run(backend, K.lambda_returns, reward, next_value, terminated, truncated, 0.5, 1.0)
    assert lam_ret[1].tolist() == [1.0, 6.0]


@pytest.mark.parametrize("T,N", [(1, 1), (8, 3), (33, 6)])
@pytest.mark.parametrize("done_dtype", [torch.bool, torch.uint8, torch.float32])
def test_triton_matches_twin(run, small_tiles, T, N, done_dtype):
    r, v, nv, term, trunc = rollout(T, N, seed=T + N, done_dtype=done_dtype, dtype=torch.float32)
    for fn, args in [
        (K.gae, (r, v, nv, term, trunc, GAMMA, LAM)),
        (K.lambda_returns, (r, nv, term, trunc, GAMMA, LAM)),
        (K.discount_cumsum, (r, GAMMA)),
    ]:
        torch.testing.assert_close(run("triton", fn, *args), run("torch", fn, *args))
    lengths = torch.randint(0, T + 1, (N,), generator=torch.Generator().manual_seed(N))
    for kwargs in [dict(lengths=lengths), dict(mask=trunc == 0)]:
        torch.testing.assert_close(run("triton", K.discount_cumsum, r, GAMMA, **kwargs),
                                   run("torch", K.discount_cumsum, r, GAMMA, **kwargs))


def test_triton_matches_twin_default_tiles(run):
    r, v, nv, term, trunc = rollout(70, 18, seed=2, dtype=torch.float32)
    for triton_out, twin_out in zip(run("triton", K.gae, r, v, nv, term, trunc, GAMMA, LAM),
                                    run("torch", K.gae, r, v, nv, term, trunc, GAMMA, LAM)):
        torch.testing.assert_close(triton_out, twin_out)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_half_precision_keeps_dtype(run, small_tiles, backend):
    r, v, nv, term, trunc = rollout(20, 3, seed=1, dtype=torch.bfloat16)
    adv, ret = run(backend, K.gae, r, v, nv, term, trunc, GAMMA, LAM)
    assert adv.dtype == ret.dtype == torch.bfloat16
    expected, _ = loops.gae(r, v, nv, term, trunc, GAMMA, LAM)
    torch.testing.assert_close(adv.double(), expected, atol=0.05, rtol=0.02)


def _losses(fn_name, inputs, term, trunc, mask):
    """A scalar loss through each op with fixed random weights on the outputs."""
    r, v, nv = inputs
    w = torch.linspace(-1, 1, r.numel(), dtype=r.dtype).view_as(r)
    if fn_name == "gae":
        adv, ret = K.gae(r, v, nv, term, trunc, GAMMA, LAM)
        return (adv * w).sum() + (ret * w.flip(0)).sum()
    if fn_name == "lambda_returns":
        return (K.lambda_returns(r, nv, term, trunc, GAMMA, LAM) * w).sum()
    return (K.discount_cumsum(r, GAMMA, mask=mask) * w).sum()


@pytest.mark.parametrize("fn_name", ["gae", "lambda_returns", "discount_cumsum"])
def test_triton_gradients_match_twin(run, small_tiles, fn_name):
    r, v, nv, term, trunc = rollout(27, 6, seed=3, dtype=torch.float32)
    grads = {}
    for backend in ["torch", "triton"]:
        inputs = [t.clone().requires_grad_() for t in (r, v, nv)]
        run(backend, _losses, fn_name, inputs, term, trunc, ~trunc).backward()
        grads[backend] = [t.grad for t in inputs]
    for twin, tri in zip(grads["torch"], grads["triton"]):
        torch.testing.assert_close(tri, twin)


# Which of (reward, value, next_value) each op is differentiable in.
DIFFERENTIABLE = {"gae": (0, 1, 2), "lambda_returns": (0, 2), "discount_cumsum": (0,)}


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("fn_name", sorted(DIFFERENTIABLE))
def test_gradcheck_float64(run, small_tiles, backend, fn_name):
    _, _, _, term, trunc = rollout(10, 5, seed=5)
    base = [torch.randn(10, 5, dtype=torch.float64) for _ in range(3)]
    which = DIFFERENTIABLE[fn_name]

    def loss(*xs):
        inputs = list(base)
        for i, x in zip(which, xs):
            inputs[i] = x
        return _losses(fn_name, inputs, term, trunc, ~term)

    leaves = tuple(base[i].clone().requires_grad_() for i in which)
    assert run(backend, torch.autograd.gradcheck, loss, leaves, fast_mode=True)


def test_twin_matches_torchrl():
    functional = pytest.importorskip("torchrl.objectives.value.functional")
    r, v, nv, term, trunc = rollout(50, 4, seed=7, dtype=torch.float32)
    adv, ret = reference.gae(r, v, nv, term, trunc, 0.99, 0.95)
    # torchrl: time at dim -2, here N plays its feature dim; done = term | trunc.
    adv_trl, ret_trl = functional.generalized_advantage_estimate(0.99, 0.95, v, nv, r, term | trunc, term)
    torch.testing.assert_close(adv, adv_trl)
    torch.testing.assert_close(ret, ret_trl)
    torch.testing.assert_close(reference.lambda_returns(r, nv, term, trunc, 0.99, 0.95),
                               functional.td_lambda_return_estimate(0.99, 0.95, nv, r, term | trunc, term))


def test_rejects_bad_shapes():
    r = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="next_value has shape"):
        K.gae(r, r, torch.zeros(4, 2), r.bool(), r.bool(), GAMMA, LAM)
    with pytest.raises(ValueError, match=r"time-major \[T, N\]"):
        K.discount_cumsum(torch.zeros(4), GAMMA)
    with pytest.raises(ValueError, match="lengths must be"):
        K.discount_cumsum(r, GAMMA, lengths=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="mask or lengths, not both"):
        K.discount_cumsum(r, GAMMA, mask=r.bool(), lengths=torch.tensor([1, 2, 3]))
