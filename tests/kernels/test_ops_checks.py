"""The public `rlx.kernels` ops: every argument check (one clear message each), dtype promotion,
hand-computed values on both backends (the Triton kernels under the interpreter), and the
argument order each op hands to its kernel."""

import math

import pytest
import torch

import rlx.kernels as K
from rlx.kernels import dispatch

BACKENDS = ["torch", "triton"]
F, T_ = False, True


@pytest.fixture(params=BACKENDS)
def backend(request):
    dispatch.set_backend(request.param)
    yield request.param
    dispatch.set_backend(None)


def _rollout(**over):
    """T = 2, N = 1: r = [1, 2], V = [0.5, 1], V(s') = [1, 4]."""
    args = dict(reward=torch.tensor([[1.0], [2.0]]), value=torch.tensor([[0.5], [1.0]]),
                next_value=torch.tensor([[1.0], [4.0]]), terminated=torch.zeros(2, 1, dtype=torch.bool),
                truncated=torch.zeros(2, 1, dtype=torch.bool))
    return {**args, **over}


@pytest.mark.parametrize("term,trunc,adv0", [(F, F, 1.0 + 0.4 * 3.0), (F, T_, 1.0), (T_, F, 0.5)])
def test_gae_values_and_argument_order(backend, term, trunc, adv0):
    a = _rollout(terminated=torch.tensor([[term], [F]]), truncated=torch.tensor([[trunc], [F]]))
    adv, ret = K.gae(a["reward"], a["value"], a["next_value"], a["terminated"], a["truncated"], 0.5, 0.8)
    # delta_1 = 2 + 0.5 * 4 - 1 = 3; delta_0 = 1 + 0.5 * 1 - 0.5 = 1 (0.5 when terminated); adv_0 adds 0.5 * 0.8 * adv_1
    torch.testing.assert_close(adv[:, 0], torch.tensor([adv0, 3.0]))
    torch.testing.assert_close(ret[:, 0], torch.tensor([adv0 + 0.5, 4.0]))


@pytest.mark.parametrize("term,trunc,g0", [(F, F, 1.0 + 0.5 * (0.2 * 1.0 + 0.8 * 4.0)), (F, T_, 1.5), (T_, F, 1.0)])
def test_lambda_returns_values_and_argument_order(backend, term, trunc, g0):
    a = _rollout(terminated=torch.tensor([[term], [F]]), truncated=torch.tensor([[trunc], [F]]))
    G = K.lambda_returns(a["reward"], a["next_value"], a["terminated"], a["truncated"], 0.5, 0.8)
    # G_1 = 2 + 0.5 * 4 (the last step bootstraps); G_0 = 1 + 0.5 ((1 - 0.8) V(s'_0) + 0.8 G_1)
    torch.testing.assert_close(G[:, 0], torch.tensor([g0, 4.0]))


def test_discount_cumsum_with_mask_lengths_or_neither(backend):
    x = torch.tensor([[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]])
    torch.testing.assert_close(K.discount_cumsum(x, 0.5), torch.tensor([[3.0, 3.0], [4.0, 4.0], [4.0, 4.0]]))
    mask = torch.tensor([[T_, T_], [F, T_], [T_, F]])
    torch.testing.assert_close(K.discount_cumsum(x, 0.5, mask=mask), torch.tensor([[1.0, 2.0], [0.0, 2.0], [4.0, 0.0]]))
    torch.testing.assert_close(K.discount_cumsum(x, 0.5, lengths=torch.tensor([1, 2])),
                               torch.tensor([[1.0, 2.0], [0.0, 2.0], [0.0, 0.0]]))


