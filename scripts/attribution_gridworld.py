"""Grid world with planted behaviour families: does attribution return the planted responsible
family? Runs the whole pipeline (rlx.algos.attribution) for 3 seeds, once with the number of
clusters chosen by BIC (k in [2, 8]) and once with k fixed to the number of families (3), and
prints one JSON line per run plus a summary. Usage:
    OMP_NUM_THREADS=1 python scripts/attribution_gridworld.py [--seeds 0 1 2] [--encoder lstm] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rlx.algos.attribution import AttributionConfig, load_attribution_data, run_attribution


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--encoder", default="lstm", choices=["lstm", "transformer"])
    p.add_argument("--executor", default="process")
    p.add_argument("--out", default="runs/attribution_gridworld")
    args = p.parse_args()
    torch.set_num_threads(1)
    summary = {}
    for mode, (k_min, k_max) in (("bic", (2, 8)), ("k=3", (3, 3))):
        accs, purities, ks = [], [], []
        for seed in args.seeds:
            cfg = AttributionConfig(encoder=args.encoder, k_min=k_min, k_max=k_max, executor=args.executor)
            data, obs_space, act_space, queries, truth = load_attribution_data(cfg, seed)
            start = time.time()
            out = Path(args.out) / f"{args.encoder}-{mode.replace('=', '')}-s{seed}"
            r = run_attribution(data, cfg, obs_space, act_space, queries, seed, out, truth, log=lambda s: None)
            accs.append(r["ground_truth_accuracy"])
            purities.append(r["purity"])
            ks.append(r["num_clusters"])
            print(json.dumps({"mode": mode, "encoder": args.encoder, "seed": seed, "clusters": r["num_clusters"],
                              "purity": r["purity"], "ground_truth_accuracy": r["ground_truth_accuracy"],
                              "no_attribution_rate": r["no_attribution_rate"], "seconds": round(time.time() - start, 1),
                              "report": str(out / "report.md")}), flush=True)
        summary[mode] = {"clusters": ks, "purity_mean": sum(purities) / len(purities),
                         "accuracy_mean": sum(accs) / len(accs), "accuracy_min": min(accs)}
    print(json.dumps({"summary": summary, "encoder": args.encoder}))


if __name__ == "__main__":
    main()
