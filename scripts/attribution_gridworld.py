"""Grid world with planted behaviour families: does attribution return the planted responsible
family? Runs the whole pipeline (rlx.algos.attribution) for every seed in four modes:
    bic8-tree   k chosen by BIC over [2, 8], Ward cluster hierarchy on (the default pipeline)
    bic20-tree  k chosen by BIC over [2, 20], Ward cluster hierarchy on
    bic8-flat   k chosen by BIC over [2, 8], the paper's flat leave-one-cluster-out rule only
    k3-flat     k fixed to the number of families (3), flat rule
and prints one JSON line per run plus a summary (accuracy per seed and its mean; every seed has the same 14 queries).
Every run is `python -m rlx.train algo=attribution algo.k_min=.. algo.k_max=.. algo.hierarchy=.. seed=..`
through `rlx.sweep.run_points` (one after another in this process; its K + 1 explanation policies
go through `--executor`) into <out>/<config hash>, with report.md, attribution.json and figures
there; a finished run is not repeated. `seconds`: from the run's config.yaml to its summary.json.
Usage:
    OMP_NUM_THREADS=1 python scripts/attribution_gridworld.py [--seeds 0 1 2] [--encoder lstm]
        [--modes bic8-tree bic20-tree bic8-flat k3-flat] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rlx.sweep import run_points
from rlx.train import compose_config, run

MODES = {"bic8-tree": (2, 8, True), "bic20-tree": (2, 20, True), "bic8-flat": (2, 8, False), "k3-flat": (3, 3, False)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--encoder", default="lstm", choices=["lstm", "transformer"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--executor", default="process")
    p.add_argument("--out", default="runs/attribution_gridworld")
    args = p.parse_args()
    torch.set_num_threads(1)
    runs = [(mode, seed) for mode in args.modes for seed in args.seeds]
    points = [["algo=attribution", f"algo.encoder={args.encoder}", f"algo.k_min={MODES[mode][0]}",
               f"algo.k_max={MODES[mode][1]}", f"algo.hierarchy={str(MODES[mode][2]).lower()}",
               f"algo.executor={args.executor}", f"seed={seed}", "trainer.tensorboard=false"] for mode, seed in runs]
    rows: dict[str, list[dict]] = {mode: [] for mode in args.modes}
    for (mode, seed), (job, out) in zip(runs, run_points(points, args.out, compose_config, run, launcher="inprocess")):
        if isinstance(out, BaseException):
            print(f"FAILED {mode} seed {seed}: {type(out).__name__}: {out}", flush=True)
            continue
        run_dir = Path(job.run_dir)
        r = json.loads((run_dir / "attribution.json").read_text())
        seconds = (run_dir / "summary.json").stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime
        row = {"mode": mode, "encoder": args.encoder, "seed": seed, "clusters": r["num_clusters"],
               "purity": r["purity"], "hierarchy_purity": r.get("hierarchy_purity"),
               "ground_truth_accuracy": r["ground_truth_accuracy"], "no_attribution_rate": r["no_attribution_rate"],
               "merged_attribution_rate": r["merged_attribution_rate"], "queries": len(r["attributed"]),
               "seconds": round(seconds, 1), "report": str(run_dir / "report.md")}
        rows[mode].append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for mode, mode_rows in rows.items():
        if not mode_rows:
            continue
        accs = [r["ground_truth_accuracy"] for r in mode_rows]
        summary[mode] = {"clusters": [r["clusters"] for r in mode_rows], "purity": [r["purity"] for r in mode_rows],
                         "accuracy": accs, "accuracy_mean": sum(accs) / len(accs), "accuracy_min": min(accs),
                         "purity_mean": sum(r["purity"] for r in mode_rows) / len(mode_rows)}
    print(json.dumps({"summary": summary, "encoder": args.encoder}))


if __name__ == "__main__":
    main()