def test_time_major_checks():
    a = _rollout()
    with pytest.raises(ValueError, match=r"expected time-major \[T, N\] tensors, got shape \(2,\)"):
        K.gae(a["reward"][:, 0], a["value"], a["next_value"], a["terminated"], a["truncated"], 0.9, 0.9)
    with pytest.raises(ValueError, match=r"value has shape \(2, 2\), expected \(2, 1\)"):
        K.gae(a["reward"], torch.zeros(2, 2), a["next_value"], a["terminated"], a["truncated"], 0.9, 0.9)
    with pytest.raises(ValueError, match=r"truncated has shape \(1, 1\), expected \(2, 1\)"):
        K.gae(a["reward"], a["value"], a["next_value"], a["terminated"], a["truncated"][:1], 0.9, 0.9)
    with pytest.raises(ValueError, match="next_value is on meta, expected cpu"):
        K.gae(a["reward"], a["value"], a["next_value"].to("meta"), a["terminated"], a["truncated"], 0.9, 0.9)
    with pytest.raises(ValueError, match="terminated is on meta, expected cpu"):
        K.lambda_returns(a["reward"], a["next_value"], a["terminated"].to("meta"), a["truncated"], 0.9, 0.9)
    with pytest.raises(TypeError, match="reward must be a float tensor, got torch.int64"):
        K.gae(a["reward"].long(), a["value"], a["next_value"], a["terminated"], a["truncated"], 0.9, 0.9)
    with pytest.raises(TypeError, match="next_value must be a float tensor, got torch.int64"):
        K.lambda_returns(a["reward"], a["next_value"].long(), a["terminated"], a["truncated"], 0.9, 0.9)
    with pytest.raises(TypeError, match="truncated must be bool, integer or float, got torch.int16"):
        K.gae(a["reward"], a["value"], a["next_value"], a["terminated"], a["truncated"].to(torch.int16), 0.9, 0.9)
    with pytest.raises(TypeError, match="mask must be bool, integer or float, got torch.complex64"):
        K.discount_cumsum(a["reward"], 0.9, mask=torch.ones(2, 1, dtype=torch.complex64))
    # each op names the argument that is wrong
    with pytest.raises(ValueError, match=r"^terminated has shape \(1, 1\), expected \(2, 1\)$"):
        K.gae(a["reward"], a["value"], a["next_value"], a["terminated"][:1], a["truncated"], 0.9, 0.9)
    with pytest.raises(ValueError, match=r"^truncated has shape \(1, 1\), expected \(2, 1\)$"):
        K.lambda_returns(a["reward"], a["next_value"], a["terminated"], a["truncated"][:1], 0.9, 0.9)
    with pytest.raises(TypeError, match="^reward must be a float tensor, got torch.int64$"):
        K.lambda_returns(a["reward"].long(), a["next_value"], a["terminated"], a["truncated"], 0.9, 0.9)
    with pytest.raises(TypeError, match="^x must be a float tensor, got torch.int64$"):
        K.discount_cumsum(a["reward"].long(), 0.9)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int8, torch.int32, torch.int64, torch.float32])
def test_dones_of_every_accepted_dtype_mean_the_same(dtype):
    a = _rollout()
    term = torch.tensor([[1], [0]]).to(dtype)
    adv, _ = K.gae(a["reward"], a["value"], a["next_value"], term, torch.zeros(2, 1, dtype=dtype), 0.5, 0.8)
    torch.testing.assert_close(adv[:, 0], torch.tensor([0.5, 3.0]))
    G = K.lambda_returns(a["reward"], a["next_value"], term, torch.zeros(2, 1, dtype=dtype), 0.5, 0.8)
    torch.testing.assert_close(G[:, 0], torch.tensor([1.0, 4.0]))


def test_mixed_float_inputs_promote_to_the_widest(backend):
    a = _rollout()
    adv, ret = K.gae(a["reward"].double(), a["value"], a["next_value"].half(), a["terminated"], a["truncated"], 0.5, 0.8)
    assert adv.dtype == ret.dtype == torch.float64
    torch.testing.assert_close(adv[:, 0], torch.tensor([2.2, 3.0], dtype=torch.float64))
    adv, _ = K.gae(a["reward"], a["value"].double(), a["next_value"], a["terminated"], a["truncated"], 0.5, 0.8)
    assert adv.dtype == torch.float64
    adv, _ = K.gae(a["reward"], a["value"], a["next_value"].double(), a["terminated"], a["truncated"], 0.5, 0.8)
    assert adv.dtype == torch.float64
    G = K.lambda_returns(a["reward"].half(), a["next_value"].double(), a["terminated"], a["truncated"], 0.5, 0.8)
    assert G.dtype == torch.float64
    torch.testing.assert_close(G[:, 0], torch.tensor([2.7, 4.0], dtype=torch.float64))
    G = K.lambda_returns(a["reward"].double(), a["next_value"], a["terminated"], a["truncated"], 0.5, 0.8)
    assert G.dtype == torch.float64
    # an integer or tensor discount is read as a float
    adv, _ = K.gae(a["reward"], a["value"], a["next_value"], a["terminated"], a["truncated"], 1, torch.tensor(1.0))
    torch.testing.assert_close(adv[:, 0], torch.tensor([1.5 + 5.0, 5.0]))


