"""DDPO on the digits diffusion model: does each reward improve over the base model, and
does DDPO-IS need fewer samples than DDPO-SF?

    python scripts/ddpo_digits.py --rewards compressibility incompressibility alignment aesthetic \
        --variants is sf --iterations 20 --eval-every 5 --out runs/ddpo_digits

Every (reward, variant) is `python -m rlx.train algo=ddpo|ddpo_sf algo.reward=<reward>
trainer.total_steps=<iterations x num_samples>` (a fresh copy of the cached base model,
`python -m rlx.envs.diffusion pretrain`), one torch thread, through `rlx.sweep.run_points` into
<out>/<config hash> (a finished run is not repeated, an interrupted one resumes; `--jobs` runs
at a time). The curve is read from each run's `metrics.jsonl` (its fixed-noise evaluation every
`--eval-every` iterations, seed + 10000), the "before" point is the same evaluation of the
untrained base model. Writes `<out>/results.json` (one JSON object per run is also printed),
reward curves `<out>/curves.png` (eval reward vs samples, one panel per reward) and
before/after sample grids `<out>/<reward>_<variant>_{before,after}.png` (after: the run's last
`samples/stepNNNNNNN.png`). `--set key=value ...` adds overrides to every run.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

KEYS = ("eval/reward_mean", "eval/accuracy", "eval/diversity", "eval/kl_to_base")


def points(args) -> list[list[str]]:
    """One list of overrides per (reward, variant)."""
    out = []
    for reward in args.rewards:
        for variant in args.variants:
            inner = [f"algo.num_minibatches={args.num_minibatches}", f"algo.inner_epochs={args.inner_epochs}"]
            out.append([f"algo={'ddpo' if variant == 'is' else 'ddpo_sf'}", f"algo.reward={reward}", f"seed={args.seed}",
                        f"trainer.total_steps={args.iterations * args.num_samples}",
                        f"trainer.eval_every={args.eval_every * args.num_samples}", "trainer.log_every=1",
                        "trainer.threads=1", "trainer.tensorboard=false", f"algo.lr={args.lr}",
                        f"algo.num_samples={args.num_samples}", f"algo.sample_steps={args.sample_steps}",
                        f"algo.clip_range={args.clip_range}", f"algo.eval_samples={args.eval_samples}",
                        *(inner if variant == "is" else []), *args.set])
    return out


def evaluate_base(cfg) -> tuple[dict[str, float], torch.Tensor]:
    """The run's own evaluation (same samples, prompts and noise seed) of the untrained base model."""
    from rlx.algos.ddpo import DDPO, check, evaluate_ddpo
    from rlx.envs.diffusion import load_base_model
    from rlx.models.diffusion import NoiseSchedule

    base_cfg, reward_fn = check(cfg)
    learner = DDPO(cfg.algo, load_base_model(base_cfg, cfg.algo.base_checkpoint), NoiseSchedule(base_cfg),
                   base_cfg.image_size)
    return evaluate_ddpo(learner, reward_fn, cfg.algo.eval_samples, seed=cfg.seed + 10_000)


def read_run(run_dir: Path) -> list[dict]:
    """The evaluations of one run from its metrics.jsonl: [{samples, train/reward_mean, eval/...}]."""
    by_step: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_step.setdefault(row["step"], {}).update(row)
    return [{"samples": step, "train/reward_mean": row.get("train/reward_mean"), **{k: row[k] for k in KEYS}}
            for step, row in sorted(by_step.items()) if "eval/reward_mean" in row]


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rewards = sorted({r["reward"] for r in results})
    fig, axes = plt.subplots(1, len(rewards), figsize=(4 * len(rewards), 3.2), squeeze=False)
    for ax, reward in zip(axes[0], rewards):
        for r in results:
            if r["reward"] == reward:
                ax.plot([c["samples"] for c in r["curve"]], [c["eval/reward_mean"] for c in r["curve"]],
                        marker="o", label=f"DDPO-{r['variant'].upper()}")
        ax.set(title=reward, xlabel="samples", ylabel="eval reward (fixed noise)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rewards", nargs="+", default=["compressibility", "incompressibility", "alignment", "aesthetic"])
    p.add_argument("--variants", nargs="+", default=["is"], choices=["is", "sf"])
    p.add_argument("--iterations", type=int, default=20, help="rounds of data collection")
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--num-minibatches", type=int, default=4, help="DDPO-IS optimizer steps per inner epoch")
    p.add_argument("--inner-epochs", type=int, default=1)
    p.add_argument("--clip-range", type=float, default=1e-4)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--eval-samples", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="more overrides for every run")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (rlx.sweep process launcher)")
    p.add_argument("--out", default="runs/ddpo_digits")
    p.add_argument("--plot-only", nargs="+", metavar="RESULTS_JSON",
                   help="only draw <out>/curves.png from earlier results.json files (e.g. an IS and an SF run)")
    args = p.parse_args()
    out = Path(args.out)
    if args.plot_only:
        results = [r for path in args.plot_only for r in json.loads(Path(path).read_text())]
        out.mkdir(parents=True, exist_ok=True)
        plot(results, out / "curves.png")
        return
    torch.set_num_threads(1)
    from rlx.core.checkpoint import atomic_write
    from rlx.envs.diffusion import save_grid
    from rlx.sweep import run_points
    from rlx.train import compose_config, run

    pts = points(args)
    done = run_points(pts, out, compose_config, run, n_jobs=args.jobs)
    failed = [job for job, summary in done if isinstance(summary, BaseException)]
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed: " + ", ".join(f"{j.run_dir}/error.txt" for j in failed))
    results, before_of = [], {}
    for point, (job, _) in zip(pts, done):
        cfg, run_dir = compose_config(point), Path(job.run_dir)
        reward, variant = cfg.algo.reward, cfg.algo.variant
        if reward not in before_of:  # the base model's evaluation depends on the reward only
            before_of[reward] = evaluate_base(cfg)
        metrics, images = before_of[reward]
        save_grid(images, out / f"{reward}_{variant}_before.png", nrow=len(cfg.algo.prompts))
        shutil.copy(max((run_dir / "samples").glob("step*.png")), out / f"{reward}_{variant}_after.png")
        curve = [{"samples": 0, **{k: metrics[k] for k in KEYS}}, *read_run(run_dir)]
        seconds = (run_dir / "summary.json").stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime
        results.append({"reward": reward, "variant": variant, "seconds": round(seconds, 1), "run_dir": str(run_dir),
                        "before": curve[0], "after": curve[-1], "curve": curve,
                        "config": {k: getattr(cfg.algo, k) for k in ("lr", "num_samples", "sample_steps",
                                                                      "num_minibatches", "inner_epochs", "clip_range", "eta")}})
    for r in results:
        b, a = r["before"], r["after"]
        print(json.dumps({"reward": r["reward"], "variant": r["variant"], "reward_before": b["eval/reward_mean"],
                          "reward_after": a["eval/reward_mean"], "accuracy_before": b["eval/accuracy"],
                          "accuracy_after": a["eval/accuracy"], "diversity_before": b["eval/diversity"],
                          "diversity_after": a["eval/diversity"], "kl_to_base": a["eval/kl_to_base"],
                          "seconds": r["seconds"]}))
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=1).encode()))
    plot(results, out / "curves.png")


if __name__ == "__main__":
    main()
