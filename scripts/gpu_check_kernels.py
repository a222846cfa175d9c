"""Kernel parts of scripts/gpu_check.py: (a) Triton vs torch twin on ragged inputs, (b) timings.

Each function returns a list of JSON-able dicts (one per line of the check's JSONL). Kernels are
reached only through the public `rlx.kernels` API and `set_backend`; "impl"/"ref" in a line say
which path actually ran (`dispatch.use_triton` at call time), so a check that compared the twin
with itself shows up as impl "torch" and fails.
"""

from __future__ import annotations

import math
import re
import statistics
import time

import torch

import rlx.kernels as K
from rlx.kernels import dispatch

GAMMA, LAM = 0.99, 0.95
INF = math.inf
REPS = 20  # timed rounds per bench case (the dry run lowers it)
SLEEP_CYCLES = 2_000_000  # ~1 ms of GPU spin queued before each timed call (torch.cuda._sleep)

# Vendor HBM/GDDR bandwidth in GB/s, matched in order against torch.cuda.get_device_name().
PEAK_GBPS = [
    (r"H100.*PCIe", 2000), (r"H100 NVL", 3900), (r"H100", 3350), (r"GH200", 4000), (r"H200", 4800),
    (r"A100.*80GB.*PCIe|A100 80GB PCIe", 1935), (r"A100.*80GB", 2039), (r"A100", 1555),
    (r"L40S", 864), (r"L40", 864), (r"L4\b", 300), (r"A10G", 600), (r"A10\b", 600),
    (r"RTX 4090", 1008), (r"RTX 3090", 936), (r"V100", 900), (r"T4\b", 320),
]


def peak_bandwidth(name: str | None) -> float | None:
    """Bytes/s of the device's memory by the vendor's datasheet, None when the name is unknown."""
    for pattern, gbps in PEAK_GBPS if name else []:
        if re.search(pattern, name):
            return gbps * 1e9
    return None


def run_as(backend: str, fn, *args, **kwargs):
    """(output, path): fn under `backend`, and which path ran ("triton"/"torch") for args[0]."""
    dispatch.set_backend(backend)
    try:
        return fn(*args, **kwargs), ("triton" if dispatch.use_triton(args[0]) else "torch")
    finally:
        dispatch.set_backend(None)


def compare(got, want, atol: float, rtol: float) -> tuple[bool, float]:
    """(close, max abs error over finite entries): same shape, dtype, NaN and +-inf pattern, and
    |got - want| <= atol + rtol |want| where finite. Tuples are compared element by element."""
    if isinstance(want, (tuple, list)):
        results = [compare(g, w, atol, rtol) for g, w in zip(got, want)]
        return all(ok for ok, _ in results), max(err for _, err in results)
    if got.shape != want.shape or got.dtype != want.dtype:
        return False, INF
    if got.dtype in (torch.int64, torch.int32, torch.bool):
        bad = int((got != want).sum())
        return bad == 0, float(bad)
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    if not torch.equal(torch.isnan(g), torch.isnan(w)) or not torch.equal(torch.isposinf(g), torch.isposinf(w)) \
            or not torch.equal(torch.isneginf(g), torch.isneginf(w)):
        return False, INF
    finite = torch.isfinite(w)
    if not bool(finite.any()):
        return True, 0.0
    diff = (g[finite] - w[finite]).abs()
    return bool((diff <= atol + rtol * w[finite].abs()).all()), float(diff.max())


