"""Benchmark rlx.kernels against CleanRL-style loops, torchrl, PyG and plain torch, in one process.

    python scripts/bench_kernels.py [--device auto|cpu|cuda] [--threads N] [--rounds R]

Prints one JSON object per line: first the reference bandwidth (a large `copy_`, bytes read +
written over time, measured on each device used), then one object per case. For every
implementation: the min and median wall time over R interleaved rounds (each round calls every
contender once, so background load hits them alike; rounds drop to no fewer than 3 when a round
takes over BUDGET_S / R), effective GB/s (the bytes the op must read and write, over the min
time), the fraction of the measured copy bandwidth, and on CUDA the fraction of the theoretical
peak when torch exposes the memory clock. `ratios` are peer min time / rlx min time (> 1: rlx is
faster). On CPU each implementation also gets its min process CPU time (`cpu_ms_min`, summed over
the process's threads, not counting time spent descheduled) and `cpu_time_ratios` from it: on a
shared machine that is the steadier comparison. Every peer's result is checked against rlx
before timing; a mismatch aborts.

Cases: GAE [1024, 256] on CPU (the CPU target), GAE [2048, 4096], segment_log_softmax and
segment_sum over 1M rows / 64k segments, scatter_add of 1M edge messages onto 64k nodes. The
last four run on CUDA when available, else on CPU.

`--json` instead runs the segment-op ratio cases on CPU, one JSON object per case (see
scripts/_speed_json.py): segment_log_softmax forward, forward + backward, segment_logsumexp and
segment_sum at 10k rows / 1k segments, 100k / 8k and 1M / 64k (`--quick`: the smallest and the
largest, shorter repeats), against the fastest of the torch / PyG calls a user would write
(`peer_name`; every peer's median is in `peers`). Each repeat times `calls` calls of rlx and of
every peer (the order rotating from repeat to repeat) in process CPU time (one torch thread),
after checking each peer against rlx.

    OMP_NUM_THREADS=1 python scripts/bench_kernels.py --json [--quick] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_json import emit, ratio_line  # noqa: E402

import rlx.kernels as K  # noqa: E402

GAMMA, LAM = 0.99, 0.95
BUDGET_S = 60.0  # seconds of timing per case before rounds are cut (slow peers at large sizes)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fns: dict, device: str, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds per call of each fn over `rounds` interleaved rounds (after
    one warm-up call); fewer rounds (at least 3) when a round would take over BUDGET_S / rounds."""
    start = time.perf_counter()
    for fn in fns.values():
        fn()
    sync(device)
    one_round = time.perf_counter() - start
    rounds = max(3, min(rounds, int(BUDGET_S / max(one_round, 1e-9))))
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def copy_bandwidth(device: str, rounds: int) -> float:
    """Bytes/s of `dst.copy_(src)` on 256 MiB (read + write), the reference bandwidth."""
    src = torch.empty(64 << 20, device=device)  # 64M fp32 = 256 MiB
    dst = torch.empty_like(src)
    best = min(timed({"copy": lambda: dst.copy_(src)}, device, rounds)[0]["copy"])
    return 2 * src.numel() * 4 / best


def peak_bandwidth(device: str) -> float | None:
    """Theoretical DRAM bytes/s from the CUDA memory clock and bus width, if torch exposes them."""
    if device != "cuda":
        return None
    props = torch.cuda.get_device_properties(0)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    return 2 * clock_khz * 1e3 * bus_bits / 8 if clock_khz and bus_bits else None


def report(case: str, device: str, meta: dict, nbytes: int, fns: dict, rounds: int, ref: dict):
    """Time `fns` (the first is rlx) and print the case's JSON line."""
    times, cpu_times = timed(fns, device, rounds)
    impls = {}
    for name, ts in times.items():
        gbps = nbytes / min(ts) / 1e9
        impls[name] = {
            "ms_min": round(min(ts) * 1e3, 4),
            "ms_median": round(statistics.median(ts) * 1e3, 4),
            "gbps": round(gbps, 2),
            "frac_copy_bw": round(gbps * 1e9 / ref["copy"], 3),
            "frac_peak_bw": round(gbps * 1e9 / ref["peak"], 3) if ref["peak"] else None,
        }
        if device == "cpu":
            impls[name]["cpu_ms_min"] = round(min(cpu_times[name]) * 1e3, 4)

    def ratios(table):
        return {f"{name}/rlx": round(min(ts) / min(table["rlx"]), 2) for name, ts in table.items() if name != "rlx"}

    line = {"case": case, "device": device, **meta, "bytes": nbytes, "threads": torch.get_num_threads(),
            "rounds": len(times["rlx"]), "impls": impls, "ratios": ratios(times)}
    if device == "cpu":
        line["cpu_time_ratios"] = ratios(cpu_times)
    print(json.dumps(line), flush=True)


