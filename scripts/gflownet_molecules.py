"""Molecules: GFlowNet-TB vs PPO vs random sampling at an equal number of sampled molecules.

Every run is `python -m rlx.train` through `rlx.sweep.run_points` (finished runs are skipped,
interrupted ones resumed) into `--root/<task>/<config hash>`: `algo=gflownet_molecules` (TB),
`algo=sampler_ppo` and `algo=sampler_random` (rlx.algos.sampler_baselines), each with
`algo.record_samples=true` so the run keeps every molecule it sampled. All three sample with the
same env and masks; GFlowNet and PPO use the same graph policy (GINE on atoms or on the fragment
block graph; PPO adds a value head on the same trunk and learns from the terminal reward only);
random sampling is uniform over the allowed actions. Metrics over every molecule sampled so far
(in sampling order), reported at `--report-at` budgets: validity, uniqueness, top-10/100/1000 mean
reward of unique molecules, number of modes (reward > the env preset's `mode_threshold` and
Tanimoto < 0.7 to every earlier mode), mean pairwise Tanimoto of the top 100.

Tasks (env preset in rlx/configs/env/): atom_qed_sa_mw (`molecules_atom`, modes: R > 0.4), atom_similarity
(`molecules_similarity`, modes: R > 0.35; also modes at R > 0.5 and `targets_found`, how many of the 3
targets were sampled exactly) (atom env, <= 9 heavy atoms), frag_seh (`molecules_fragments_seh`: 105-block
library + sEH proxy, R = (max(0.1, s)/8)^10; modes: score > 7 and > 7.5), frag_qed_sa_mw
(`molecules_fragments` with at most 6 blocks, modes: R > 0.7).
    OMP_NUM_THREADS=1 python scripts/gflownet_molecules.py --task atom_qed_sa_mw --seeds 0 \
        --budget 16384 --report-at 512 1024 2048 4096 8192 16384 --out docs/gflownet/atom_qed_sa_mw_seed0.jsonl
    python scripts/gflownet_molecules.py --summarize docs/gflownet/atom_*.jsonl --plot docs/gflownet_molecules_modes.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

from rlx.envs.molecules import DEFAULT_TARGETS, molecule_metrics

ROOT = Path(__file__).resolve().parents[1]
SEH_MODES = {"modes_score7": (7.0 / 8) ** 10, "modes_score7.5": (7.5 / 8) ** 10}
EXTRA_MODES = {"frag_seh": SEH_MODES, "atom_similarity": {"modes_r0.5": 0.5}}  # mode counts at other thresholds

TASKS = {  # the env of each task: a rlx/configs/env preset (+ overrides)
    "atom_qed_sa_mw": ["env=molecules_atom"],
    "atom_similarity": ["env=molecules_similarity"],
    "frag_seh": ["env=molecules_fragments_seh"],
    "frag_qed_sa_mw": ["env=molecules_fragments", "env.kwargs.max_blocks=6", "env.kwargs.mode_threshold=0.7"],
}
BETA = {"frag_seh": 1.0}  # GFlowNet reward exponent of a task (else rlx/configs/algo/gflownet_molecules.yaml's 8)
METHODS = {"gflownet_tb": "algo=gflownet_molecules", "ppo": "algo=sampler_ppo", "random": "algo=sampler_random"}


def task_env(task: str):
    """The task's env config (from its preset) and the env itself."""
    from rlx.envs.registry import import_object
    from rlx.train import compose_config

    env_cfg = compose_config(TASKS[task]).env
    return env_cfg, import_object(env_cfg.entry_point)(**env_cfg.kwargs)


def points(a, beta: float | None) -> list[tuple[int, str, list[str]]]:
    """(seed, method label, overrides) of every run, seed-major as the table is."""
    out = []
    for seed in a.seeds:
        for method in a.methods:
            ov = [METHODS[method], *TASKS[a.task], f"seed={seed}", f"trainer.total_steps={a.budget}",
                  "trainer.eval_every=0", "trainer.threads=1", "trainer.tensorboard=false", "algo.record_samples=true",
                  f"algo.batch_size={a.batch}"]
            label = method
            if method == "gflownet_tb":
                ov += [f"algo.beta={beta if beta is not None else BETA.get(a.task, 8.0)}", f"algo.lr_log_z={a.lr_log_z}"]
                label = f"{method}_beta{beta:g}" if beta is not None else method
            out.append((seed, label, ov))
    return out