def ragged(E: int, max_len: int, huge: int, F: int | None, dtype, device, seed: int):
    """x [M] or [M, F] and ptr: E segments of 0..max_len rows (the first one empty), one segment
    of `huge` rows, 20% -inf entries and one all -inf segment."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_len + 1, (E,), generator=g)
    lengths[0] = 0
    lengths[E // 2] = huge
    ptr = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    M = int(ptr[-1])
    x = torch.randn(M, *(() if F is None else (F,)), generator=g) * 3
    x[torch.rand(M, generator=g) < 0.2] = -INF
    e = int(torch.nonzero(lengths)[-1])
    x[ptr[e]:ptr[e + 1]] = -INF
    return x.to(dtype).to(device), ptr.to(device)


def rollout(T: int, N: int, dtype, device, seed: int):
    """[T, N] reward, value, next_value and bool dones: terminations and truncations mixed (some
    steps both), a done on the first and on the last step of some columns."""
    g = torch.Generator().manual_seed(seed)
    r, v, nv = (torch.randn(T, N, generator=g) for _ in range(3))
    term, trunc = torch.rand(T, N, generator=g) < 0.05, torch.rand(T, N, generator=g) < 0.02
    term[0, ::2] = True
    trunc[-1, 1::2] = True
    return [t.to(dtype).to(device) for t in (r, v, nv)] + [term.to(device), trunc.to(device)]


def _grad(fn, inputs, weight_seed=5):
    """Gradients of sum(fn(*inputs) * w) w.r.t. the float inputs that require grad."""
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    g = torch.Generator().manual_seed(weight_seed)
    loss = sum((o.float() * torch.randn(o.shape, generator=g).to(o.device)).where(torch.isfinite(o), 0.0).sum()
               for o in outs)
    loss.backward()
    return tuple(t.grad for t in leaves if t.is_floating_point())


def correctness_cases(device: str, tiny: bool):
    """(name, fn, args, kwargs, atol, rtol) for every public op, fp32 and bf16 where supported."""
    seg = {"E": 24, "max_len": 6, "huge": 2500} if tiny else {"E": 4096, "max_len": 64, "huge": 300_000}
    T, N = (70, 16) if tiny else (1000, 512)
    cases = []
    for dtype, tol in [(torch.float32, (1e-4, 1e-4)), (torch.bfloat16, (0.1, 2e-2))]:
        tag = str(dtype).split(".")[1]
        if tiny and dtype != torch.float32:  # the interpreter is slow: bf16 dry run on two ops only
            r, v, nv, term, trunc = rollout(T, N, dtype, device, seed=1)
            x, ptr = ragged(**seg, F=None, dtype=dtype, device=device, seed=3)
            cases += [(f"gae/{tag}", K.gae, (r, v, nv, term, trunc, GAMMA, LAM), {}, *tol),
                      (f"segment_log_softmax/M/{tag}", K.segment_log_softmax, (x, ptr), {}, *tol)]
            continue
        r, v, nv, term, trunc = rollout(T, N, dtype, device, seed=1)
        lengths = torch.randint(0, T + 1, (N,), generator=torch.Generator().manual_seed(2)).to(device)
        cases += [
            (f"gae/{tag}", K.gae, (r, v, nv, term, trunc, GAMMA, LAM), {}, *tol),
            (f"lambda_returns/{tag}", K.lambda_returns, (r, nv, term, trunc, GAMMA, LAM), {}, *tol),
            (f"discount_cumsum/{tag}", K.discount_cumsum, (r, GAMMA), {}, *tol),
            (f"discount_cumsum_lengths/{tag}", K.discount_cumsum, (r, GAMMA), {"lengths": lengths}, *tol),
            (f"discount_cumsum_mask/{tag}", K.discount_cumsum, (r, GAMMA), {"mask": ~trunc}, *tol),
        ]
        for F in (None, 4):
            x, ptr = ragged(**seg, F=F, dtype=dtype, device=device, seed=3)
            finite = torch.where(torch.isinf(x), 0.0, x)
            shape = "M" if F is None else f"Mx{F}"
            cases += [
                (f"segment_sum/{shape}/{tag}", K.segment_sum, (finite, ptr), {}, *tol),
                (f"segment_mean/{shape}/{tag}", K.segment_mean, (finite, ptr), {}, *tol),
                (f"segment_max/{shape}/{tag}", K.segment_max, (x, ptr), {}, *tol),
                (f"segment_logsumexp/{shape}/{tag}", K.segment_logsumexp, (x, ptr), {}, *tol),
                (f"segment_log_softmax/{shape}/{tag}", K.segment_log_softmax, (x, ptr), {}, *tol),
            ]
        g = torch.Generator().manual_seed(4)
        K_rows, nodes = (600, 50) if tiny else (1 << 20, 1 << 16)
        src = torch.randn(K_rows, 8, generator=g).to(dtype).to(device)
        index = torch.randint(0, nodes, (K_rows,), generator=g).to(device)
        cases.append((f"scatter_add/{tag}", K.scatter_add, (src, index, nodes), {}, *tol))
    x, ptr = ragged(**seg, F=None, dtype=torch.float32, device=device, seed=6)
    gen = torch.Generator(device=device)

    def sample(logits, ptr_):
        return K.segment_sample(logits, ptr_, gen.manual_seed(7))

    cases.append(("segment_sample/float32", sample, (x, ptr), {}, 0.0, 0.0))
    r, v, nv, term, trunc = rollout(T, N, torch.float32, device, seed=8)
    cases += [
        ("gae_grad/float32", lambda *a: _grad(lambda r_, v_, nv_: K.gae(r_, v_, nv_, term, trunc, GAMMA, LAM), a),
         (r, v, nv), {}, 1e-4, 1e-4),
        ("segment_log_softmax_grad/float32", lambda x_, p_: _grad(lambda t: K.segment_log_softmax(t, p_), (x_,)),
         (x, ptr), {}, 1e-4, 1e-4),
    ]
    return cases


def check_kernels(device: str, tiny: bool, deadline: float) -> list[dict]:
    """Triton vs twin for every case; a negative control proves the comparison can fail."""
    lines = []
    for name, fn, args, kwargs, atol, rtol in correctness_cases(device, tiny):
        if time.monotonic() > deadline:
            lines.append({"case": f"kernel/{name}", "device": device, "skipped": "time cap"})
            continue
        t0 = time.perf_counter()
        try:
            got, impl = run_as("triton", fn, *args, **kwargs)
            want, ref = run_as("torch", fn, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 (a kernel that fails to compile or launch is a finding, not a crash)
            lines.append({"case": f"kernel/{name}", "device": device, "pass": False, "error": repr(err)[:300]})
            continue
        ok, err = compare(got, want, atol, rtol)
        rows = int(args[0].shape[0])
        lines.append({"case": f"kernel/{name}", "device": device, "impl": impl, "ref": ref, "rows": rows,
                      "max_abs_err": err, "atol": atol, "rtol": rtol, "seconds": round(time.perf_counter() - t0, 3),
                      "pass": ok and impl == "triton" and ref == "torch"})
    x, ptr = ragged(E=8, max_len=4, huge=3, F=None, dtype=torch.float32, device=device, seed=9)
    want, _ = run_as("torch", K.segment_logsumexp, x, ptr)
    got, _ = run_as("triton", K.segment_logsumexp, x + 1e-2, ptr)
    flagged = not compare(got, want, 1e-4, 1e-4)[0]
    lines.append({"case": "kernel/negative_control", "device": device, "detail": "x + 1e-2 must not match x",
                  "pass": flagged})
    return lines


# ----------------------------------------------------------------------------- timing


def time_calls(fns: dict, device: str, reps: int, budget_s: float) -> dict[str, list[float]]:
    """Seconds per call of each fn: 3 warm-up calls each, then `reps` interleaved rounds (fewer,
    at least 3, if a round would overrun `budget_s`). CUDA calls are timed with CUDA events
    around the call, after a 256 MiB write that evicts the L2 and a ~1 ms GPU spin that keeps the
    GPU busy while Python issues the call (a call whose host work outlasts it, like a Python loop
    of small kernels, is still charged for it); CPU calls with perf_counter."""
    start = time.perf_counter()
    for _ in range(3):
        for fn in fns.values():
            fn()
    if device == "cuda":
        torch.cuda.synchronize()
    per_round = (time.perf_counter() - start) / 3
    reps = max(3, min(reps, int(budget_s / max(per_round, 1e-9))))
    times = {name: [] for name in fns}
    flush = torch.empty(64 << 20, device=device) if device == "cuda" else None  # 256 MiB > L2
    for _ in range(reps):
        for name, fn in fns.items():
            if device == "cuda":
                flush.zero_()  # inputs come from HBM, not from L2 left warm by the last call
                torch.cuda._sleep(SLEEP_CYCLES)  # the GPU waits while Python launches fn: host overhead hidden
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                fn()
                end.record()
                end.synchronize()
                times[name].append(begin.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def copy_bandwidth(device: str, numel: int) -> float:
    """Bytes/s of dst.copy_(src) on `numel` fp32 (bytes read + written): the reachable ceiling."""
    src = torch.empty(numel, device=device)
    dst = torch.empty_like(src)
    return 2 * numel * 4 / min(time_calls({"copy": lambda: dst.copy_(src)}, device, 10, 5.0)["copy"])


def bench_line(case: str, device: str, meta: dict, nbytes: int, formula: str, fns: dict, refs: dict,
               budget_s: float, mismatches: dict) -> dict:
    """Time fns (the first is "rlx") and build the case's line: per impl min/median ms, GB/s over
    the min, % of the datasheet peak (null if unknown) and of the measured copy bandwidth."""
    times = time_calls(fns, device, REPS, budget_s)
    impls = {}
    for name, ts in times.items():
        gbps = nbytes / min(ts) / 1e9
        impls[name] = {"ms_min": round(min(ts) * 1e3, 4), "ms_median": round(statistics.median(ts) * 1e3, 4),
                       "gbps": round(gbps, 2),
                       "pct_peak": round(100 * gbps * 1e9 / refs["peak"], 1) if refs["peak"] else None,
                       "pct_copy": round(100 * gbps * 1e9 / refs["copy"], 1)}
    rlx = min(times["rlx"])
    return {"case": case, "device": device, **meta, "bytes": nbytes, "bytes_formula": formula,
            "rounds": len(times["rlx"]), "timer": "cuda_events" if device == "cuda" else "perf_counter", "impls": impls,
            "speedup_vs": {name: round(min(ts) / rlx, 2) for name, ts in times.items() if name != "rlx"},
            "peer_mismatch": mismatches, "pass": not mismatches}


def _checked(peers: dict, want, atol: float) -> tuple[dict, dict]:
    """peers: name -> (fn, pick) with pick(fn()) comparable to `want`. Returns the matching fns
    (to be timed) and {name: max error} for the peers that disagree (not timed)."""
    ok, bad = {}, {}
    for name, (fn, pick) in peers.items():
        same, err = compare(pick(fn()), want, atol, 1e-4)
        if same:
            ok[name] = fn
        else:
            bad[name] = err
    return ok, bad


def _same(out):
    return out


def _twin(fn):
    """fn under the torch twin (on the same device): the baseline of every kernel."""

    def call():
        dispatch.set_backend("torch")
        try:
            return fn()
        finally:
            dispatch.set_backend(None)

    return call


def optional(module: str):
    """The module, or None when the optional peer is not installed."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        return None