def check(name: str, got: torch.Tensor, want: torch.Tensor, atol: float = 1e-4) -> None:
    if not torch.allclose(got.float(), want.float(), atol=atol, rtol=1e-4):
        raise SystemExit(f"{name} disagrees with rlx: max abs diff {(got.float() - want.float()).abs().max()}")


def cleanrl_gae(reward, value, next_value, terminated, done):
    """CleanRL's PPO advantage loop (ppo.py), with rlx's terminated/truncated semantics."""
    adv = torch.zeros_like(reward)
    last = torch.zeros_like(reward[0])
    for t in reversed(range(reward.shape[0])):
        delta = reward[t] + GAMMA * next_value[t] * (1.0 - terminated[t]) - value[t]
        last = delta + GAMMA * LAM * (1.0 - done[t]) * last
        adv[t] = last
    return adv


def bench_gae(T: int, N: int, device: str, rounds: int, ref: dict) -> None:
    g = torch.Generator().manual_seed(0)
    reward, value, next_value = (torch.randn(T, N, generator=g).to(device) for _ in range(3))
    # Episodes of ~200 steps: terminations and time-limit truncations mixed.
    terminated = (torch.rand(T, N, generator=g) < 1 / 250).to(device)
    truncated = (torch.rand(T, N, generator=g) < 1 / 1000).to(device)
    done = terminated | truncated
    adv, _ = K.gae(reward, value, next_value, terminated, truncated, GAMMA, LAM)
    fns = {"rlx": lambda: K.gae(reward, value, next_value, terminated, truncated, GAMMA, LAM)}
    term_f, done_f = terminated.float(), done.float()
    check("cleanrl_loop", cleanrl_gae(reward, value, next_value, term_f, done_f), adv)
    fns["cleanrl_loop"] = lambda: cleanrl_gae(reward, value, next_value, term_f, done_f)
    try:
        from torchrl.objectives.value import functional as trl
    except ImportError:
        trl = None
    if trl is not None:
        # torchrl wants time at dim -2 and a trailing feature dim: our [T, N] passes as is (N as
        # features), its native [N, T, 1] layout is prepared outside the timer.
        native = [x.T.contiguous().unsqueeze(-1) for x in (value, next_value, reward, done, terminated)]
        peers = {
            "torchrl_gae_TN": lambda: trl.generalized_advantage_estimate(
                GAMMA, LAM, value, next_value, reward, done, terminated)[0],
            "torchrl_gae_NT1": lambda: trl.generalized_advantage_estimate(GAMMA, LAM, *native)[0].squeeze(-1).T,
            "torchrl_vec_gae_TN": lambda: trl.vec_generalized_advantage_estimate(
                GAMMA, LAM, value, next_value, reward, done, terminated)[0],
            "torchrl_vec_gae_NT1": lambda: trl.vec_generalized_advantage_estimate(
                GAMMA, LAM, *native)[0].squeeze(-1).T,
        }
        for name, fn in peers.items():
            check(name, fn(), adv)
        fns.update(peers)
    nbytes = T * N * (3 * 4 + 2 * 1 + 2 * 4)  # read r, v, nv (fp32), term, trunc (bool); write adv, ret
    report("gae", device, {"shape": [T, N], "dtype": "float32"}, nbytes, fns, rounds, ref)


