"""scripts/gpu_check.py without CUDA: the dry run skips every CUDA part with its reason and still
runs its own code on CPU (Triton interpreter vs twin, the timing path, a tiny training, pytest)."""

import importlib
import json
import math
import statistics
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
OPS = ["gae", "lambda_returns", "discount_cumsum", "segment_sum", "segment_max", "segment_logsumexp",
       "segment_log_softmax", "segment_mean", "segment_sample", "scatter_add"]


@pytest.fixture(scope="module")
def gc():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "scripts"))
        yield importlib.import_module("gpu_check")


@pytest.fixture(scope="module")
def dry_run(gc, tmp_path_factory):
    if gc.CUDA:
        pytest.skip("the dry run is the no-CUDA path")
    tmp = tmp_path_factory.mktemp("gpu_check")
    tiny_tests = tmp / "test_tiny_suite.py"
    tiny_tests.write_text("import pytest\n\n\ndef test_ok():\n    pass\n\n\n@pytest.mark.skip\n"
                          "def test_skipped():\n    pass\n")
    out = tmp / "out" / "gpu_check.jsonl"
    threads = torch.get_num_threads()
    try:
        rc = gc.main(["--out", str(out), "--train-algos", "ppo", "--pytest-args", str(tiny_tests)])
    finally:
        torch.set_num_threads(threads)
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    return rc, lines, out


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_dry_run_covers_every_part_and_skips_cuda(dry_run):
    rc, lines, out = dry_run
    assert rc == 0 and lines[-1]["case"] == "summary" and lines[-1]["failed"] == []
    cases = {ln["case"] for ln in lines}
    assert {"env", "part/kernels", "part/bench", "part/train", "part/tests"} <= cases
    skipped = {ln["case"] for ln in lines if ln.get("skipped") == "no CUDA"}
    assert skipped == {"kernels", "bench", "goal", "train", "tests"}
    assert all(ln["device"] == "cuda" for ln in lines if ln.get("skipped") == "no CUDA")
    assert all(math.isfinite(x) for ln in lines for x in _numbers(ln))
    log = out.with_suffix(".log").read_text().splitlines()
    assert len(log) == len(lines) and sum(s.startswith("[SKIP no CUDA]") for s in log) == 5


def test_dry_run_compares_triton_interpreter_with_twin(dry_run):
    _, lines, _ = dry_run
    kernel = [ln for ln in lines if ln["case"].startswith("kernel/") and ln["case"] != "kernel/negative_control"]
    assert all(ln["pass"] and ln["impl"] == "triton" and ln["ref"] == "torch" and ln["device"] == "cpu"
               for ln in kernel)
    names = {ln["case"].split("/")[1] for ln in kernel}
    assert set(OPS) <= names and {"gae_grad", "segment_log_softmax_grad"} <= names
    assert any(ln["case"].endswith("bfloat16") for ln in kernel)
    assert next(ln for ln in lines if ln["case"] == "kernel/negative_control")["pass"]


def test_dry_run_times_every_kernel_with_counted_bytes(dry_run):
    _, lines, _ = dry_run
    bench = {ln["case"].split("/")[1]: ln for ln in lines if "impls" in ln}
    assert set(OPS) <= set(bench)
    assert bench["gae"]["bytes"] == 64 * 32 * (3 * 4 + 2 + 2 * 4) and bench["gae"]["shape"] == [64, 32]
    for line in bench.values():
        rlx = line["impls"]["rlx"]
        assert line["pass"] and "torch_twin" in line["impls"] and rlx["ms_min"] > 0 and rlx["pct_peak"] is None
        assert rlx["gbps"] == pytest.approx(line["bytes"] / rlx["ms_min"] / 1e6, rel=0.02, abs=0.01)
    assert {"pyg_softmax_ptr", "pyg_softmax_index"} <= set(bench["segment_log_softmax"]["impls"])


def test_dry_run_reads_steps_per_s_from_the_run(dry_run):
    _, lines, _ = dry_run
    (ppo,) = [ln for ln in lines if ln["case"] == "train/ppo"]
    assert ppo["pass"] and ppo["device"] == "cpu" and ppo["unit"] == "env_steps" and ppo["iterations"] == 3
    assert ppo["cuda_bytes_allocated"] == 0 and ppo["returncode"] == 0
    run_dir = Path(next(a for a in ppo["args"] if a.startswith("trainer.run_dir=")).split("=", 1)[1])
    rates = [json.loads(r)["time/env_steps_per_s"] for r in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "time/env_steps_per_s" in r]
    assert ppo["steps_per_s"] == pytest.approx(statistics.median(rates[1:]))
    (tests,) = [ln for ln in lines if ln["case"] == "tests" and ln["device"] == "cpu"]
    assert tests["pass"] and tests["counts"] == {"passed": 1, "skipped": 1}