def skipped_peer(case: str, device: str, package: str) -> dict:
    return {"case": case, "device": device, "skipped": f"{package} not installed"}


def bench_time_ops(T: int, N: int, dtype, device: str, refs: dict, budget_s: float) -> list[dict]:
    """gae (vs twin and torchrl), lambda_returns and discount_cumsum (vs twin) on [T, N]."""
    r, v, nv, term, trunc = rollout(T, N, dtype, device, seed=10)
    lengths = torch.randint(0, T + 1, (N,), generator=torch.Generator().manual_seed(11)).to(device)
    fb, tag = r.element_size(), str(dtype).split(".")[1]
    meta, lines = {"shape": [T, N], "dtype": tag}, []
    tol = 1e-3 if dtype == torch.float32 else 0.1

    def gae():
        return K.gae(r, v, nv, term, trunc, GAMMA, LAM)

    def first(out):  # peers are compared on the advantages
        return out[0]

    peers = {"torch_twin": (_twin(gae), first)}
    trl = optional("torchrl.objectives.value.functional")
    if trl is None:
        lines.append(skipped_peer(f"bench/gae/{T}x{N}/{tag}/torchrl", device, "torchrl"))
    elif dtype == torch.float32:
        done = term | trunc
        # torchrl wants time at dim -2: [T, N] passes as is (N as its feature dim); returns (adv, target)
        for name, f in [("torchrl_gae", trl.generalized_advantage_estimate),
                        ("torchrl_vec_gae", trl.vec_generalized_advantage_estimate)]:
            peers[name] = (lambda f=f: f(GAMMA, LAM, v, nv, r, done, term), first)
    fns, bad = _checked(peers, gae()[0], tol)
    lines.append(bench_line(f"bench/gae/{T}x{N}/{tag}", device, meta, T * N * (5 * fb + 2),
                            f"T*N*(3*{fb} read r,v,nv + 2*1 read bool term,trunc + 2*{fb} write adv,ret)",
                            {"rlx": gae, **fns}, refs, budget_s, bad))

    def lam():
        return K.lambda_returns(r, nv, term, trunc, GAMMA, LAM)

    fns, bad = _checked({"torch_twin": (_twin(lam), _same)}, lam(), tol)
    lines.append(bench_line(f"bench/lambda_returns/{T}x{N}/{tag}", device, meta, T * N * (3 * fb + 2),
                            f"T*N*(2*{fb} read r,nv + 2*1 read term,trunc + {fb} write ret)",
                            {"rlx": lam, **fns}, refs, budget_s, bad))

    def dcs():
        return K.discount_cumsum(r, GAMMA, lengths=lengths)

    fns, bad = _checked({"torch_twin": (_twin(dcs), _same)}, dcs(), tol)
    lines.append(bench_line(f"bench/discount_cumsum/{T}x{N}/{tag}", device, meta, T * N * 2 * fb + N * 8,
                            f"T*N*2*{fb} (read x, write y) + N*8 (lengths)",
                            {"rlx": dcs, **fns}, refs, budget_s, bad))
    return lines