class Record:
    """Molecules and rewards in sampling order; a metrics row each time the count passes a report budget."""

    def __init__(self, task, method, seed, threshold, report_at, rows):
        self.smiles, self.rewards, self.seconds = [], [], 0.0
        self.task, self.method, self.seed, self.threshold = task, method, seed, threshold
        self.pending, self.rows = sorted(report_at), rows

    @property
    def count(self) -> int:
        return len(self.smiles)

    def add(self, smiles, rewards, seconds: float) -> None:
        self.smiles += smiles
        self.rewards += rewards
        self.seconds = seconds
        while self.pending and self.count >= self.pending[0]:
            self.report(self.pending.pop(0))

    def replay(self, run_dir) -> None:
        """Feed a finished run's samples.jsonl batch by batch, in the order it sampled them."""
        for line in (Path(run_dir) / "samples.jsonl").read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                self.add(row["smiles"], row["reward"], row["seconds"])

    def report(self, n):
        s, r = self.smiles[:n], self.rewards[:n]
        m = molecule_metrics(s, r, self.threshold)
        for key, thr in EXTRA_MODES.get(self.task, {}).items():
            m[key] = molecule_metrics(s, r, thr)["num_modes"]
        if self.task == "frag_seh":
            m["top100_score"] = _mean_top_score(s, r, 100)
        if self.task == "atom_similarity":
            m["targets_found"] = float(targets_found(s))
        row = {"task": self.task, "method": self.method, "seed": self.seed, "molecules": n,
               "seconds": round(self.seconds, 1), **{k: round(v, 4) for k, v in m.items()}}
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def targets_found(smiles, targets=DEFAULT_TARGETS) -> int:
    """How many of the similarity task's target molecules (its modes by construction) were sampled exactly."""
    from rdkit import Chem

    def canon(smi):
        mol = Chem.MolFromSmiles(smi) if smi else None
        return Chem.MolToSmiles(mol) if mol is not None else None

    return len({canon(t) for t in targets} & {canon(x) for x in set(smiles)})


def _mean_top_score(smiles, rewards, k):
    """Mean proxy score s = 8 R^(1/10) of the top-k unique molecules (the literature's scale)."""
    best = dict(zip(smiles, rewards))
    top = sorted(best.values(), reverse=True)[:k]
    return sum(8.0 * r ** 0.1 for r in top) / max(len(top), 1)


def random_quantiles(task: str, n: int, seed: int = 100) -> dict:
    """Reward quantiles of `n` uniform random molecules: how the mode thresholds were chosen (~ the 99.9th
    percentile, rounded to 0.05: a reward level random sampling reaches about once per 1000 molecules)."""
    import numpy as np

    from rlx.algos.sampler_baselines import UniformSampler

    _, env = task_env(task)
    sampler = UniformSampler(env)
    sampler.generator.manual_seed(seed)
    smiles, rewards = [], []
    while len(smiles) < n:
        _, terminal, log_r = sampler.sample(256)
        smiles += env.smiles(terminal)
        rewards += log_r.exp().tolist()
    r = np.array(rewards[:n])
    out = {"task": task, "molecules": len(r), "unique": len(set(smiles[:n])), "max": round(float(r.max()), 4)}
    out.update({f"q{q:g}": round(float(np.quantile(r, q)), 4) for q in (0.5, 0.9, 0.99, 0.999, 0.9999)})
    out.update({f"P(R>{t:g})": round(float((r > t).mean()), 5) for t in (0.3, 0.35, 0.4, 0.45, 0.5)})
    print(json.dumps(out), flush=True)
    return out