def test_comparing_the_twin_with_itself_fails(gc, monkeypatch):
    """The planted bug: both sides on the twin. Every kernel line must then fail."""
    real = gc.GK.run_as
    monkeypatch.setattr(gc.GK, "run_as", lambda backend, fn, *a, **k: real("torch", fn, *a, **k))
    lines = gc.GK.check_kernels("cpu", tiny=True, deadline=math.inf)
    kernel = [ln for ln in lines if ln["case"] != "kernel/negative_control"]
    assert kernel and not any(ln["pass"] for ln in kernel) and all(ln["impl"] == "torch" for ln in kernel)


def test_compare_catches_values_and_masks(gc):
    x = torch.tensor([0.0, -math.inf, 2.0])
    assert gc.GK.compare(x, x.clone(), 1e-4, 1e-4) == (True, 0.0)
    assert not gc.GK.compare(x + 1e-2, x, 1e-4, 1e-4)[0]
    assert not gc.GK.compare(torch.tensor([0.0, 0.0, 2.0]), x, 1e-4, 1e-4)[0]  # -inf lost
    assert not gc.GK.compare(x.double(), x, 1e-4, 1e-4)[0]  # dtype changed
    assert not gc.GK.compare(torch.tensor([1, 2]), torch.tensor([1, 3]), 0, 0)[0]


def test_peak_table_and_goals(gc):
    peak = gc.GK.peak_bandwidth
    assert peak("NVIDIA H100 80GB HBM3") == 3.35e12 and peak("NVIDIA H100 PCIe") == 2.0e12
    assert peak("NVIDIA H200") == 4.8e12 and peak("NVIDIA GH200 480GB") == 4.0e12
    assert peak("NVIDIA A100-SXM4-80GB") == 2.039e12 and peak("NVIDIA A100-SXM4-40GB") == 1.555e12
    assert peak("NVIDIA L4") == 0.3e12 and peak("NVIDIA L40S") == 0.864e12
    assert peak("NVIDIA GeForce RTX 4090") == 1.008e12
    assert peak("Mystery GPU") is None and peak(None) is None

    def bench(case, pct, speedups):
        return {"case": case, "impls": {"rlx": {"pct_peak": pct}}, "speedup_vs": speedups}

    good = [bench("bench/gae/2048x4096/float32", 86.0, {}),
            bench("bench/segment_log_softmax/1048576r65536s", 81.0, {"pyg_softmax_ptr": 3.5, "pyg_softmax_index": 4.0})]
    assert [g["pass"] for g in gc.goals(good)] == [True, True, True]
    bad = [bench("bench/gae/2048x4096/float32", 84.0, {}),
           bench("bench/segment_log_softmax/1048576r65536s", 79.0, {"pyg_softmax_ptr": 2.9, "pyg_softmax_index": 4.0})]
    assert [g["pass"] for g in gc.goals(bad)] == [False, False, False]
    assert [g["value"] for g in gc.goals(bad)] == [84.0, 79.0, 2.9]
    assert not any(g["pass"] for g in gc.goals([]))  # a missing figure is a failed goal, not a pass


def test_a_cuda_run_that_used_no_cuda_memory_fails(gc, monkeypatch, tmp_path):
    """GFlowNet's learner ignores trainer.device: its 'cuda' figure would be a CPU one."""
    run_dir = tmp_path / "runs" / "gflownet-cuda"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 16, "time/samples_per_s": 50.0}\n')
    done = gc.subprocess.CompletedProcess([], 0, "", "GPU_CHECK_CUDA_BYTES=0\n")
    monkeypatch.setattr(gc.subprocess, "run", lambda *a, **k: done)
    line = gc.train_once("gflownet", "cuda", tmp_path, {}, 10.0)
    assert line["steps_per_s"] == 50.0 and not line["pass"] and "ignored trainer.device" in line["error"]
    done.stderr = "GPU_CHECK_CUDA_BYTES=123\n"
    assert gc.train_once("gflownet", "cuda", tmp_path, {}, 10.0)["pass"]


def test_pytest_summary_parsing(gc):
    text = "....F\n=== 1 failed, 4 passed, 2 skipped, 1 error in 3.21s ===\n"
    assert gc.pytest_summary(text) == ("1 failed, 4 passed, 2 skipped, 1 error in 3.21s",
                                       {"failed": 1, "passed": 4, "skipped": 2, "error": 1})
    assert gc.pytest_summary("collected nothing") == (None, {})


def test_bad_usage_is_one_line_and_writes_nothing(gc, tmp_path):
    out = tmp_path / "g.jsonl"
    for argv in (["--only", "kernels,gpu"], ["--caps", "bench=fast"], ["--train-algos", "dqn"]):
        with pytest.raises(gc.UsageError):
            gc.main(["--out", str(out), *argv])
    assert not out.exists()