def bench_ptr(M: int, E: int, device: str) -> torch.Tensor:
    """E random segments summing to M rows, every 97th one empty."""
    g = torch.Generator().manual_seed(12)
    cuts = torch.randperm(M - 1, generator=g)[: E - 1].add_(1).sort().values
    ptr = torch.cat([torch.zeros(1, dtype=torch.int64), cuts, torch.tensor([M])])
    ptr[1:-1:97] = ptr[:-2:97]
    return ptr.to(device)


def bench_scatter_add(M: int, E: int, F: int, device: str, refs: dict, budget_s: float, pyg) -> dict:
    """scatter_add of M unsorted [F] messages onto E nodes vs the twin, index_add_ and PyG."""
    g = torch.Generator().manual_seed(14)
    src, dst = torch.randn(M, F, generator=g).to(device), torch.randint(0, E, (M,), generator=g).to(device)

    def fn():
        return K.scatter_add(src, dst, E)

    peers = {"torch_twin": (_twin(fn), _same),
             "torch_index_add": (lambda: src.new_zeros(E, F).index_add_(0, dst, src), _same)}
    if pyg is not None:
        peers["pyg_scatter_sum"] = (lambda: pyg.scatter(src, dst, 0, E, reduce="sum"), _same)
    fns, bad = _checked(peers, fn(), 1e-3)
    return bench_line(f"bench/scatter_add/{M}x{F}to{E}", device, {"edges": M, "nodes": E, "features": F,
                                                                 "dtype": "float32"},
                      M * F * 4 + M * 8 + E * F * 4,
                      "K*F*4 read src + K*8 read index + E*F*4 write out (atomics' reads not counted)",
                      {"rlx": fn, **fns}, refs, budget_s, bad)


