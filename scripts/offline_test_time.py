"""OPEX and TTT vs the same agent without them, on the same checkpoints (Park et al. 2024).

For every finished offline run below the given directories (IQL/TD3+BC runs with a critic),
rebuild the learner from `config.yaml` + `checkpoints/last.pt` and evaluate it with
test_time = none, opex, ttt on the same episode seeds. Prints one JSON object per run and a
mean per (dataset, mode).

    OMP_NUM_THREADS=1 python scripts/offline_test_time.py runs/sweeps/<hash> --episodes 5
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from rlx.algos.adapt import evaluate_offline
from rlx.envs.datasets import load_dataset
from rlx.envs.registry import make_env
from rlx.runs import load_learner


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dirs", nargs="+")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--opex-beta", default=None, help="comma-separated OPEX step sizes to try (default: algo.opex_beta); "
                   "beta is in units of the critic, whose scale follows the (scaled) rewards")
    p.add_argument("--ttt-alpha", type=float, default=None, help="override algo.ttt_alpha")
    args = p.parse_args()
    torch.set_num_threads(1)
    table = defaultdict(list)
    datasets = {}
    for root in args.dirs:
        for ckpt in sorted(Path(root).rglob("checkpoints/last.pt")):
            run_dir = ckpt.parent.parent
            learner, env_cfg, env = load_learner(run_dir)
            env.close()
            if not hasattr(learner, "q"):
                continue
            if args.ttt_alpha is not None:
                learner.cfg = replace(learner.cfg, ttt_alpha=args.ttt_alpha)
            betas = [float(b) for b in args.opex_beta.split(",")] if args.opex_beta else [learner.cfg.opex_beta]
            if env_cfg.dataset not in datasets:  # several seeds share a dataset: read it once
                datasets[env_cfg.dataset] = load_dataset(env_cfg.dataset)
            data = datasets[env_cfg.dataset]
            row = {"run": str(run_dir), "dataset": env_cfg.dataset, "algo": f"{learner.cfg.value}+{learner.cfg.extraction}"}
            cases = [("none", None), *(("opex", b) for b in betas), ("ttt", None)]
            for mode, beta in cases:
                if beta is not None:
                    learner.cfg = replace(learner.cfg, opex_beta=beta)
                out = evaluate_offline(learner, partial(make_env, env_cfg, check=False), args.episodes, 20_000, mode)
                label = mode if beta is None else f"opex(beta={beta:g})"
                row[label] = data.normalized_score(out["eval/return_mean"])
                table[(env_cfg.dataset, row["algo"], label)].append(row[label])
            print(json.dumps(row))
    for line in summarize(table):
        print(json.dumps(line))


def summarize(table: dict[tuple[str, str, str], list[float]]) -> list[dict]:
    """Per (dataset, algo, mode): mean normalized score with its 95% t-interval over runs (seeds), and
    for every mode other than `none` the paired gain over `none` on the same checkpoints (mean,
    95% t-interval, and how many runs improved): the claim "OPEX/TTT improve" is read from the gain."""
    from rlx.report import mean_interval

    out = []
    for (dataset, algo, mode), scores in sorted(table.items()):
        mean, half = mean_interval(scores)
        line = {"dataset": dataset, "algo": algo, "mode": mode, "n": len(scores),
                "mean_normalized_score": round(mean, 2), "ci95_half_width": round(half, 2)}
        base = table.get((dataset, algo, "none"))
        if mode != "none" and base is not None and len(base) == len(scores):
            gain = np.asarray(scores) - np.asarray(base)
            g, gh = mean_interval(gain)
            line.update({"gain_over_none": round(g, 2), "gain_ci95_half_width": round(gh, 2),
                         "runs_improved": int((gain > 0).sum())})
        out.append(line)
    return out


if __name__ == "__main__":
    main()
