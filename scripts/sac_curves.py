"""SAC learning curves of the D4RL-style family runs (scripts/make_d4rl_family.py), next to
CleanRL's published SAC results.

For each `--work` folder: the training episode return (mean of the episodes that ended in each
window of `--window` env steps, stochastic actions) from `run/metrics.jsonl`, and the
deterministic evaluation of every snapshot (`snapshot_returns.json`), as a markdown table and one
plot. CleanRL publishes its per-step curves only as plots; the numbers it publishes are the final
(1M-step) evaluations of its Hugging Face models, printed as the reference line.

    python scripts/sac_curves.py /work/d4rl/hopper /work/d4rl/halfcheetah /work/d4rl/walker2d \
        --out docs/offline/sac_curves.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from rlx.envs.datasets import d4rl_reference

# CleanRL sac_continuous_action, Hopper-v4, 1M steps: the five seeds' published evaluations
# (huggingface.co/sdpkjc/Hopper-v4-sac_continuous_action-seed{1..5}); mean 2259
CLEANRL_FINAL = {"Hopper": [2712.63, 1481.20, 2600.97, 2819.87, 1680.67]}


def curve(work: Path, window: int) -> tuple[str, dict[int, float], dict[int, float]]:
    cfg = (work / "run" / "config.yaml").read_text()
    env = next(line.split(":", 1)[1].strip() for line in cfg.splitlines() if line.strip().startswith("id:"))
    sums: dict[int, list[float]] = defaultdict(list)
    for line in (work / "run" / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "train/episode_return" in row:
            sums[(row["step"] - 1) // window * window + window].append(row["train/episode_return"])
    train = {k: float(np.mean(v)) for k, v in sorted(sums.items())}
    snaps = {int(k): v for k, v in json.loads((work / "snapshot_returns.json").read_text()).items()}
    return env, train, snaps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work", nargs="+", help="make_d4rl_family.py --work folders")
    p.add_argument("--window", type=int, default=25_000)
    p.add_argument("--out", default=None, help="plot file (png)")
    args = p.parse_args(argv)
    curves = [curve(Path(w), args.window) for w in args.work]
    for env, train, snaps in curves:
        name = env.split("-")[0]
        print(f"\n{env}: env steps | training return (stochastic, window mean) | snapshot eval (deterministic)")
        print("|" + "|".join(["env steps", *map(str, train)]) + "|")
        print("|" + "|".join(["---"] * (len(train) + 1)) + "|")
        print("|" + "|".join(["train return", *(f"{v:.0f}" for v in train.values())]) + "|")
        print("|" + "|".join(["snapshot eval", *(f"{snaps[k]:.0f}" if k in snaps else "" for k in train)]) + "|")
        if ref := d4rl_reference(env):
            final = snaps[max(snaps)]
            print(f"final snapshot {final:.0f} = {100 * final / ref[1]:.1f}% of D4RL's expert reference {ref[1]:g}; "
                  f"D4RL-normalized {100 * (final - ref[0]) / (ref[1] - ref[0]):.1f}")
        if name in CLEANRL_FINAL:
            ref = CLEANRL_FINAL[name]
            print(f"CleanRL SAC {name}-v4 at 1M steps: {np.mean(ref):.0f} (seeds {', '.join(f'{x:.0f}' for x in ref)})")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.4), squeeze=False)
        for ax, (env, train, snaps) in zip(axes[0], curves):
            ax.plot(list(train), list(train.values()), label="training return (stochastic)")
            ax.plot(list(snaps), list(snaps.values()), "o-", label="snapshot eval (deterministic)")
            name = env.split("-")[0]
            if name in CLEANRL_FINAL:
                ax.axhline(np.mean(CLEANRL_FINAL[name]), ls="--", c="gray", label="CleanRL SAC, 1M steps (mean of 5)")
            if ref := d4rl_reference(env):
                ax.axhline(ref[1], ls=":", c="k", label="D4RL expert reference")
            ax.set(title=f"rlx SAC on {env}", xlabel="env steps (thousands)", ylabel="episode return")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}"))
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.out, dpi=110)
        print(f"\nplot: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
