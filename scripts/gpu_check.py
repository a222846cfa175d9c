"""One prepared GPU check of rlx (issue 21): kernels vs twins, kernel timings, CUDA vs CPU
trainings and the test suite, written as JSON lines (plus a human log) to one file.

    python scripts/gpu_check.py --out gpu_check.jsonl [--only kernels,bench,train,tests] [--caps ...]
    bash scripts/gpu_check.sh        # the same, with $OUT/gpu_check.jsonl and wheels from .whl/

Parts (each under its own time cap, whole run under 8 minutes on one GPU):
  kernels  Triton vs torch twin on CUDA: ragged inputs (empty, huge, all -inf segments), GAE with
           terminations and truncations, fp32 and bf16, two gradients; plus a negative control.
  bench    every public kernel timed with CUDA events after warm-up against its twin, torchrl's
           GAE and PyG's softmax/scatter; GB/s of the bytes each op must move, % of the datasheet
           peak (table in gpu_check_kernels.PEAK_GBPS, null if the GPU is unknown) and of a
           measured copy; the issue's goals as pass/fail lines.
  train    short PPO (CartPole), IQL (pendulum-tiny) and GFlowNet (HyperGrid) runs of
           `python -m rlx.train` with trainer.device=cuda and =cpu: steps/s from metrics.jsonl.
  tests    `python -m pytest -q` with CUDA visible; the summary line and counts.
Without CUDA every CUDA line says "skipped": "no CUDA" and a dry run exercises the same code on
CPU: the Triton kernels under the interpreter vs the twins on tiny ragged inputs, the timing
path on tiny shapes, tiny CPU trainings, and a small pytest selection.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CUDA = torch.cuda.is_available()
if not CUDA:  # the dry run: Triton kernels on CPU tensors need the interpreter, set before triton loads
    os.environ.setdefault("TRITON_INTERPRET", "1")

import gpu_check_kernels as GK  # scripts/ is on sys.path when run as a script

PARTS = ("kernels", "bench", "train", "tests")
CAPS = {"kernels": 60, "bench": 110, "train": 120, "tests": 150}  # seconds; sum + startup < 8 min
ROOT = Path(__file__).resolve().parent.parent
# algo -> (full-run overrides, dry-run overrides); budgets in the loop's own unit
TRAININGS = {
    "ppo": (["env=cartpole", "trainer.total_steps=16384"],
            ["env=cartpole", "env.num_envs=2", "algo.num_steps=64", "trainer.total_steps=384"]),
    "iql": (["env=pendulum-tiny", "trainer.total_steps=1000"],
            ["env=pendulum-tiny", "trainer.total_steps=30", "algo.batch_size=32"]),
    "gflownet": (["env=hypergrid", "trainer.total_steps=4096"], ["env=hypergrid_small", "trainer.total_steps=64"]),
}
COMMON = ["trainer.progress=false", "trainer.tensorboard=false", "trainer.eval_every=0", "trainer.eval_episodes=1",
          "trainer.checkpoint_every=0"]


class Report:
    """Appends JSON lines to `path` and a readable line per record to `path`.log and stdout."""

    def __init__(self, path: Path):
        self.path, self.log_path = path, path.with_suffix(".log")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        self.log_path.write_text("")
        self.lines: list[dict] = []

    def add(self, line: dict) -> None:
        self.lines.append(line)
        with open(self.path, "a") as f:
            f.write(json.dumps(line, allow_nan=False, default=str) + "\n")
        verdict = {True: "PASS", False: "FAIL"}.get(line.get("pass"), "INFO")
        status = ("SKIP " + line["skipped"]) if "skipped" in line else verdict
        rest = {k: v for k, v in line.items() if k not in ("case", "device", "pass", "skipped")}
        text = f"[{status}] {line['case']} ({line.get('device', '-')}) {json.dumps(rest, default=str)[:400]}"
        print(text, flush=True)
        with open(self.log_path, "a") as f:
            f.write(text + "\n")


def finite_json(obj):
    """obj with every non-finite float replaced by null (JSON has no inf/NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_json(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------- parts


def part_kernels(rep: Report, deadline: float) -> None:
    if not GK.dispatch.triton_available():
        rep.add({"case": "kernels", "device": "cuda" if CUDA else "cpu", "skipped": "triton not installed"})
        return
    if not CUDA:
        rep.add({"case": "kernels", "device": "cuda", "skipped": "no CUDA"})
    for line in GK.check_kernels("cuda" if CUDA else "cpu", tiny=not CUDA, deadline=deadline):
        rep.add(finite_json(line))


def goals(lines: list[dict]) -> list[dict]:
    """The issue's targets, judged on the bench lines: GAE [2048, 4096] fp32 >= 85% of peak
    bandwidth; segment log-softmax 1M rows / 64k segments >= 3x PyG's softmax and >= 80%."""
    by_case = {ln["case"]: ln for ln in lines if "impls" in ln}
    out = []
    gae = by_case.get("bench/gae/2048x4096/float32")
    pct = gae and gae["impls"]["rlx"]["pct_peak"]
    out.append({"case": "goal/gae_2048x4096_fp32_pct_peak_ge_85", "device": "cuda", "value": pct,
                "pass": pct is not None and pct >= 85})
    sls = by_case.get("bench/segment_log_softmax/1048576r65536s")
    pct = sls and sls["impls"]["rlx"]["pct_peak"]
    out.append({"case": "goal/segment_log_softmax_1M_64k_pct_peak_ge_80", "device": "cuda", "value": pct,
                "pass": pct is not None and pct >= 80})
    pyg = [v for k, v in (sls or {}).get("speedup_vs", {}).items() if k.startswith("pyg_softmax")]
    speedup = min(pyg) if pyg else None  # against PyG's fastest call
    out.append({"case": "goal/segment_log_softmax_1M_64k_ge_3x_pyg", "device": "cuda", "value": speedup,
                "pass": speedup is not None and speedup >= 3})
    return out


def part_bench(rep: Report, deadline: float) -> None:
    device = "cuda" if CUDA else "cpu"
    ops = ("segment_sum", "segment_mean", "segment_max", "segment_logsumexp", "segment_log_softmax",
           "segment_sample", "scatter_add")
    if CUDA:
        name = torch.cuda.get_device_name(0)
        jobs = [("time", 2048, 4096, torch.float32), ("time", 2048, 4096, torch.bfloat16),
                ("time", 512, 1024, torch.float32), ("seg", 1 << 20, 1 << 16, ops),
                ("seg", 10_000, 1_000, ("segment_log_softmax",))]
        copy_numel = 64 << 20
    else:
        rep.add({"case": "bench", "device": "cuda", "skipped": "no CUDA"})
        name = None
        jobs = [("time", 64, 32, torch.float32), ("seg", 2000, 100, ops)]
        copy_numel = 1 << 16
    refs = {"peak": GK.peak_bandwidth(name), "copy": GK.copy_bandwidth(device, copy_numel)}
    rep.add({"case": "bench/reference", "device": device, "name": name or "cpu",
             "peak_gbps": refs["peak"] and refs["peak"] / 1e9, "copy_gbps": round(refs["copy"] / 1e9, 2),
             "detail": "peak: datasheet table (null if unknown); copy: dst.copy_(src), bytes read + written"})
    bench_lines = []
    for i, (kind, a, b, c) in enumerate(jobs):
        budget = max(1.0, (deadline - time.monotonic()) / (len(jobs) - i) / 8)
        if time.monotonic() > deadline:
            rep.add({"case": f"bench/{kind}/{a}x{b}", "device": device, "skipped": "time cap"})
            continue
        try:
            lines = (GK.bench_time_ops(a, b, c, device, refs, budget) if kind == "time"
                     else GK.bench_segment_ops(a, b, device, refs, budget, c))
        except Exception as err:  # noqa: BLE001 (recorded as a failed line)
            lines = [{"case": f"bench/{kind}/{a}x{b}", "device": device, "pass": False, "error": repr(err)[:300]}]
        for line in lines:
            rep.add(finite_json(line))
        bench_lines += lines
    for line in goals(bench_lines) if CUDA else []:
        rep.add(line)
    if not CUDA:
        rep.add({"case": "goal", "device": "cuda", "skipped": "no CUDA"})


def python_m(argv: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """`python -m argv...` from the repo root, output captured; TimeoutExpired past `timeout` s."""
    return subprocess.run([sys.executable, "-m", *argv], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=max(timeout, 1.0), check=False)


# `python -m rlx.train ARGS` that also prints the CUDA bytes it allocated, so a learner that ignores
# trainer.device=cuda (and so trains on CPU) is caught rather than reported as a GPU figure.
TRAIN_WRAPPER = """import sys, torch
from rlx.train import main
try:
    rc = main(sys.argv[1:])
finally:
    used = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    print(f"GPU_CHECK_CUDA_BYTES={used}", file=sys.stderr)
sys.exit(rc)
"""


def cuda_bytes(stderr: str) -> int | None:
    found = re.findall(r"GPU_CHECK_CUDA_BYTES=(\d+)", stderr or "")
    return int(found[-1]) if found else None


def steps_per_s(metrics: Path) -> tuple[float | None, str | None, int]:
    """(median time/<unit>_per_s over the logged iterations after the first, unit, rows read)."""
    rows = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()] if metrics.exists() else []
    rates = [(k, r[k]) for r in rows for k in r if k.startswith("time/") and k.endswith("_per_s")]
    if not rates:
        return None, None, 0
    unit = rates[0][0][len("time/"):-len("_per_s")]
    values = [v for _, v in rates]
    return statistics.median(values[1:] if len(values) > 1 else values), unit, len(values)


def train_once(algo: str, device: str, work: Path, env: dict, timeout: float) -> dict:
    full, dry = TRAININGS[algo]
    run_dir = work / "runs" / f"{algo}-{device}"
    args = [f"algo={algo}", *(full if CUDA else dry), *COMMON, f"trainer.device={device}",
            f"trainer.run_dir={run_dir}"] + (["trainer.threads=1"] if device == "cpu" else [])
    t0, rc, timed_out = time.perf_counter(), None, False
    try:
        out = subprocess.run([sys.executable, "-c", TRAIN_WRAPPER, *args], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=max(timeout, 1.0), check=False)
        stderr = [ln for ln in out.stderr.strip().splitlines() if "GPU_CHECK_CUDA_BYTES=" not in ln]
        rc, err, used = out.returncode, stderr[-1:] if out.returncode else [], cuda_bytes(out.stderr)
    except subprocess.TimeoutExpired:  # stopped at its share of the cap: the iterations logged so far count
        err, timed_out, used = [], True, None
    rate, unit, rows = steps_per_s(run_dir / "metrics.jsonl")
    on_gpu = device != "cuda" or timed_out or bool(used)  # a timed-out run cannot report its bytes
    if not err and not on_gpu:
        err = ["no CUDA memory used: the learner ignored trainer.device=cuda"]
    return {"case": f"train/{algo}", "device": device, "steps_per_s": rate, "unit": unit, "iterations": rows,
            "wall_s": round(time.perf_counter() - t0, 2), "returncode": rc, "timed_out": timed_out,
            "cuda_bytes_allocated": used, "error": err[0][:300] if err else None, "args": args,
            "pass": (rc == 0 or timed_out) and rate is not None and math.isfinite(rate) and on_gpu}


def part_train(rep: Report, deadline: float, algos: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="rlx_gpu_check_"))
    env = {**os.environ, "RLX_DATA": str(work / "data"), "OMP_NUM_THREADS": "1"}
    if CUDA:
        env.pop("TRITON_INTERPRET", None)
    if "iql" in algos:
        steps = "10000" if CUDA else "1000"
        made = python_m(["rlx.envs.datasets", "tiny", "--steps", steps], env, max(deadline - time.monotonic(), 1.0))
        if made.returncode:
            rep.add({"case": "train/iql/dataset", "device": "cpu", "pass": False, "error": made.stderr[-300:]})
    devices = ["cuda", "cpu"] if CUDA else ["cpu"]
    if not CUDA:
        rep.add({"case": "train", "device": "cuda", "skipped": "no CUDA"})
    runs = [(a, d) for a in algos for d in devices]
    for i, (algo, device) in enumerate(runs):
        left = deadline - time.monotonic()
        if left <= 1:
            rep.add({"case": f"train/{algo}", "device": device, "skipped": "time cap"})
            continue
        line = train_once(algo, device, work, env, left / (len(runs) - i))
        rep.add(finite_json(line))
        if device == "cpu" and CUDA:
            cuda = next((ln for ln in rep.lines if ln["case"] == f"train/{algo}" and ln["device"] == "cuda"), {})
            ratio = (cuda.get("steps_per_s") or 0) / line["steps_per_s"] if line["steps_per_s"] else None
            rep.add({"case": f"train/{algo}/cuda_vs_cpu", "device": "cuda", "ratio": ratio,
                     "pass": ratio is not None and ratio > 1})


def pytest_summary(text: str) -> tuple[str | None, dict[str, int]]:
    """The final `N passed, M failed ... in Xs` line of pytest -q output and its counts."""
    lines = [ln.strip("= ") for ln in text.strip().splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    if not lines:
        return None, {}
    counts = {word.rstrip("s") if word.startswith("error") else word: int(n)
              for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)", lines[-1])}
    return lines[-1], counts


def part_tests(rep: Report, deadline: float, out_dir: Path, pytest_args: list[str]) -> None:
    if not CUDA:
        rep.add({"case": "tests", "device": "cuda", "skipped": "no CUDA"})
    device = "cuda" if CUDA else "cpu"
    args = pytest_args or ([] if CUDA else ["tests/kernels/test_dispatch.py"])
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the suite's conftest sets its own
    t0, rc = time.perf_counter(), None
    try:
        out = python_m(["pytest", "-q", "-p", "no:cacheprovider", *args], env, deadline - time.monotonic())
        text, rc = out.stdout + out.stderr, out.returncode
    except subprocess.TimeoutExpired as err:
        text = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
    (out_dir / "pytest.log").write_text(text)
    summary, counts = pytest_summary(text)
    rep.add({"case": "tests", "device": device, "args": args, "summary": summary, "counts": counts,
             "returncode": rc, "timed_out": rc is None, "wall_s": round(time.perf_counter() - t0, 1),
             "log": "pytest.log", "pass": rc == 0})


# ----------------------------------------------------------------------------- main


class UsageError(Exception):
    """Bad command line: reported as one line, exit status 2, before anything is written."""


def installed(dist: str) -> str | None:
    """The installed version of a distribution, without importing it (None if absent)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def parse_caps(text: str) -> dict[str, float]:
    caps = dict(CAPS)
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in PARTS or not value.replace(".", "", 1).isdigit():
            raise UsageError(f"bad --caps item {item!r}; use e.g. kernels=60,bench=110 (parts: {', '.join(PARTS)})")
        caps[key] = float(value)
    return caps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="JSONL path (default $OUT/gpu_check.jsonl); the log goes beside it")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {','.join(PARTS)}")
    p.add_argument("--caps", default="", help="seconds per part (default kernels=60,bench=110,train=120,tests=150)")
    p.add_argument("--train-algos", default=",".join(TRAININGS), help="subset of ppo,iql,gflownet")
    p.add_argument("--pytest-args", default="", help="extra pytest arguments (e.g. '-x tests/kernels')")
    args = p.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    algos = [s for s in args.train_algos.split(",") if s]
    if bad := [s for s in only if s not in PARTS] + [a for a in algos if a not in TRAININGS]:
        raise UsageError(f"unknown part or algo {bad}; parts: {','.join(PARTS)}; algos: {','.join(TRAININGS)}")
    caps = parse_caps(args.caps)
    out = args.out or (os.environ.get("OUT") and str(Path(os.environ["OUT"]) / "gpu_check.jsonl"))
    if not out:
        raise UsageError("give --out PATH (or set $OUT)")
    if not CUDA:
        torch.set_num_threads(1)
        GK.REPS = 5
    rep = Report(Path(out))
    versions = {m: installed(m) for m in ("triton", "torchrl", "torch-geometric", "tensordict", "gymnasium")}
    rep.add({"case": "env", "device": "cuda" if CUDA else "cpu", "cuda": CUDA, "torch": torch.__version__,
             **versions, "name": torch.cuda.get_device_name(0) if CUDA else None, "parts": only, "caps_s": caps})
    t_start = time.monotonic()
    for part in only:
        deadline, t0 = time.monotonic() + caps[part], time.monotonic()
        try:
            if part == "kernels":
                part_kernels(rep, deadline)
            elif part == "bench":
                part_bench(rep, deadline)
            elif part == "train":
                part_train(rep, deadline, algos)
            else:
                part_tests(rep, deadline, Path(out).parent, args.pytest_args.split())
        except Exception as err:  # noqa: BLE001 (a broken part is a finding; the other parts still run)
            rep.add({"case": f"part/{part}/error", "device": "cuda" if CUDA else "cpu", "pass": False,
                     "error": repr(err)[:300]})
        rep.add({"case": f"part/{part}", "device": "cuda" if CUDA else "cpu",
                 "seconds": round(time.monotonic() - t0, 1), "cap_s": caps[part]})
    failed = [ln["case"] for ln in rep.lines if ln.get("pass") is False]
    rep.add({"case": "summary", "device": "cuda" if CUDA else "cpu", "failed": failed,
             "seconds": round(time.monotonic() - t_start, 1), "pass": not failed})
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        sys.exit(2)
