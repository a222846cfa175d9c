"""HyperGrid D=4, H=8: L1 to the target vs trajectories, rlx vs torchgfn, TB / DB / SubTB / FM.

Both sides: batch 16, MLP 2 x 256 (ReLU), Adam lr 1e-3 (log Z lr 0.1 for TB), uniform P_B,
on-policy sampling, rewards R0=0.1, R1=0.5, R2=2. L1 is the total variation 0.5 sum |P_T - R/Z|
with P_T the *exact* terminal distribution of each learned forward policy (dynamic
programming over the 4096 grid points; torchgfn's policy tables are exported and scored by the
same rlx code). Writes JSON lines and a PNG.
    OMP_NUM_THREADS=1 python scripts/gflownet_hypergrid.py --iters 1000 --out runs/gflownet_hypergrid
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gflownet_common import run_torchgfn  # noqa: E402

from rlx.algos.gflownet import GFlowNet, GFlowNetConfig, MLPPolicy  # noqa: E402
from rlx.envs.hypergrid import HyperGrid, l1_distance  # noqa: E402


def rlx_curve(objective: str, iters: int, every: int, seed: int, batch: int) -> list[tuple[int, float]]:
    torch.manual_seed(seed)
    env = HyperGrid(4, 8)
    learner = GFlowNet(GFlowNetConfig(objective=objective, batch_size=batch), env, MLPPolicy(env, 256, 2))
    learner.generator.manual_seed(seed)
    target, curve = env.target_distribution(), []
    for it in range(1, iters + 1):
        store, _, log_r = learner.sample(batch)
        learner.update(store.to_batch(log_reward=log_r))
        if it % every == 0:
            curve.append((it * batch, l1_distance(env.terminal_distribution(learner.policy_log_probs), target)))
    return curve


def torchgfn_curve(objective: str, iters: int, every: int, seed: int, batch: int) -> list[tuple[int, float]]:
    env = HyperGrid(4, 8)
    target = env.target_distribution()
    marks = list(range(every, iters + 1, every))
    out = run_torchgfn(objective=objective, iters=iters, seed=seed, batch=batch, warmup=0,
                       checkpoints=",".join(map(str, marks)))
    curve = []
    for it in marks:
        table = torch.tensor(out["tables"][str(it)])  # [S, D+1] log P_F, rlx action order
        curve.append((it * batch, l1_distance(env.terminal_distribution(lambda s, t=table: t[env.state_index(s)]), target)))
    return curve


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--objectives", nargs="+", default=["tb", "db", "subtb", "fm"])
    p.add_argument("--out", default="runs/gflownet_hypergrid")
    a = p.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for obj in a.objectives:
        for impl, fn in (("rlx", rlx_curve), ("torchgfn", torchgfn_curve)):
            curve = fn(obj, a.iters, a.every, a.seed, a.batch)
            results[(impl, obj)] = curve
            print(json.dumps({"impl": impl, "objective": obj, "seed": a.seed,
                              "curve": [[n, round(v, 4)] for n, v in curve]}), flush=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(a.objectives), figsize=(4 * len(a.objectives), 3.2), sharey=True)
    for ax, obj in zip(list(axes) if len(a.objectives) > 1 else [axes], a.objectives):
        for impl, style in (("rlx", "-"), ("torchgfn", "--")):
            n, v = zip(*results[(impl, obj)])
            ax.plot(n, v, style, label=impl)
        ax.set_title(f"HyperGrid D=4 H=8, {obj.upper()}")
        ax.set_xlabel("trajectories")
        ax.set_yscale("log")
    axes_list = list(axes) if len(a.objectives) > 1 else [axes]
    axes_list[0].set_ylabel("exact L1 (total variation)")
    axes_list[0].legend()
    fig.tight_layout()
    fig.savefig(out / "hypergrid_l1.png", dpi=120)


if __name__ == "__main__":
    main()