def ragged_ptr(M: int, E: int, device: str) -> torch.Tensor:
    """Random CSR offsets: E segments of 1..2M/E - 1 rows (plus a few empty ones), summing to M."""
    g = torch.Generator().manual_seed(1)
    cuts = torch.randperm(M - 1, generator=g)[: E - 1].add_(1).sort().values
    ptr = torch.cat([torch.zeros(1, dtype=torch.int64), cuts, torch.tensor([M])])
    ptr[1:-1:997] = ptr[:-2:997]  # make every 997th segment empty
    return ptr.to(device)


def bench_segments(M: int, E: int, F: int, device: str, rounds: int, ref: dict) -> None:
    from torch_geometric.utils import scatter as pyg_scatter
    from torch_geometric.utils import softmax as pyg_softmax

    ptr = ragged_ptr(M, E, device)
    ids = K.ptr_to_segment_ids(ptr, M)
    x = torch.randn(M, generator=torch.Generator().manual_seed(2)).to(device)
    meta = {"rows": M, "segments": E, "dtype": "float32"}

    out = K.segment_log_softmax(x, ptr)
    peers = {
        "pyg_softmax_ptr": lambda: pyg_softmax(x, ptr=ptr),
        "pyg_softmax_index": lambda: pyg_softmax(x, ids, num_nodes=E),
    }
    for name, fn in peers.items():
        check(name, fn(), out.exp(), atol=1e-6)
    nbytes = M * 4 * 2 + ptr.numel() * 8  # read x, ptr; write out
    report("segment_log_softmax", device, meta, nbytes,
           {"rlx": lambda: K.segment_log_softmax(x, ptr), **peers}, rounds, ref)

    # With autograd, as a GFlowNet loss uses it: log-probs forward + backward. PyG has no log-softmax,
    # so its side is softmax(...).log() (what a PyG user would write).
    leaf = x.clone().requires_grad_()
    w = torch.randn(M, generator=torch.Generator().manual_seed(4)).to(device)
    grads = {}
    for name, fn in {"rlx": lambda t: K.segment_log_softmax(t, ptr),
                     "pyg_softmax_ptr_log": lambda t: pyg_softmax(t, ptr=ptr).log()}.items():
        leaf.grad = None
        (fn(leaf) * w).sum().backward()
        grads[name] = leaf.grad.clone()
    check("pyg_softmax_ptr_log grad", grads["pyg_softmax_ptr_log"], grads["rlx"], atol=1e-4)

    def fwd_bwd(fn):
        return lambda: (fn(leaf) * w).sum().backward()

    report("segment_log_softmax_fwd_bwd", device, meta, nbytes * 3,
           {"rlx": fwd_bwd(lambda t: K.segment_log_softmax(t, ptr)),
            "pyg_softmax_ptr_log": fwd_bwd(lambda t: pyg_softmax(t, ptr=ptr).log())}, rounds, ref)

    out = K.segment_sum(x, ptr)
    peers = {
        "pyg_scatter_sum": lambda: pyg_scatter(x, ids, 0, E, reduce="sum"),
        "torch_segment_reduce": lambda: torch.segment_reduce(x, "sum", offsets=ptr),
        "torch_index_add": lambda: x.new_zeros(E).index_add_(0, ids, x),
        "torch_scatter_reduce": lambda: x.new_zeros(E).scatter_reduce_(0, ids, x, "sum"),
    }
    for name, fn in peers.items():
        check(name, fn(), out)
    nbytes = M * 4 + ptr.numel() * 8 + E * 4
    report("segment_sum", device, meta, nbytes, {"rlx": lambda: K.segment_sum(x, ptr), **peers}, rounds, ref)

    g = torch.Generator().manual_seed(3)
    src = torch.randn(M, F, generator=g).to(device)  # one message per edge
    dst = torch.randint(0, E, (M,), generator=g).to(device)  # unsorted target nodes
    out = K.scatter_add(src, dst, E)
    dst_f = dst[:, None].expand(M, F)  # [M, F] index view for scatter_*
    peers = {
        "pyg_scatter_sum": lambda: pyg_scatter(src, dst, 0, E, reduce="sum"),
        "torch_index_add": lambda: src.new_zeros(E, F).index_add_(0, dst, src),
        "torch_scatter_add": lambda: src.new_zeros(E, F).scatter_add_(0, dst_f, src),
        "torch_scatter_reduce": lambda: src.new_zeros(E, F).scatter_reduce_(0, dst_f, src, "sum"),
    }
    for name, fn in peers.items():
        check(name, fn(), out)
    nbytes = M * F * 4 + M * 8 + E * F * 4
    report("scatter_add", device, {"edges": M, "nodes": E, "features": F, "dtype": "float32"}, nbytes,
           {"rlx": lambda: K.scatter_add(src, dst, E), **peers}, rounds, ref)


