"""Cost of the divergence guard (`Loop._check_finite` per update, `finite_state` per checkpoint):
PPO CartPole and IQL (pendulum-tiny) steps/s with the guard on and off (patched to a no-op),
interleaved in one process, one torch thread, >= 5 repeats; prints the median ratio on/off.

    python scripts/bench_guard.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rlx.core import loops
from rlx.core.loops import Loop

PPO = ["algo=ppo", "env=CartPole-v1", "env.num_envs=8", "algo.num_steps=64", "trainer.total_steps=8192"]
IQL = ["algo=iql", "env=pendulum-tiny", "algo.batch_size=256", "trainer.total_steps=600"]
COMMON = ["trainer.eval_every=0", "trainer.eval_episodes=1", "trainer.progress=false", "trainer.tensorboard=false",
          "trainer.checkpoint_every=50", "trainer.threads=1"]


def steps_per_s(args: list[str], guard: bool, out: Path) -> float:
    from rlx.train import main

    original_check, original_finite = Loop._check_finite, loops.finite_state
    if not guard:
        Loop._check_finite = lambda self, metrics: None
        loops.finite_state = lambda state: True
    try:
        run_dir = out / f"r{time.perf_counter_ns()}"
        assert main([*args, *COMMON, f"trainer.run_dir={run_dir}"]) == 0
    finally:
        Loop._check_finite, loops.finite_state = original_check, original_finite
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [v for r in rows for k, v in r.items() if k.startswith("time/") and k.endswith("_per_s")]
    return statistics.median(rates[1:])  # the first iteration includes warm-up


def check_cost(repeats: int = 200_000) -> float:
    """Microseconds per `_check_finite` call on a PPO-sized metrics dict (9 entries)."""
    loop = loops.OfflineLoop.__new__(loops.OfflineLoop)
    metrics = {"loss/policy": 0.1, "loss/value": 0.2, "loss/entropy": 0.6, "train/approx_kl": 0.01,
               "train/clipfrac": 0.1, "train/lr": 1e-3, "train/explained_variance": 0.5,
               "train/episode_return": 20.0, "train/episode_length": 20.0}
    t0 = time.perf_counter()
    for _ in range(repeats):
        loop._check_finite(metrics)
    return (time.perf_counter() - t0) / repeats * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"_check_finite: {check_cost():.2f} us per update (PPO metrics dict)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        os.environ["RLX_DATA"] = str(out / "data")
        from rlx.envs.datasets import make_tiny, save_dataset

        save_dataset("pendulum-tiny", make_tiny(num_steps=4000, seed=0))
        for name, cmd in (("ppo_cartpole env_steps/s", PPO), ("iql grad_steps/s", IQL)):
            on, off = [], []
            for _ in range(args.repeats):  # interleaved: load drifts hit both alike
                off.append(steps_per_s(cmd, False, out))
                on.append(steps_per_s(cmd, True, out))
            ratio = statistics.median(a / b for a, b in zip(on, off))
            print(f"{name}: guard off {statistics.median(off):.0f}, on {statistics.median(on):.0f}, "
                  f"median ratio on/off {ratio:.3f} ({args.repeats} repeats)")


if __name__ == "__main__":
    main()