def segment_op(op: str, x: torch.Tensor, ptr: torch.Tensor):
    """A no-argument call of the public op on (x, ptr); segment_sample reseeds its generator."""
    if op == "segment_sample":
        gen = torch.Generator(device=x.device)
        return lambda: K.segment_sample(x, ptr, gen.manual_seed(15))
    return lambda: getattr(K, op)(x, ptr)


def segment_peers(op: str, x, ptr, ids, E: int, pyg) -> tuple[dict, object]:
    """(peers as name -> (fn, pick), what to compare pick(output) with, from rlx's output)."""
    nonempty = ptr.diff() > 0
    if pyg is not None and op == "segment_log_softmax":
        return ({"pyg_softmax_ptr": (lambda: pyg.softmax(x, ptr=ptr), _same),
                 "pyg_softmax_index": (lambda: pyg.softmax(x, ids, num_nodes=E), _same)}, torch.exp)
    peers = {}
    reduce = op.split("_")[1]
    if pyg is not None and op in ("segment_sum", "segment_mean", "segment_max"):
        peers[f"pyg_scatter_{reduce}"] = (lambda: pyg.scatter(x, ids, 0, E, reduce=reduce), lambda o: o[nonempty])
    if op in ("segment_sum", "segment_max"):
        peers[f"torch_segment_reduce_{reduce}"] = (lambda: torch.segment_reduce(x, reduce, offsets=ptr),
                                                   lambda o: o[nonempty])
    return peers, lambda out: out[nonempty]


