"""The one-JSON-line-per-case record the ratio benchmarks print with `--json` (read by
scripts/bench_all.py): {"case", "rlx", "peer", "unit", "ratio", "repeats", "min", "median", "max",
"load", "threads", "correct"}. `rlx` / `peer` are medians over the repeats of a per-unit cost
(unit "us/call", lower is better) or a rate (unit "steps/s", higher is better); `ratio` is the
median of the per-repeat ratios (> 1: rlx is faster) and min / median / max their range."""

from __future__ import annotations

import json
import os
import statistics

import torch


def load() -> float:
    """The 1-minute load average (the machine is shared: say how loaded it was)."""
    return round(os.getloadavg()[0], 2)


def ratio_line(case: str, rlx: list[float], peer: list[float], unit: str, correct: bool) -> dict:
    """The record for paired per-repeat measurements `rlx[i]`, `peer[i]` (interleaved)."""
    rate = unit.endswith("/s")
    ratios = [(r / p) if rate else (p / r) for r, p in zip(rlx, peer)]
    return {"case": case, "rlx": round(statistics.median(rlx), 3), "peer": round(statistics.median(peer), 3),
            "unit": unit, "ratio": round(statistics.median(ratios), 3), "repeats": len(ratios),
            "min": round(min(ratios), 3), "median": round(statistics.median(ratios), 3), "max": round(max(ratios), 3),
            "load": load(), "threads": torch.get_num_threads(), "correct": bool(correct)}


def emit(line: dict, as_json: bool) -> None:
    """Print the record as one JSON line (`--json`) or as a readable line."""
    if as_json:
        print(json.dumps(line), flush=True)
    else:
        print(f"{line['case']}: rlx {line['rlx']} vs peer {line['peer']} {line['unit']}; ratio {line['ratio']} "
              f"(min {line['min']}, max {line['max']}, {line['repeats']} repeats, load {line['load']}, "
              f"{line['threads']} thread(s), correct={line['correct']})", flush=True)
