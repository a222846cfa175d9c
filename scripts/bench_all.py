"""Every rlx-vs-peer ratio benchmark, one after the other, one JSON line per case.

Runs each `scripts/bench_<name>.py --json --quick` (`--full`: without `--quick`) in its own
process with one torch thread (`OMP_NUM_THREADS=1`), never two at a time. A bench prints one
JSON object per case with at least these keys (the contract every bench_*.py follows):

    case, unit       the case name; what rlx and peer measure
    rlx, peer        each side's median over the repeats, in `unit`
    ratio            the median per-repeat ratio, oriented so that > 1 means rlx is better
    repeats          interleaved repeats; min, median, max: of the per-repeat ratios
    load, threads    1-minute load average at the start; torch threads per side
    correct          rlx's result matched the peer's (checked before any timing)

Lines that are not such objects (progress, breakdowns) are passed over. Each case is printed
again with `"bench": <name>` added (and written to `--out file.jsonl`). A bench that exits
non-zero, prints no case or leaves a key out gives a row with `"error"` and `"correct": false`.
Exit code 1 when any row is not correct, else 0.

    python scripts/bench_all.py [--only cli ppo ...] [--full] [--out results.jsonl]
    python scripts/bench_all.py --bench path/to/bench_x.py     # any script that follows the contract
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ("cli", "ppo", "offline", "sac", "kernels", "gflownet")
KEYS = ("case", "rlx", "peer", "unit", "ratio", "repeats", "min", "median", "max", "load", "threads", "correct")


def cases(stdout: str) -> list[dict]:
    rows = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "case" in row:
            rows.append(row)
    return rows


def run_bench(name: str, script: Path, quick: bool, timeout: float) -> list[dict]:
    """The rows of one bench (its cases, or one error row)."""
    cmd = [sys.executable, str(script), "--json", *(["--quick"] if quick else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return [{"bench": name, "case": name, "correct": False, "error": f"timed out after {timeout:.0f} s"}]
    rows = cases(proc.stdout)
    tail = " | ".join(proc.stderr.strip().splitlines()[-2:])[-300:]
    if proc.returncode != 0 and not rows:
        return [{"bench": name, "case": name, "correct": False, "error": f"exit code {proc.returncode}: {tail}"}]
    if not any(r["case"] != "settings" for r in rows):
        return [{"bench": name, **r} for r in rows] + [{"bench": name, "case": name, "correct": False,
                                                        "error": "printed no case"}]
    out = []
    for row in rows:
        missing = [k for k in KEYS if k not in row]
        row = {"bench": name, **row}
        if row["case"] == "settings":  # a bench's matched-settings record: printed and kept, not a ratio case
            out.append(row)
            continue
        if missing:
            row.update(correct=False, error=f"missing keys {', '.join(missing)}")
        elif row["correct"] is not True:
            row["correct"] = False
        out.append(row)
    if proc.returncode != 0:
        out.append({"bench": name, "case": name, "correct": False, "error": f"exit code {proc.returncode}: {tail}"})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=BENCHES, default=None, help="run these benches only")
    p.add_argument("--bench", nargs="+", type=Path, default=None, help="run these scripts instead of the built-in list")
    p.add_argument("--full", action="store_true", help="each bench's full settings (no --quick)")
    p.add_argument("--out", type=Path, default=None, help="also write the rows to this .jsonl file")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per bench")
    args = p.parse_args(argv)
    if args.bench:
        missing = [str(s) for s in args.bench if not s.is_file()]
        if missing:
            p.error(f"no such bench script: {', '.join(missing)}")
        plan = [(s.stem.removeprefix("bench_"), s) for s in args.bench]
    else:
        plan = [(name, HERE / f"bench_{name}.py") for name in (args.only or BENCHES)]
    rows = []
    for name, script in plan:
        for row in run_bench(name, script, not args.full, args.timeout):
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out is not None:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = [f"{r['bench']}/{r['case']}" for r in rows if r["case"] != "settings" and not r["correct"]]
    if bad:
        print(f"bench_all: {len(bad)} of {len(rows)} rows failed: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
