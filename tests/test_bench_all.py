"""scripts/bench_all.py's plumbing on fake benches (no timing): rows passed through with their
bench's name, a case that is not correct, a missing key or a crashed bench fails the run."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_all.py"
ROW = {"case": "x", "rlx": 2.0, "peer": 1.0, "unit": "it/s", "ratio": 2.0, "repeats": 5, "min": 1.5, "median": 2.0,
       "max": 2.5, "load": 1.0, "threads": 1, "correct": True}


def _bench(tmp_path: Path, name: str, rows: list[dict], code: int = 0) -> Path:
    path = tmp_path / f"bench_{name}.py"
    lines = "".join(f"print({json.dumps(json.dumps(r))})\n" for r in rows)
    path.write_text("import sys\nassert sys.argv[1:] == ['--json', '--quick'], sys.argv\n"
                    f"print('progress line')\nprint('{{not json')\n{lines}sys.exit({code})\n")
    return path


def _run(*args) -> tuple[int, list[dict], str]:
    out = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, check=False)
    return out.returncode, [json.loads(line) for line in out.stdout.splitlines()], out.stderr


def test_correct_cases_pass_through(tmp_path):
    good = _bench(tmp_path, "good", [ROW, {**ROW, "case": "y", "extra": 3}])
    code, rows, _ = _run("--bench", good, "--out", tmp_path / "r.jsonl")
    assert code == 0
    assert rows == [{"bench": "good", **ROW}, {"bench": "good", **ROW, "case": "y", "extra": 3}]
    assert [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()] == rows


def test_incorrect_missing_key_or_crash_fails_the_run(tmp_path):
    ok = _bench(tmp_path, "ok", [ROW])
    wrong = _bench(tmp_path, "wrong", [{**ROW, "correct": False}])
    partial = _bench(tmp_path, "partial", [{k: v for k, v in ROW.items() if k != "load"}])
    crash = _bench(tmp_path, "crash", [], code=3)
    silent = _bench(tmp_path, "silent", [])
    code, rows, err = _run("--bench", ok, wrong, partial, crash, silent)
    assert code == 1
    assert [(r["bench"], r["correct"]) for r in rows] == [("ok", True), ("wrong", False), ("partial", False),
                                                          ("crash", False), ("silent", False)]
    assert rows[2]["error"] == "missing keys load" and rows[3]["error"].startswith("exit code 3")
    assert rows[4]["error"] == "printed no case"
    assert err.strip() == "bench_all: 4 of 5 rows failed: wrong/x, partial/x, crash/crash, silent/silent"


def test_a_settings_record_is_kept_but_is_not_a_case(tmp_path):
    """bench_ppo prints its matched settings first ({"case": "settings", ...}): kept in the
    output, never judged as a ratio case; a bench that prints only settings still fails."""
    settings = {"case": "settings", "rlx": "PPOConfig(...)", "sb3": "PPO(...)"}
    good = _bench(tmp_path, "good", [settings, ROW])
    code, rows, err = _run("--bench", good)
    assert code == 0 and err == ""
    assert rows == [{"bench": "good", **settings}, {"bench": "good", **ROW}]
    only = _bench(tmp_path, "only", [settings])
    code, rows, err = _run("--bench", only)
    assert code == 1 and "only" in err

