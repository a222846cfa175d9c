"""GAE at four rollout sizes T x N: `rlx.kernels.gae` vs torchrl's `vec_generalized_advantage_estimate`
and `generalized_advantage_estimate` (the fastest of the two functions in either layout, our
[T, N] as is or its native [N, T, 1] prepared outside the timer, per size) and a CleanRL-style loop over T. One torch thread, process CPU time per call, interleaved
(every repeat times rlx then each peer, `--calls` calls each), results checked against rlx first.
Prints one line per size and peer (`--json`: one JSON object per case, scripts/_speed_json.py).

    OMP_NUM_THREADS=1 python scripts/bench_gae.py [--repeats 7] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_json import emit, ratio_line  # noqa: E402
from bench_kernels import GAMMA, LAM, cleanrl_gae  # noqa: E402

import rlx.kernels as K  # noqa: E402

SIZES = [(128, 8), (256, 64), (1024, 256), (2048, 1024)]  # T x N: 1k, 16k, 262k, 2M elements


def inputs(T: int, N: int):
    g = torch.Generator().manual_seed(0)
    reward, value, next_value = (torch.randn(T, N, generator=g) for _ in range(3))
    terminated = torch.rand(T, N, generator=g) < 1 / 250  # episodes of ~200 steps, both kinds of end
    truncated = torch.rand(T, N, generator=g) < 1 / 1000
    return reward, value, next_value, terminated, truncated


def cpu_us(fn, calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        fn()
    return 1e6 * (time.process_time() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="one JSON line per case")
    parser.add_argument("--quick", action="store_true", help="5 repeats, fewer calls, the three smaller sizes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from torchrl.objectives.value.functional import generalized_advantage_estimate as loop_gae
    from torchrl.objectives.value.functional import vec_generalized_advantage_estimate as vec_gae

    repeats = 5 if args.quick else args.repeats
    for T, N in SIZES[:3] if args.quick else SIZES:
        reward, value, next_value, terminated, truncated = inputs(T, N)
        done = terminated | truncated
        want = K.gae(reward, value, next_value, terminated, truncated, GAMMA, LAM)[0]
        native = [x.T.contiguous().unsqueeze(-1) for x in (value, next_value, reward, done, terminated)]
        term_f, done_f = terminated.float(), done.float()
        peers = {
            "torchrl": {  # its fastest of two functions x two layouts, per size
                "vec_TN": lambda: vec_gae(GAMMA, LAM, value, next_value, reward, done, terminated)[0],
                "vec_NT1": lambda: vec_gae(GAMMA, LAM, *native)[0].squeeze(-1).T,
                "loop_TN": lambda: loop_gae(GAMMA, LAM, value, next_value, reward, done, terminated)[0],
                "loop_NT1": lambda: loop_gae(GAMMA, LAM, *native)[0].squeeze(-1).T},
            "cleanrl_loop": {"TN": lambda: cleanrl_gae(reward, value, next_value, term_f, done_f)},
        }
        ours = lambda: K.gae(reward, value, next_value, terminated, truncated, GAMMA, LAM)  # noqa: E731
        budget = max(int(1e5 / (T * N)), 1) if args.quick else max(int(3e5 / (T * N)), 2)  # calls per timing
        for name, layouts in peers.items():
            correct = all(torch.allclose(fn().float(), want, atol=1e-4, rtol=1e-4) for fn in layouts.values())
            calls = max(budget // 10, 1) if name == "cleanrl_loop" else budget
            mine, theirs = [], []
            cpu_us(ours, calls), [cpu_us(fn, calls) for fn in layouts.values()]  # warm-up
            for _ in range(repeats):
                mine.append(cpu_us(ours, calls))
                theirs.append(min(cpu_us(fn, calls) for fn in layouts.values()))
            emit(ratio_line(f"gae_{T}x{N}_vs_{name}", mine, theirs, "us/call", correct), args.json)


if __name__ == "__main__":
    main()
