"""CLI start-up: `python -m rlx.train --help` and a one-line config error (a misspelt key) against
`python -c "import torch"` (the peer: what any torch program pays before its first line), each a
fresh interpreter, interleaved (torch, help, error, torch, help, ...), one thread.

Time is the child's CPU time (user + sys from `os.wait4`), steadier than wall time on a shared
machine; the wall times are printed too. Correctness first: `--help` exits 0 and lists the
algorithms, the misspelt key exits 2 with one `rlx.train: error: unknown key` line. `ratio` is
peer / rlx (> 1: rlx answers faster than torch imports).

    python scripts/bench_cli.py [--repeats 10] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = [sys.executable, "-c", "import torch"]
CASES = {"cli_help": ["--help"], "cli_config_error": ["algo.lrr=0.1"]}


def run_child(cmd: list[str]) -> tuple[float, float, int, str, str]:
    """(cpu s, wall s, exit code, stdout, stderr); the CPU time is this child's, from wait4."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    start = time.perf_counter()
    pid = os.posix_spawn(cmd[0], cmd, env, file_actions=[(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)])
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r) as f_out, os.fdopen(err_r) as f_err:
        out, err = f_out.read(), f_err.read()  # outputs are small: reading one then the other cannot block
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    return usage.ru_utime + usage.ru_stime, wall, os.waitstatus_to_exitcode(status), out, err


def check(case: str, code: int, out: str, err: str) -> bool:
    if case == "cli_help":
        return code == 0 and "algorithms (algo=...)" in out and " ppo " in out and " cppo " in out
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and lines[0].startswith("rlx.train: error: unknown key 'algo.lrr'")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", action="store_true", help="only the JSON lines (one per case)")
    p.add_argument("--quick", action="store_true", help="5 repeats")
    args = p.parse_args()
    repeats = 5 if args.quick else args.repeats
    load = round(os.getloadavg()[0], 2)
    rlx_cmd = {case: [sys.executable, "-m", "rlx.train", *argv] for case, argv in CASES.items()}
    correct = {}
    for case, cmd in rlx_cmd.items():  # correctness first
        _, _, code, out, err = run_child(cmd)
        correct[case] = check(case, code, out, err)
    cpu = {k: [] for k in ["peer", *CASES]}
    wall = {k: [] for k in cpu}
    for _ in range(repeats):
        for key in cpu:
            c, w, code, _, _ = run_child(PEER if key == "peer" else rlx_cmd[key])
            cpu[key].append(c)
            wall[key].append(w)
    for case in CASES:
        ratios = [a / b for a, b in zip(cpu["peer"], cpu[case])]
        wall_ratios = [a / b for a, b in zip(wall["peer"], wall[case])]
        row = {"case": case, "rlx": round(statistics.median(cpu[case]), 3), "peer": round(statistics.median(cpu["peer"]), 3),
               "unit": "s CPU per invocation (peer: python -c 'import torch')",
               "ratio": round(statistics.median(ratios), 3), "repeats": repeats, "min": round(min(ratios), 3),
               "median": round(statistics.median(ratios), 3), "max": round(max(ratios), 3), "load": load, "threads": 1,
               "correct": correct[case], "wall_rlx": round(statistics.median(wall[case]), 3),
               "wall_peer": round(statistics.median(wall["peer"]), 3), "wall_ratio": round(statistics.median(wall_ratios), 3),
               "load_end": round(os.getloadavg()[0], 2)}
        print(json.dumps(row))
        if not args.json:
            print(f"  {case}: rlx {row['rlx']} s CPU ({row['wall_rlx']} s wall), import torch {row['peer']} s CPU "
                  f"({row['wall_peer']} s wall): {row['ratio']}x CPU, {row['wall_ratio']}x wall", file=sys.stderr)
    return 0 if all(correct.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
