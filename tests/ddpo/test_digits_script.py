"""scripts/ddpo_digits.py runs `algo=ddpo` / `algo=ddpo_sf` through rlx.sweep and reads its table from the runs."""

import importlib.util
import json
import sys
from pathlib import Path

import yaml

_spec = importlib.util.spec_from_file_location("ddpo_digits", Path(__file__).parents[2] / "scripts" / "ddpo_digits.py")
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)


def test_the_script_runs_both_variants_through_the_sweep_and_reads_the_runs(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["ddpo_digits.py", "--rewards", "compressibility", "--variants", "is", "sf",
                                      "--iterations", "2", "--eval-every", "1", "--num-samples", "8",
                                      "--sample-steps", "3", "--eval-samples", "20", "--out", str(out)])
    script.main()
    results = json.loads((out / "results.json").read_text())
    assert [(r["reward"], r["variant"]) for r in results] == [("compressibility", "is"), ("compressibility", "sf")]
    for r in results:
        run_dir = Path(r["run_dir"])
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert cfg["algo"]["variant"] == r["variant"] and cfg["trainer"]["total_steps"] == 16
        assert [c["samples"] for c in r["curve"]] == [0, 8, 16]  # the base model, then every evaluation of the run
        summary = json.loads((run_dir / "summary.json").read_text())
        assert r["after"]["eval/reward_mean"] == summary["eval/reward_mean"]
        assert r["after"]["eval/kl_to_base"] == summary["eval/kl_to_base"] > 0
        assert r["before"] == results[0]["before"]  # the same untrained model, evaluation noise and prompts
        for when in ("before", "after"):
            assert (out / f"compressibility_{r['variant']}_{when}.png").stat().st_size > 0
    assert (out / "curves.png").is_file()
    written = [(Path(r["run_dir"]) / "metrics.jsonl").stat().st_mtime_ns for r in results]
    script.main()  # finished runs are read again, not repeated
    assert json.loads((out / "results.json").read_text()) == results
    assert [(Path(r["run_dir"]) / "metrics.jsonl").stat().st_mtime_ns for r in results] == written