def _segment_reduce_log_softmax(x, ptr, lengths, M):
    """log-softmax per segment from torch.segment_reduce: max, repeat, exp, sum, log, repeat."""
    top = torch.segment_reduce(x.detach(), "max", offsets=ptr).repeat_interleave(lengths, output_size=M)
    shifted = x - top
    total = torch.segment_reduce(shifted.exp(), "sum", offsets=ptr)
    return shifted - total.log().repeat_interleave(lengths, output_size=M)


def _scatter_log_softmax(x, ids, E):
    """log-softmax per segment from scatter_reduce(amax) / index_add_ over segment ids."""
    top = x.new_full((E,), -math.inf).scatter_reduce_(0, ids, x.detach(), "amax")
    shifted = x - top[ids]
    return shifted - x.new_zeros(E).index_add_(0, ids, shifted.exp()).log()[ids]


def _segment_reduce_logsumexp(x, ptr, lengths, M):
    top = torch.segment_reduce(x, "max", offsets=ptr)
    return torch.segment_reduce((x - top.repeat_interleave(lengths, output_size=M)).exp(), "sum", offsets=ptr).log() + top


def _scatter_logsumexp(x, ids, E):
    top = x.new_full((E,), -math.inf).scatter_reduce_(0, ids, x, "amax")
    return x.new_zeros(E).index_add_(0, ids, (x - top[ids]).exp()).log() + top


def segment_cases(M: int, E: int) -> list[tuple[str, dict, float]]:
    """(case, {name: fn} with rlx first, atol) of the four segment ops on ragged segments (no
    empty ones: every peer formula is then defined)."""
    from torch_geometric.utils import scatter as pyg_scatter
    from torch_geometric.utils import softmax as pyg_softmax

    g = torch.Generator().manual_seed(1)
    cuts = torch.randperm(M - 1, generator=g)[: E - 1].add_(1).sort().values
    ptr = torch.cat([torch.zeros(1, dtype=torch.int64), cuts, torch.tensor([M])])
    lengths, ids = ptr.diff(), K.ptr_to_segment_ids(ptr, M)
    x = torch.randn(M, generator=g)
    leaf = x.clone().requires_grad_()
    w = torch.randn(M, generator=g)

    def fwd_bwd(fn):
        def run():
            leaf.grad = None
            (fn(leaf) * w).sum().backward()
            return leaf.grad
        return run

    size = f"{M // 1000}k_rows_{E // 1000}k_segments" if M < 10**6 else f"{M / 2**20:.0f}M_rows_{E // 1024}k_segments"
    return [
        (f"segment_log_softmax_{size}", {
            "rlx": lambda: K.segment_log_softmax(x, ptr),
            "pyg_softmax_ptr": lambda: pyg_softmax(x, ptr=ptr),  # softmax, no log: generous to PyG
            "pyg_softmax_index": lambda: pyg_softmax(x, ids, num_nodes=E),
            "torch_segment_reduce": lambda: _segment_reduce_log_softmax(x, ptr, lengths, M),
            "torch_scatter_reduce": lambda: _scatter_log_softmax(x, ids, E)}, 1e-4),
        (f"segment_log_softmax_fwd_bwd_{size}", {
            "rlx": fwd_bwd(lambda t: K.segment_log_softmax(t, ptr)),
            "pyg_softmax_ptr_log": fwd_bwd(lambda t: pyg_softmax(t, ptr=ptr).log()),
            "torch_segment_reduce": fwd_bwd(lambda t: _segment_reduce_log_softmax(t, ptr, lengths, M)),
            "torch_scatter_reduce": fwd_bwd(lambda t: _scatter_log_softmax(t, ids, E))}, 1e-4),
        (f"segment_logsumexp_{size}", {
            "rlx": lambda: K.segment_logsumexp(x, ptr),
            "torch_segment_reduce": lambda: _segment_reduce_logsumexp(x, ptr, lengths, M),
            "torch_scatter_reduce": lambda: _scatter_logsumexp(x, ids, E)}, 1e-4),
        (f"segment_sum_{size}", {
            "rlx": lambda: K.segment_sum(x, ptr),
            "torch_segment_reduce": lambda: torch.segment_reduce(x, "sum", offsets=ptr),
            "pyg_scatter_sum": lambda: pyg_scatter(x, ids, 0, E, reduce="sum"),
            "torch_index_add": lambda: x.new_zeros(E).index_add_(0, ids, x),
            "torch_scatter_add": lambda: x.new_zeros(E).scatter_add_(0, ids, x)}, 1e-4),
    ]


