"""`python -m rlx.report <run or sweep dir> [--metric eval/normalized_score] [--out DIR]`

Finds every run below the directory (a folder with `config.yaml` and `summary.json`),
groups them by (algorithm, env, reward) with seeds as repetitions and prints:

* per (algorithm x env x reward): the interquartile mean (IQM) of the final metric across
  seeds and a 95% percentile-bootstrap confidence interval;
* per (algorithm x reward) over envs: the IQM over all (env, seed) scores and a 95%
  *stratified* bootstrap CI (seeds resampled with replacement within each env), as
  rliable does (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice").

IQM follows rliable/scipy: the mean after dropping floor(n/4) scores at each end. It writes
`learning_curves.png` (mean over seeds of the metric vs step, one panel per env) and
`bars.png` (IQM with CI per algorithm x reward) to `--out` (default: the directory itself),
plus `report.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["aggregate", "bootstrap_ci", "find_runs", "iqm", "main", "mean_interval", "plot_xy", "xy_groups"]


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: drop floor(n/4) lowest and highest, average the rest."""
    x = np.sort(np.asarray(scores, dtype=float).ravel())
    k = int(0.25 * x.size)
    return float(x[k: x.size - k].mean())


def bootstrap_ci(strata: list[np.ndarray], stat=iqm, reps: int = 2000, conf: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile CI of `stat` over the pooled scores, resampling with replacement within each
    stratum (each env's seeds) independently: the stratified bootstrap."""
    rng = np.random.default_rng(seed)
    stats = np.empty(reps)
    for i in range(reps):
        stats[i] = stat(np.concatenate([s[rng.integers(0, s.size, s.size)] for s in strata]))
    lo, hi = np.quantile(stats, [(1 - conf) / 2, (1 + conf) / 2])
    return float(lo), float(hi)


def _reward_label(reward: dict[str, Any]) -> str:
    label = reward.get("mode", "original")
    if reward.get("scale", 1.0) != 1.0 or reward.get("shift", 0.0) != 0.0:
        label += f"*{reward.get('scale', 1.0):g}+{reward.get('shift', 0.0):g}"
    return label


def _env_label(env: dict[str, Any]) -> str:
    """The env preset's name, plus `[dataset]` when `env.dataset` was pointed at other data
    (e.g. `env=hopper-medium env.dataset=hopper-s-medium`), so such runs never pool together."""
    name = env["name"]
    data = Path(str(env.get("dataset") or name)).name.removesuffix(".hdf5")
    return name if data == name else f"{name}[{data}]"


def _algo_label(name: str, algo: dict[str, Any]) -> str:
    """`iql[sarsa,ddpg_bc]+opex`: the `algo=` choice plus the offline switches when they are set
    on the command line rather than by a preset."""
    label = name
    if name == "iql":
        label += f"[{algo['value']},{algo['extraction']}]"
    if algo.get("test_time", "none") != "none":
        label += f"+{algo['test_time']}"
    if name.startswith("cppo") or name == "rlhf":  # the method, then `@` and the retention coefficient swept along a front
        variant = [algo["retention"]] + [algo[k] for k, default in (("weighting", "paper"), ("anchor", "prev_task"))
                                         if algo.get(k, default) != default]
        label += f"[{','.join(variant)}]" + ("" if algo["retention"] == "none" else f"@{algo['retention_coef']:g}")
    return label


def find_runs(root: Path) -> list[dict[str, Any]]:
    import yaml

    from rlx.core.logging import read_metrics

    runs = []
    for summary in sorted(root.rglob("summary.json")):
        run_dir = summary.parent
        if not (run_dir / "config.yaml").is_file():
            continue
        try:
            cfg = yaml.safe_load((run_dir / "config.yaml").read_text())  # safe_load: no Python objects
            name = cfg.get("algorithm") or cfg["algo"]["name"]  # runs written before `algorithm` carried algo.name
            row = {"dir": str(run_dir), "algo": _algo_label(name, cfg["algo"]), "env": _env_label(cfg["env"]),
                   "reward": _reward_label(cfg.get("reward", {})), "seed": cfg.get("seed", 0),
                   "summary": json.loads(summary.read_text())}
        except (yaml.YAMLError, ValueError, KeyError, TypeError, AttributeError) as e:
            print(f"rlx.report: warning: skipping {run_dir}: unreadable config.yaml/summary.json "
                  f"({' '.join(str(e).split())[:160]})", file=sys.stderr)
            continue
        metrics = run_dir / "metrics.jsonl"
        row["curve"] = read_metrics(metrics) if metrics.is_file() else []  # a torn last line is skipped
        runs.append(row)
    return runs


def aggregate(runs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    cells: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in runs:
        if r["summary"].get(metric) is not None:
            cells[(r["algo"], r["env"], r["reward"])].append(float(r["summary"][metric]))
    per_cell = []
    for (algo, env, reward), scores in sorted(cells.items()):
        x = np.asarray(scores)
        lo, hi = bootstrap_ci([x])
        per_cell.append({"algo": algo, "env": env, "reward": reward, "n": x.size, "iqm": iqm(x), "ci": [lo, hi],
                         "mean": float(x.mean()), "std": float(x.std())})
    groups: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    for (algo, env, reward), scores in sorted(cells.items()):
        groups[(algo, reward)].append(np.asarray(scores))
    per_group = []
    for (algo, reward), strata in sorted(groups.items()):
        lo, hi = bootstrap_ci(strata)
        per_group.append({"algo": algo, "reward": reward, "envs": len(strata), "n": int(sum(s.size for s in strata)),
                          "iqm": iqm(np.concatenate(strata)), "ci": [lo, hi]})
    return {"metric": metric, "cells": per_cell, "groups": per_group}


def mean_interval(scores, conf: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (nan with one score)."""
    from scipy import stats

    x = np.asarray(scores, dtype=float)
    if x.size < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(stats.t.ppf((1 + conf) / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))


def xy_groups(runs: list[dict[str, Any]], x: str, y: str) -> list[dict[str, Any]]:
    """Per (algo, env, reward) group with both metrics: mean and 95% t-interval of each over seeds."""
    cells: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in runs:
        if r["summary"].get(x) is not None and r["summary"].get(y) is not None:
            cells[(r["algo"], r["env"], r["reward"])].append((float(r["summary"][x]), float(r["summary"][y])))
    rows = []
    for (algo, env, reward), pairs in sorted(cells.items()):
        (mx, hx), (my, hy) = mean_interval([p[0] for p in pairs]), mean_interval([p[1] for p in pairs])
        rows.append({"algo": algo, "env": env, "reward": reward, "n": len(pairs), "x": mx, "x_ci": hx, "y": my, "y_ci": hy})
    return rows


def plot_xy(rows: list[dict[str, Any]], x: str, y: str, out: Path) -> Path:
    """`y` against `x`, one point per group with 95% intervals on both axes; groups named
    `family@value` (a swept coefficient) are joined by a line in the order of the value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlx.core.checkpoint import atomic_write

    families: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        families[r["algo"].split("@")[0] + (f" {r['env']} {r['reward']}" if len({(q["env"], q["reward"]) for q in rows}) > 1 else "")].append(r)
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (family, members) in enumerate(sorted(families.items())):
        members.sort(key=lambda r: float(r["algo"].split("@")[1]) if "@" in r["algo"] else 0.0)
        color = f"C{i % 10}"
        ax.errorbar([r["x"] for r in members], [r["y"] for r in members], xerr=[r["x_ci"] for r in members],
                    yerr=[r["y_ci"] for r in members], color=color, marker="o", capsize=3, label=family,
                    ls="-" if len(members) > 1 else "none")
        for r in members:
            if "@" in r["algo"]:
                ax.annotate(r["algo"].split("@")[1], (r["x"], r["y"]), fontsize=7, color=color,
                            xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{y} vs {x}\n(mean over seeds, 95% t-intervals; labels: swept coefficient)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = atomic_write(out / "xy.png", lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return path


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def fmt(r, c):
        if c == "iqm [95% CI]":
            return f"{r['iqm']:.1f} [{r['ci'][0]:.1f}, {r['ci'][1]:.1f}]"
        return str(r[c])

    body = [[fmt(r, c) for c in cols] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def plot(runs: list[dict[str, Any]], agg: dict[str, Any], metric: str, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlx.core.checkpoint import atomic_write

    written = []
    envs = sorted({r["env"] for r in runs})
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.6), squeeze=False)
    for ax, env in zip(axes[0], envs):
        series: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in runs:
            if r["env"] != env:
                continue
            for row in r["curve"]:
                if row.get(metric) is not None:
                    series[(r["algo"], r["reward"])][row["step"]].append(row[metric])
        for (algo, reward), points in sorted(series.items()):
            steps = sorted(points)
            mean = np.array([np.mean(points[s]) for s in steps])
            lo = np.array([np.min(points[s]) for s in steps])
            hi = np.array([np.max(points[s]) for s in steps])
            ax.plot(steps, mean, label=f"{algo} {reward}")
            ax.fill_between(steps, lo, hi, alpha=0.2)
        ax.set_title(env)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.legend(fontsize=6)
    fig.tight_layout()
    written.append(atomic_write(out / "learning_curves.png", lambda f: fig.savefig(f, format="png", dpi=110)))
    plt.close(fig)
    groups = agg["groups"]
    if groups:
        fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(groups) + 2), 3.6))
        x = np.arange(len(groups))
        vals = np.array([g["iqm"] for g in groups])
        err = np.array([[g["iqm"] - g["ci"][0] for g in groups], [g["ci"][1] - g["iqm"] for g in groups]])
        ax.bar(x, vals, yerr=err, capsize=3, color=[f"C{i % 10}" for i in range(len(groups))])
        ax.set_xticks(x, [f"{g['algo']}\n{g['reward']}" for g in groups], fontsize=6, rotation=30)
        ax.set_ylabel(f"IQM {metric} (95% CI)")
        fig.tight_layout()
        written.append(atomic_write(out / "bars.png", lambda f: fig.savefig(f, format="png", dpi=110)))
        plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rlx.report", description=__doc__.split("\n\n")[1])
    p.add_argument("path", help="a run directory or a sweep directory")
    p.add_argument("--metric", default=None, help="summary key to aggregate (default: eval/normalized_score if "
                   "present, else eval/return_mean)")
    p.add_argument("--out", default=None, help="where to write PNGs and report.json (default: PATH)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--xy", nargs=2, metavar=("X", "Y"), help="also tabulate and plot summary key Y against X per "
                   "group (mean and 95%% t-interval over seeds), e.g. --xy final/plasticity final/forgetting")
    args = p.parse_args(argv)
    root = Path(args.path)
    if not root.is_dir():
        print(f"rlx.report: error: {root} is not a directory", file=sys.stderr)
        return 2
    runs = find_runs(root)
    if not runs:
        print(f"rlx.report: error: no finished runs (config.yaml + summary.json) under {root}", file=sys.stderr)
        return 2
    metric = args.metric or ("eval/normalized_score" if any("eval/normalized_score" in r["summary"] for r in runs)
                             else "eval/return_mean")
    agg = aggregate(runs, metric)
    if not agg["cells"]:
        print(f"rlx.report: error: no run has {metric!r} in its summary.json", file=sys.stderr)
        return 2
    print(f"{len(runs)} runs, metric {metric}, IQM across seeds with 95% bootstrap CI\n")
    print(_table(agg["cells"], ["algo", "env", "reward", "n", "iqm [95% CI]"]))
    print("\nper algorithm x reward over envs (stratified bootstrap):\n")
    print(_table(agg["groups"], ["algo", "reward", "envs", "n", "iqm [95% CI]"]))
    out = Path(args.out) if args.out else root
    out.mkdir(parents=True, exist_ok=True)
    from rlx.core.checkpoint import atomic_write

    rows = []
    if args.xy:
        rows = xy_groups(runs, *args.xy)
        if not rows:
            print(f"rlx.report: error: no run has both {args.xy[0]!r} and {args.xy[1]!r} in its summary.json", file=sys.stderr)
            return 2
        print(f"\n{args.xy[1]} vs {args.xy[0]} (mean over seeds +/- 95% t-interval half-width):\n")
        print(_table([{**r, "x": f"{r['x']:.3f} +/- {r['x_ci']:.3f}", "y": f"{r['y']:.3f} +/- {r['y_ci']:.3f}"} for r in rows],
                     ["algo", "env", "reward", "n", "x", "y"]))
    atomic_write(out / "report.json", lambda f: f.write(json.dumps({**agg, "xy": rows}, indent=2).encode()))
    if not args.no_plots:
        for path in plot(runs, agg, metric, out) + ([plot_xy(rows, *args.xy, out)] if rows else []):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
