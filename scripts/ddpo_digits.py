"""DDPO on the digits diffusion model: does each reward improve over the base model, and
does DDPO-IS need fewer samples than DDPO-SF?

    python scripts/ddpo_digits.py --rewards compressibility incompressibility alignment aesthetic \
        --variants is sf --iterations 20 --out runs/ddpo_digits

For every (reward, variant) it fine-tunes a fresh copy of the cached base model
(`python -m rlx.envs.diffusion pretrain`), evaluating on fixed noise before, during and
after. Writes `<out>/results.json` (one JSON object per run is also printed), reward
curves `<out>/curves.png` (eval reward vs samples, one panel per reward) and before/after
sample grids `<out>/<reward>_<variant>_{before,after}.png`.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch


def run(reward: str, variant: str, iterations: int, eval_every: int, base, base_cfg, out: Path, args) -> dict:
    from rlx.algos.ddpo import DDPO, DDPOConfig, evaluate_ddpo
    from rlx.envs.diffusion import save_grid
    from rlx.envs.image_rewards import get_reward
    from rlx.models.diffusion import NoiseSchedule

    torch.manual_seed(args.seed)
    algo = DDPOConfig(variant=variant, reward=reward, lr=args.lr, num_samples=args.num_samples,
                      sample_steps=args.sample_steps, num_minibatches=1 if variant == "sf" else args.num_minibatches,
                      inner_epochs=1 if variant == "sf" else args.inner_epochs, clip_range=args.clip_range,
                      eval_samples=args.eval_samples)
    learner = DDPO(algo, copy.deepcopy(base), NoiseSchedule(base_cfg), base_cfg.image_size)
    reward_fn = get_reward(reward)
    gen = torch.Generator().manual_seed(args.seed)
    curve = []
    before, images = evaluate_ddpo(learner, reward_fn, args.eval_samples)
    save_grid(images, out / f"{reward}_{variant}_before.png", nrow=10)
    curve.append({"samples": 0, **before})
    t0 = time.time()
    for it in range(1, iterations + 1):
        prompts = torch.randint(10, (args.num_samples,), generator=gen)
        steps = learner.act(prompts, generator=gen)
        images = steps["action"][-1]  # [N, 1, S, S] the final images
        steps["reward"] = torch.zeros(steps.shape)
        steps["reward"][-1] = reward_fn(images, prompts)
        train = learner.update(steps)
        if it % eval_every == 0 or it == iterations:
            metrics, images = evaluate_ddpo(learner, reward_fn, args.eval_samples)
            curve.append({"samples": it * args.num_samples, "train/reward_mean": train["train/reward_mean"], **metrics})
            print(json.dumps({"reward": reward, "variant": variant, **curve[-1]}), flush=True)
    save_grid(images, out / f"{reward}_{variant}_after.png", nrow=10)
    return {"reward": reward, "variant": variant, "seconds": round(time.time() - t0, 1), "before": before,
            "after": curve[-1], "curve": curve, "config": {k: getattr(algo, k) for k in (
                "lr", "num_samples", "sample_steps", "num_minibatches", "inner_epochs", "clip_range", "eta")}}


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
    p.add_argument("--out", default="runs/ddpo_digits")
    p.add_argument("--plot-only", nargs="+", metavar="RESULTS_JSON",
                   help="only draw <out>/curves.png from earlier results.json files (e.g. an IS and an SF run)")
    args = p.parse_args()
    if args.plot_only:
        results = [r for path in args.plot_only for r in json.loads(Path(path).read_text())]
        Path(args.out).mkdir(parents=True, exist_ok=True)
        plot(results, Path(args.out) / "curves.png")
        return
    torch.set_num_threads(1)
    from rlx.core.checkpoint import atomic_write
    from rlx.envs.diffusion import load_base_model
    from rlx.models.diffusion import DigitsDiffusionConfig

    base_cfg = DigitsDiffusionConfig()
    base = load_base_model(base_cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [run(reward, variant, args.iterations, args.eval_every, base, base_cfg, out, args)
               for reward in args.rewards for variant in args.variants]
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
