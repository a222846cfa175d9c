"""Mutation testing of rlx's numerics and learning code with mutmut, one module at a time.

Each module is mutated alone in a scratch copy of the tree, and each of its mutants runs only
the tests that can kill it (`MODULES` below; mutmut narrows further to the tests that reach the
mutated function). The result is a markdown table of per-module scores and the list of
surviving mutants; survivors matched by `EQUIVALENT` are reported as equivalent (with the
reason) and left out of the score's denominator.

    python scripts/mutation.py                         # every module, 2 workers (about 1 h on 2 cores)
    python scripts/mutation.py rlx/envs/rewards.py     # some modules
    python scripts/mutation.py --tree /tmp/old --out before.md rlx/envs/rewards.py   # another checkout

Settings shared by every module (pytest flags, timeouts) are the `[tool.mutmut]` section of
pyproject.toml; this script replaces its `only_mutate` and `pytest_add_cli_args_test_selection`
per module. Nothing is written in the tree itself (only under --work and --out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> the tests that can kill its mutants (paths that do not exist in --tree are skipped)
MODULES: dict[str, list[str]] = {
    "rlx/kernels/reference.py": ["tests/kernels/test_time_ops.py", "tests/kernels/test_segment_ops.py"],
    "rlx/kernels/ops.py": ["tests/kernels/test_time_ops.py", "tests/kernels/test_segment_ops.py",
                           "tests/kernels/test_dispatch.py"],
    "rlx/envs/rewards.py": ["tests/offline/test_rewards.py", "tests/offline/test_reward_transform_exact.py"],
    "rlx/core/buffers.py": ["tests/core/test_buffers.py", "tests/core/test_loop_next_obs.py"],
    "rlx/core/loops.py": ["tests/core/test_loop_next_obs.py", "tests/offline/test_loop_io.py", "tests/test_resume.py"],
    "rlx/core/learner.py": ["tests/offline/test_loss_signs.py"],
    "rlx/algos/offline_ac.py": ["tests/offline/test_losses.py", "tests/offline/test_loss_signs.py"],
    "rlx/algos/ppo.py": ["tests/algos/test_ppo.py", "tests/algos/test_ppo_signs.py"],
    "rlx/algos/rlhf.py": ["tests/cppo/test_rlhf_kl.py", "tests/cppo/test_cppo_weights.py"],
    "rlx/algos/ddpo.py": ["tests/ddpo/test_ddpo.py", "tests/ddpo/test_ddpo_signs.py"],
    "rlx/algos/gflownet.py": ["tests/gflownet/test_hypergrid.py", "tests/gflownet/test_loss_numbers.py"],
    "rlx/algos/hilp.py": ["tests/hilp/test_hilp.py", "tests/hilp/test_phi_target.py"],
    "rlx/algos/attribution.py": ["tests/attribution/test_attribution.py"],
    "rlx/envs/hypergrid.py": ["tests/gflownet/test_hypergrid.py", "tests/gflownet/test_loss_numbers.py"],
    "rlx/envs/molecules.py": ["tests/gflownet/test_molecules.py"],
    "rlx/envs/fragments.py": ["tests/gflownet/test_fragments.py"],
}

# module -> [(text of the mutated line, why the mutant is equivalent)]; matched on the '+' line
EQUIVALENT: dict[str, list[tuple[str, str]]] = {
    "rlx/envs/rewards.py": [
        (".to(reward.dtype).to(None)", "on CPU only: .to(None) keeps the CPU device the draw is made on; a CUDA "
                                       "reward would stay on the CPU (not testable on a CPU-only machine)"),
        ("if (cfg.scale != 1.0 or cfg.shift != 0.0) or True else out",
         "applying the identity affine map (scale 1, shift 0) returns the same values"),
    ],
    "rlx/algos/gflownet.py": [
        ('log_exit = edge[aptr[:-1][exit_rows]', "the exit (stop) action is local index 0 in every env, so "
                                                 "adding the exit rows' action adds 0"),
    ],
}

STATUSES = ("killed", "survived", "timeout", "no tests", "suspicious", "skipped", "segfault")


def mutmut_section(base: dict, module: str, tests: list[str]) -> str:
    """The [tool.mutmut] TOML section for one module (base settings plus its files and tests)."""
    cfg = {**base, "only_mutate": [module], "pytest_add_cli_args_test_selection": tests}

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        return "[" + ", ".join(value(x) for x in v) + "]"

    return "[tool.mutmut]\n" + "".join(f"{k} = {value(v)}\n" for k, v in cfg.items())


def strip_section(text: str, name: str) -> str:
    """pyproject text without the `[name]` table (up to the next table header)."""
    return re.sub(rf"^\[{re.escape(name)}\]\n(?:(?!\[).*\n?)*", "", text, flags=re.M)


def run_module(tree: Path, work: Path, module: str, jobs: int) -> dict:
    tests = [t for t in MODULES[module] if (tree / t).exists()]
    scratch = work / module.replace("/", "_")
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "runs", "mutants")
    for part in ("rlx", "tests"):
        shutil.copytree(tree / part, scratch / part, ignore=ignore)
    text = (tree / "pyproject.toml").read_text()
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]  # this checkout's settings
    (scratch / "pyproject.toml").write_text(strip_section(text, "tool.mutmut") + "\n" + mutmut_section(base, module, tests))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    start = time.time()
    run = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs)], cwd=scratch, env=env,
                         capture_output=True, text=True)
    minutes = (time.time() - start) / 60
    results = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=scratch, env=env,
                             capture_output=True, text=True).stdout
    status = dict(re.findall(r"^\s+(\S+__mutmut_\d+): (.+)$", results, flags=re.M))
    if not status:
        tail = (run.stdout + run.stderr).strip().splitlines()[-5:]
        return {"module": module, "tests": tests, "minutes": minutes, "error": " | ".join(tail)}
    counts = {s: sum(1 for v in status.values() if v == s) for s in STATUSES}
    survivors = []
    for name, st in status.items():
        if st not in ("survived", "no tests", "timeout", "suspicious"):
            continue
        diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=scratch, env=env,
                              capture_output=True, text=True).stdout
        plus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
        minus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
        reason = next((why for text_, why in EQUIVALENT.get(module, []) if any(text_ in p for p in plus)), None)
        survivors.append({"name": name, "status": st, "from": " / ".join(minus), "to": " / ".join(plus),
                          "equivalent": reason})
    equivalent = sum(1 for s in survivors if s["equivalent"])
    live = len(status) - counts["skipped"] - equivalent
    score = counts["killed"] / live if live else float("nan")
    return {"module": module, "tests": tests, "minutes": minutes, "total": len(status), **counts,
            "equivalent": equivalent, "score": score, "survivors": survivors}


def markdown(rows: list[dict]) -> str:
    out = ["| module | mutants | killed | survived | equivalent | timeout | no tests | score | minutes |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['module']} | error: {r['error']} | | | | | | | {r['minutes']:.1f} |")
            continue
        out.append(f"| {r['module']} | {r['total']} | {r['killed']} | {r['survived']} | {r['equivalent']} | "
                   f"{r['timeout']} | {r['no tests']} | {100 * r['score']:.1f}% | {r['minutes']:.1f} |")
    out.append("\nscore = killed / (mutants - skipped - equivalent); timeouts count as not killed.\n")
    for r in rows:
        for s in r.get("survivors", []):
            tag = f"equivalent: {s['equivalent']}" if s["equivalent"] else s["status"]
            out.append(f"* `{s['name']}` ({tag}): `{s['from']}` -> `{s['to']}`")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"modules to mutate (default: all {len(MODULES)})")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to test (default: this one)")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run in parallel")
    parser.add_argument("--out", type=Path, default=Path("mutation.md"), help="markdown table written here")
    args = parser.parse_args()
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {', '.join(MODULES)}")
    if shutil.which("mutmut") is None and subprocess.run([sys.executable, "-m", "mutmut", "--version"],
                                                          capture_output=True).returncode:
        parser.error("mutmut is not installed: pip install 'mutmut>=3.8'")
    work = args.work or Path(tempfile.mkdtemp(prefix="rlx-mutation-"))
    rows = []
    for module in args.modules or list(MODULES):
        row = run_module(args.tree.resolve(), work, module, args.jobs)
        rows.append(row)
        score = f"{100 * row['score']:.1f}%" if "score" in row else row["error"]
        print(f"{module}: {score} ({row['minutes']:.1f} min)", flush=True)
        args.out.write_text(markdown(rows))
    print(f"table: {args.out}")


if __name__ == "__main__":
    main()