def test_discount_cumsum_checks():
    x = torch.ones(3, 2)
    with pytest.raises(ValueError, match="^give mask or lengths, not both$"):
        K.discount_cumsum(x, 0.9, mask=torch.ones(3, 2, dtype=torch.bool), lengths=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"lengths must be \[N\] = \[2\], got \(3,\)"):
        K.discount_cumsum(x, 0.9, lengths=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"mask has shape \(3, 1\), expected \(3, 2\)"):
        K.discount_cumsum(x, 0.9, mask=torch.ones(3, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected time-major"):
        K.discount_cumsum(torch.ones(3), 0.9)
    torch.testing.assert_close(K.discount_cumsum(x, 1), torch.tensor([[3.0, 3.0], [2.0, 2.0], [1.0, 1.0]]))


X = torch.tensor([1.0, 2.0, 3.0, -1.0])
PTR = torch.tensor([0, 1, 1, 4])  # segments [1], [], [2, 3, -1]


def test_segment_reductions_by_hand(backend):
    torch.testing.assert_close(K.segment_sum(X, PTR), torch.tensor([1.0, 0.0, 4.0]))
    torch.testing.assert_close(K.segment_mean(X, PTR), torch.tensor([1.0, 0.0, 4.0 / 3.0]))
    torch.testing.assert_close(K.segment_max(X, PTR), torch.tensor([1.0, -math.inf, 3.0]))
    lse = math.log(math.exp(2.0) + math.exp(3.0) + math.exp(-1.0))
    torch.testing.assert_close(K.segment_logsumexp(X, PTR), torch.tensor([1.0, -math.inf, lse]))
    torch.testing.assert_close(K.segment_log_softmax(X, PTR), torch.tensor([0.0, 2.0 - lse, 3.0 - lse, -1.0 - lse]))
    torch.testing.assert_close(K.segment_sum(X, PTR.int()), torch.tensor([1.0, 0.0, 4.0]))  # int32 offsets


def test_segment_sample_draws_global_rows_with_the_softmax_frequencies(backend):
    logits = torch.tensor([0.0, -math.inf, math.log(3.0), -math.inf, -math.inf])
    ptr = torch.tensor([0, 1, 3, 3, 5])  # [0] / [-inf, log 3] / [] / [-inf, -inf]
    g = torch.Generator().manual_seed(0)
    assert K.segment_sample(logits, ptr, g).tolist() == [0, 2, -1, -1]
    two = torch.tensor([0.0, math.log(3.0)])
    many = K.segment_sample(two.repeat(400), torch.arange(0, 801, 2), g)  # 400 segments [0, log 3] in one call
    assert 0.65 < float((many % 2 == 1).float().mean()) < 0.85  # P(second row) = 3 / 4
    a = K.segment_sample(two.repeat(400), torch.arange(0, 801, 2), torch.Generator().manual_seed(5))
    torch.manual_seed(0)  # the draws come from the generator given, not from torch's global one
    b = K.segment_sample(two.repeat(400), torch.arange(0, 801, 2), torch.Generator().manual_seed(5))
    assert a.tolist() == b.tolist()
    with pytest.raises(ValueError, match=r"segment_sample takes 1-D logits \[M\], got shape \(2, 1\)"):
        K.segment_sample(two[:, None], torch.tensor([0, 2]))


def test_scatter_add_by_hand(backend):
    src = torch.tensor([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]])
    out = K.scatter_add(src, torch.tensor([2, 0, 2]), 4)
    torch.testing.assert_close(out, torch.tensor([[2.0, 20.0], [0.0, 0.0], [5.0, 50.0], [0.0, 0.0]]))
    torch.testing.assert_close(K.scatter_add(src[:, 0], torch.tensor([1, 1, 0]), torch.tensor(2)), torch.tensor([4.0, 3.0]))


@pytest.mark.parametrize("ptr,match", [
    (torch.tensor([[0, 4]]), "ptr must be 1-D integer offsets"),
    (torch.zeros(0, dtype=torch.int64), "ptr must be 1-D integer offsets with E \\+ 1 >= 1 entries"),
    (torch.tensor([0.0, 4.0]), "ptr must be 1-D integer offsets"),
    (torch.tensor([1, 4]), r"ptr must rise from 0 to M = 4"),
    (torch.tensor([0, 3]), r"ptr must rise from 0 to M = 4"),
    (torch.tensor([0, 3, 2, 4]), r"ptr must rise from 0 to M = 4, got \[0, 3, 2, 4\]\.\.\.$"),
    (torch.tensor([0, 1, 1, 1, 1, 1, 1, 1, 0, 4]), r"got \[0, 1, 1, 1, 1, 1, 1, 1\]\.\.\.$"),  # the first 8 offsets
    (torch.tensor([0, 4]).to("meta"), "ptr is on meta but x is on cpu"),
])
def test_segment_offsets_checks(ptr, match):
    with pytest.raises(ValueError, match=match):
        K.segment_sum(X, ptr)
    with pytest.raises(ValueError, match=match):
        K.segment_log_softmax(X, ptr)


def test_segment_x_checks_and_every_op_checks_its_offsets():
    for bad in (torch.tensor([1, 2]), torch.tensor(1.0)):
        with pytest.raises(ValueError, match="x must be a float tensor"):
            K.segment_sum(bad, torch.tensor([0, 2]))
    for op in (K.segment_sum, K.segment_mean, K.segment_max, K.segment_logsumexp, K.segment_log_softmax, K.segment_sample):
        with pytest.raises(ValueError, match="ptr must rise from 0 to M = 4"):
            op(X, torch.tensor([0, 3]))
    assert K.segment_sum(torch.zeros(0), torch.tensor([0])).shape == (0,)  # no segments: E + 1 = 1 offset


def test_scatter_add_checks():
    src = torch.ones(3)
    for index in (torch.zeros(3, 1, dtype=torch.int64), torch.zeros(3), torch.zeros(2, dtype=torch.int64)):
        with pytest.raises(ValueError, match=r"index must be 1-D integer \[K\] = \[3\]"):
            K.scatter_add(src, index, 2)
    with pytest.raises(TypeError, match="src must be a float tensor, got torch.int64"):
        K.scatter_add(torch.ones(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="index is on meta but src is on cpu"):
        K.scatter_add(src, torch.zeros(3, dtype=torch.int64).to("meta"), 2)


def test_csr_helpers():
    ptr = K.lengths_to_ptr(torch.tensor([2, 0, 1]))
    assert ptr.dtype == torch.int64 and ptr.tolist() == [0, 2, 2, 3]
    ids = K.ptr_to_segment_ids(torch.tensor([0, 2, 2, 3], dtype=torch.int32), 3)
    assert ids.dtype == torch.int64 and ids.tolist() == [0, 0, 2]


@pytest.mark.parametrize("name,call", [
    ("triton_segment", lambda: K.segment_sum(X, PTR)),
    ("triton_gae", lambda: K.gae(*_rollout().values(), 0.9, 0.9)),
])
def test_triton_modules_built_without_the_interpreter_refuse_cpu_tensors(monkeypatch, name, call):
    import importlib

    module = importlib.import_module(f"rlx.kernels.{name}")
    monkeypatch.setattr(module, "INTERPRETED", False)
    dispatch.set_backend("triton")
    try:
        with pytest.raises(RuntimeError, match=rf"^rlx.kernels.{name} cannot run on CPU tensors: triton was imported "
                                               r"without TRITON_INTERPRET=1; set it in the environment before starting "
                                               r"Python \(or before anything imports triton or tensordict\)$"):
            call()
    finally:
        dispatch.set_backend(None)