def summarize(paths) -> None:
    """Markdown table: mean +- std over seeds per (task, method, molecules); modes listed per seed."""
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    keys = ["num_modes", "modes_score7", "modes_score7.5", "modes_r0.5", "targets_found", "top10_reward", "top100_reward", "top1000_reward",
            "top100_score", "top100_similarity", "uniqueness", "validity"]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["task"], r["molecules"], r["method"]), []).append(r)
    present = [k for k in keys if any(k in r for r in rows)]
    print("| task | molecules | method | seeds | " + " | ".join(present) + " |")
    print("|---" * (4 + len(present)) + "|")
    for (task, n, method), rs in sorted(groups.items()):
        cells = []
        for k in present:
            vals = [r[k] for r in rs if k in r]
            if not vals:
                cells.append("")
            elif k.startswith(("num_modes", "modes", "targets")):
                cells.append(", ".join(str(int(v)) for v in vals))
            else:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{statistics.mean(vals):.3f} ± {sd:.3f}")
        print(f"| {task} | {n} | {method} | {len(rs)} | " + " | ".join(cells) + " |")


def plot(paths, out: str, keys=("num_modes", "top100_similarity")) -> None:
    """One column per task, one row per key: key vs molecules sampled, mean over seeds with a min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(len(keys), len(tasks), figsize=(4.5 * len(tasks), 3.3 * len(keys)), squeeze=False)
    for row, key in zip(axes, keys):
        for ax, task in zip(row, tasks):
            for method in sorted({r["method"] for r in rows if r["task"] == task}):
                pts: dict = {}
                for r in rows:
                    if r["task"] == task and r["method"] == method and key in r:
                        pts.setdefault(r["molecules"], []).append(r[key])
                xs = sorted(pts)
                ax.plot(xs, [statistics.mean(pts[x]) for x in xs], marker="o", label=method)
                ax.fill_between(xs, [min(pts[x]) for x in xs], [max(pts[x]) for x in xs], alpha=0.2)
            ax.set(title=task, xlabel="molecules sampled", ylabel=key, xscale="log")
            ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = Path(out).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", choices=list(TASKS), default="atom_qed_sa_mw")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=2048)
    p.add_argument("--report-at", type=int, nargs="*", default=[])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--beta", type=float, default=None, help="override the task's GFlowNet reward exponent")
    p.add_argument("--lr-log-z", type=float, default=0.05, help="GFlowNet log Z learning rate")
    p.add_argument("--root", default=str(ROOT / "runs" / "gflownet_molecules"), help="sweep folder (one per task below)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (rlx.sweep process launcher)")
    p.add_argument("--out", type=str, default="", help="also write the JSON lines here (atomically, at the end)")
    p.add_argument("--summarize", nargs="+", default=None, help="print a table from JSON-lines files and exit")
    p.add_argument("--plot", type=str, default="", help="with --summarize: also write a PNG of modes vs molecules")
    p.add_argument("--random-quantiles", type=int, default=0, metavar="N",
                   help="print reward quantiles of N uniform random molecules (seed 100) for --task and exit")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.random_quantiles:
        random_quantiles(a.task, a.random_quantiles)
        return
    if a.summarize:
        summarize(a.summarize)
        if a.plot:
            plot(a.summarize, a.plot)
        return
    from rlx.sweep import run_points
    from rlx.train import compose_config, run

    threshold = task_env(a.task)[0].kwargs["mode_threshold"]
    runs = points(a, a.beta)
    results = run_points([ov for _, _, ov in runs], Path(a.root) / a.task, compose_config, run, n_jobs=a.jobs)
    rows: list[dict] = []
    for (seed, label, _), (job, summary) in zip(runs, results):
        if isinstance(summary, BaseException):
            print(f"FAILED {label} seed {seed}: {type(summary).__name__}: {summary} (see {job.run_dir}/error.txt)")
            continue
        Record(a.task, label, seed, threshold, sorted(set(a.report_at) | {a.budget}), rows).replay(job.run_dir)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, out)


if __name__ == "__main__":
    main()
