"""HILP goal reaching vs GCBC and GCIQL on the point-mass mazes (docs/hilp.md).

    python scripts/hilp_maze.py --datasets-only          # pointmaze-medium / -large datasets
    python scripts/hilp_maze.py --steps 20000 --seeds 0 1 2 --jobs 2
    python scripts/hilp_maze.py --plot-only               # table + phi-distance plot from finished runs

Every run is `python -m rlx.train algo=<a> env=pointmaze-<maze> seed=<s> ...`, run through
`rlx.sweep.run_points` into runs/hilp_maze/<config hash> (a finished run is not repeated, an
interrupted one resumes from its checkpoint; `--jobs` runs at a time). Results go to
docs/hilp/maze_results.json and the phi-distance plot to docs/hilp/phi_distance_<maze>.png;
`python -m rlx.report runs/hilp_maze --metric eval/success` gives the IQM table and curves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "hilp"
sys.path.insert(0, str(ROOT))

from rlx.core.buffers import EpisodeStore  # noqa: E402
from rlx.core.checkpoint import atomic_write  # noqa: E402
from rlx.envs.datasets import OfflineDataset, save_dataset  # noqa: E402
from rlx.envs.pointmaze import SPEED, make_maze_dataset, shortest_path_table, walls  # noqa: E402


def make_datasets(episodes: int, steps: int) -> None:
    for i, maze in enumerate(("medium", "large")):
        rows = make_maze_dataset(maze, episodes, steps, noise=0.5, seed=i)
        meta = {"env_id": f"rlx/PointMaze-{maze.capitalize()}-v0", "maze": maze,
                "behavior": "BFS waypoint controller to random goal cells + N(0, 0.5) action noise", "seed": i}
        print(save_dataset(f"pointmaze-{maze}", OfflineDataset(EpisodeStore.from_flat(rows), meta)))


def points(args) -> list[tuple[str, str, int, list[str]]]:
    """(maze, algo, seed, overrides) of every run, seed-major: partial results stay balanced."""
    hidden = "[" + ",".join(str(h) for h in args.hidden) + "]"
    return [(m, a, s, [f"algo={a}", f"env=pointmaze-{m}", f"seed={s}", f"trainer.total_steps={args.steps}",
                       f"trainer.eval_every={args.steps // 4}", "trainer.eval_episodes=50", "trainer.threads=1",
                       "trainer.tensorboard=false", "trainer.checkpoint_every=2000", f"algo.hidden={hidden}",
                       f"algo.batch_size={args.batch}"])
            for s in args.seeds for m in args.mazes for a in args.algos]


def table(results: dict) -> str:
    lines = ["| maze | algo | success (mean ± std over seeds) | per seed |", "|---|---|---|---|"]
    for maze, algos in results.items():
        for algo, per_seed in algos.items():
            s = np.array([r["eval/success"] for r in per_seed.values()])
            lines.append(f"| {maze} | {algo} | {s.mean():.2f} ± {s.std():.2f} | "
                         + ", ".join(f"{x:.2f}" for x in s) + " |")
    return "\n".join(lines)


@torch.no_grad()
def phi_distance_plot(maze: str, run_dir: Path, pairs: int = 3000) -> dict:
    """||phi(s) - phi(g)|| vs the true temporal distance (BFS shortest path in cells / SPEED,
    i.e. steps at full speed) on state pairs from held-out episodes (a new controller seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlx.runs import load_learner

    learner, _, _ = load_learner(run_dir)
    rows = make_maze_dataset(maze, 20, 500, noise=0.5, seed=1234)  # held out: never trained on
    gen = torch.Generator().manual_seed(0)
    i, j = torch.randint(len(rows), (2, pairs), generator=gen)
    s, g = rows["obs"][i], rows["obs"][j]
    phi_d = (learner.embed(s) - learner.embed(g)).norm(dim=-1).numpy()
    dist, _ = shortest_path_table(walls(maze))
    cs, cg = np.rint(s.numpy()[:, ::-1]).astype(int), np.rint(g.numpy()[:, ::-1]).astype(int)
    true_d = dist[cg[:, 0], cg[:, 1], cs[:, 0], cs[:, 1]] / SPEED
    gamma = learner.cfg.discount
    spearman = float(np.corrcoef(np.argsort(np.argsort(phi_d)), np.argsort(np.argsort(true_d)))[0, 1])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(true_d, phi_d, s=3, alpha=0.3, label="held-out pairs")
    grid = np.linspace(0, true_d.max(), 200)
    ax.plot(grid, (1 - gamma ** grid) / (1 - gamma), "r", label=r"$(1-\gamma^d)/(1-\gamma)$")
    ax.set_xlabel("true temporal distance d (shortest path, steps)")
    ax.set_ylabel(r"$\|\phi(s)-\phi(g)\|$")
    ax.set_title(f"HILP phi, {maze} maze (Spearman {spearman:.2f})")
    ax.legend()
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"phi_distance_{maze}.png"
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return {"maze": maze, "run": str(run_dir), "pairs": pairs, "spearman": spearman, "plot": str(path.relative_to(ROOT))}


@torch.no_grad()
def planning_eval(maze: str, run_dir: Path, recursions: tuple[int, ...] = (0, 1, 3)) -> dict:
    """Success of one trained HILP checkpoint with goal prompting through 0, 1, 3 midpoint halvings (no
    retraining; the same 50 evaluation episodes for every k; 50 nearest candidates averaged)."""
    from rlx.envs.pointmaze import evaluate_goals
    from rlx.runs import load_learner

    learner, _, _ = load_learner(run_dir)
    out = {}
    for k in recursions:
        learner.cfg.plan_recursions = k
        policy = lambda o, g: learner.act(o, True, goal=g)["action"]  # noqa: E731
        out[k] = evaluate_goals(policy, maze, 10, seed=10_000)["eval/success"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets-only", action="store_true")
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--mazes", nargs="+", default=["medium", "large"])
    p.add_argument("--algos", nargs="+", default=["hilp", "gcbc", "gciql"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=20_000, help="gradient steps per run")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", nargs="+", type=int, default=[256, 256])
    p.add_argument("--episodes", type=int, default=200, help="dataset episodes per maze")
    p.add_argument("--episode-steps", type=int, default=500)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--root", default=str(ROOT / "runs" / "hilp_maze"))
    p.add_argument("--tag", default="", help="suffix of the results file (maze_results<tag>.json); skips the plot")
    p.add_argument("--no-post", action="store_true", help="train only: no results file, plot or planning evaluation")
    args = p.parse_args()
    if args.datasets_only:
        make_datasets(args.episodes, args.episode_steps)
        return
    from rlx.sweep import plan_points, run_points
    from rlx.train import compose_config, run

    runs = points(args)
    overrides = [ov for *_, ov in runs]
    if args.plot_only:  # the finished runs of this configuration, nothing trained
        out = [(job, job.summary()) for job in plan_points(overrides, args.root, compose_config)]
    else:
        out = run_points(overrides, args.root, compose_config, run, n_jobs=args.jobs)
    if args.no_post:
        return
    results: dict = {}
    run_dirs: dict = {}
    for (m, a, s, _), (job, summary) in zip(runs, out):
        run_dirs[(m, a, s)] = Path(job.run_dir)
        if isinstance(summary, dict):
            results.setdefault(m, {}).setdefault(a, {})[s] = summary
            print(f"{m:6s} {a:6s} s{s}: success {summary.get('eval/success'):.2f}", flush=True)
        elif summary is not None:
            print(f"FAILED {m} {a} s{s}: {type(summary).__name__}: {summary} (see {job.run_dir}/error.txt)", flush=True)
    hilp = {(m, s): run_dirs[(m, a, s)] for m, algos in results.items() for a, seeds in algos.items() for s in seeds
            if a == "hilp"}
    plots = [] if args.tag else [phi_distance_plot(m, hilp[(m, 0)]) for m in args.mazes if (m, 0) in hilp]
    planning = {m: {s: planning_eval(m, hilp[(m, s)]) for s in args.seeds if (m, s) in hilp}  # finished runs only
                for m in args.mazes} if not args.tag else {}
    report = {"steps": args.steps, "planning_success": planning, "batch": args.batch, "hidden": args.hidden, "results": results, "phi_distance": plots,
              "table": table(results)}
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write(OUT / f"maze_results{args.tag}.json", lambda f: f.write(json.dumps(report, indent=1).encode()))
    print(report["table"])
    print(json.dumps(plots, indent=1))


if __name__ == "__main__":
    main()