SOFTMAX_PEERS = ("pyg_softmax_ptr", "pyg_softmax_index")


def ratio_case(case: str, fns: dict, atol: float, repeats: int, budget_s: float) -> dict:
    """Check every peer against rlx, then `repeats` interleaved repeats of `calls` calls each;
    the peer of a repeat is the fastest peer in it."""
    want = fns["rlx"]().detach().clone()
    correct = True
    for name, fn in fns.items():
        got = fn().detach()
        if name in SOFTMAX_PEERS:  # they stop at the softmax; compared on the log of it
            got = got.log()
        correct &= bool(torch.allclose(got.float(), want.float(), atol=atol, rtol=1e-4))
    start = time.process_time()
    for fn in fns.values():
        fn()
    calls = max(1, int(budget_s / max(time.process_time() - start, 1e-6)))
    cpu = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:  # the order rotates: no one always first
            fn = fns[name]
            start = time.process_time()
            for _ in range(calls):
                fn()
            cpu[name].append((time.process_time() - start) / calls * 1e6)
    peers = {name: ts for name, ts in cpu.items() if name != "rlx"}
    best = [min(ts[r] for ts in peers.values()) for r in range(repeats)]
    line = ratio_line(case, cpu["rlx"], best, "us/call", correct)
    line["peer_name"] = min(peers, key=lambda n: statistics.median(peers[n]))
    line["peers"] = {name: round(statistics.median(ts), 2) for name, ts in peers.items()}
    line["calls"] = calls
    return line


def json_cases(quick: bool, repeats: int) -> None:
    sizes = [(10_000, 1_000), (1 << 20, 1 << 16)] if quick else [(10_000, 1_000), (100_000, 8_000), (1 << 20, 1 << 16)]
    for M, E in sizes:
        for case, fns, atol in segment_cases(M, E):
            emit(ratio_case(case, fns, atol, repeats, 0.05 if quick else 0.2), True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--only", choices=["gae", "segments"], default=None, help="run one family of cases")
    parser.add_argument("--json", action="store_true", help="the segment-op ratio cases, one JSON line each")
    parser.add_argument("--quick", action="store_true", help="with --json: two sizes, short repeats (< 3 min)")
    parser.add_argument("--repeats", type=int, default=7, help="with --json: interleaved repeats")
    args = parser.parse_args()
    if args.json or args.quick:
        torch.set_num_threads(1)
        json_cases(args.quick, max(args.repeats, 5))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    big = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    refs = {}
    for device in sorted({"cpu", big}):
        refs[device] = {"copy": copy_bandwidth(device, args.rounds), "peak": peak_bandwidth(device)}
        print(json.dumps({"case": "reference_bandwidth", "device": device,
                          "copy_gbps": round(refs[device]["copy"] / 1e9, 2),
                          "peak_gbps": refs[device]["peak"] and round(refs[device]["peak"] / 1e9, 1),
                          "threads": torch.get_num_threads(),
                          "name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}), flush=True)
    if args.only != "segments":
        bench_gae(1024, 256, "cpu", args.rounds, refs["cpu"])
        bench_gae(2048, 4096, big, args.rounds, refs[big])
    if args.only != "gae":
        bench_segments(1 << 20, 1 << 16, 16, big, args.rounds, refs[big])


if __name__ == "__main__":
    main()