SEGMENT_BYTES = {  # op -> (bytes(M, E), formula)
    "segment_log_softmax": (lambda M, E: 2 * M * 4 + (E + 1) * 8, "M*4 read x + (E+1)*8 read ptr + M*4 write out"),
    "segment_sample": (lambda M, E: M * 4 + (E + 1) * 8 + E * 8,
                       "M*4 read logits + (E+1)*8 read ptr + E*8 write idx (the uniform noise not counted)"),
}
REDUCE_BYTES = (lambda M, E: M * 4 + (E + 1) * 8 + E * 4, "M*4 read x + (E+1)*8 read ptr + E*4 write out")


def bench_segment_ops(M: int, E: int, device: str, refs: dict, budget_s: float, ops: tuple) -> list[dict]:
    """The segment ops over M rows / E segments (fp32, 1-D; every 97th segment empty) and
    scatter_add of M [16] messages onto E nodes; peers: the twin, PyG's softmax and scatter,
    torch.segment_reduce / index_add_."""
    ptr = bench_ptr(M, E, device)
    ids = K.ptr_to_segment_ids(ptr, M)
    x = torch.randn(M, generator=torch.Generator().manual_seed(13)).to(device)
    pyg = optional("torch_geometric.utils")
    lines = [] if pyg is not None else [skipped_peer(f"bench/segment/{M}r{E}s/pyg", device, "torch_geometric")]
    for op in ops:
        if op == "scatter_add":
            lines.append(bench_scatter_add(M, E, 16, device, refs, budget_s, pyg))
            continue
        fn = segment_op(op, x, ptr)
        want = fn()
        fns, bad = _checked({"torch_twin": (_twin(fn), _same)}, want, 1e-4)
        peers, pick_want = segment_peers(op, x, ptr, ids, E, pyg)
        more, more_bad = _checked(peers, pick_want(want), 1e-6 if op == "segment_log_softmax" else 1e-4)
        nbytes, formula = SEGMENT_BYTES.get(op, REDUCE_BYTES)
        lines.append(bench_line(f"bench/{op}/{M}r{E}s", device, {"rows": M, "segments": E, "dtype": "float32"},
                                nbytes(M, E), formula, {"rlx": fn, **fns, **more}, refs, budget_s,
                                {**bad, **more_bad}))
    return lines
