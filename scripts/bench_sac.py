"""rlx SAC vs Stable-Baselines3 SAC: env steps per second at matched settings, in one process,
interleaved (rlx, sb3, rlx, sb3, ...), one torch thread each.

Matched: the same env, 256x256 ReLU actor and twin critics, batch 256, one gradient update per
env step (utd 1 / train_freq 1, gradient_steps 1), the same `learning_starts` of uniform random
actions, Adam lr 3e-4 for actor, critics and temperature, automatic entropy tuning (target
-act_dim), tau 0.005, actor and targets updated every step (rlx `policy_frequency=1`, SB3's
schedule). Time is the process CPU time of each run (`time.process_time`), so other processes on
a shared machine count less than with wall time (both are printed). Prints one JSON line per run,
then the per-repeat ratios rlx/sb3 (min / median / max), then where rlx's time goes. `--json`
prints the one record of scripts/_speed_json.py instead (`correct`: rlx's losses stayed finite);
`--quick` is 800 steps (300 random) per run, 5 repeats, no profile. `--batch` sets both batch
sizes (small batches: where per-op overhead, not arithmetic, dominates). rlx runs with subnormal
floats flushed to zero (`trainer.flush_denormal`, its default); `--sb3-flush` flushes them during
SB3's runs too, so a ratio can be split into the code's part and the subnormals' part (in short runs
nothing is subnormal yet and the two agree).

    python scripts/bench_sac.py [--env Hopper-v5] [--steps 1500] [--learning-starts 500] [--repeats 5]
                                [--batch 256] [--sb3-flush] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import gymnasium as gym
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_json import emit, ratio_line  # noqa: E402

from rlx.algos.sac import SAC, SACConfig  # noqa: E402
from rlx.core.loops import TrainerConfig, flush_denormal, seed_everything  # noqa: E402
from rlx.core.offpolicy import OffPolicyLoop  # noqa: E402

HIDDEN, LR = [256, 256], 3e-4


def _rlx(env_id: str, steps: int, learning_starts: int, seed: int, batch: int, profile: bool = False) -> dict:
    seed_everything(seed)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    cfg = SACConfig(hidden=HIDDEN, batch_size=batch, learning_starts=learning_starts, policy_lr=LR, q_lr=LR,
                    policy_frequency=1, buffer_size=steps)
    learner = SAC(cfg, envs.single_observation_space, envs.single_action_space)
    loop = OffPolicyLoop(learner, envs, TrainerConfig(total_steps=steps, eval_every=0, progress=False, tensorboard=False),
                         cfg.buffer_size, cfg.batch_size, cfg.learning_starts, cfg.utd, 1_000, seed=seed)
    timers = {"update": 0.0, "act": 0.0, "sample": 0.0, "env_step": 0.0}
    if profile:  # time the pieces (adds a few microseconds per call; not used for the ratio)
        def timed(name, fn):
            def wrapper(*a, **k):
                t = time.process_time()
                out = fn(*a, **k)
                timers[name] += time.process_time() - t
                return out
            return wrapper

        learner.update, learner.act = timed("update", learner.update), timed("act", learner.act)
        loop.buffer.sample, envs.step = timed("sample", loop.buffer.sample), timed("env_step", envs.step)
    cpu, wall = time.process_time(), time.perf_counter()
    summary = loop.run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    envs.close()
    out = {"case": "rlx", "env": env_id, "env_steps": steps, "cpu_s": cpu, "wall_s": wall, "steps_per_cpu_s": steps / cpu,
           "finite": all(math.isfinite(v) for k, v in summary.items() if k.startswith("loss/"))}
    if profile:
        out.update({f"share_{k}": v / cpu for k, v in timers.items()})
        out["share_other"] = 1 - sum(timers.values()) / cpu
        out["update_ms"] = 1e3 * timers["update"] / max(steps - learning_starts, 1)
    return out


def _sb3(env_id: str, steps: int, learning_starts: int, seed: int, batch: int, flush: bool = False) -> dict:
    from stable_baselines3 import SAC as SB3SAC

    env = gym.make(env_id)
    model = SB3SAC("MlpPolicy", env, learning_rate=LR, buffer_size=steps, learning_starts=learning_starts,
                   batch_size=batch, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, ent_coef="auto",
                   target_update_interval=1, policy_kwargs={"net_arch": HIDDEN}, seed=seed, device="cpu", verbose=0)
    cpu, wall = time.process_time(), time.perf_counter()
    with flush_denormal(flush):
        model.learn(total_timesteps=steps)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    env.close()
    return {"case": "sb3", "env": env_id, "env_steps": steps, "cpu_s": cpu, "wall_s": wall, "steps_per_cpu_s": steps / cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=1_500, help="env steps per run (learning_starts included)")
    parser.add_argument("--learning-starts", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256, help="batch size of both")
    parser.add_argument("--sb3-flush", action="store_true", help="flush subnormals in SB3's runs too (rlx always does)")
    parser.add_argument("--json", action="store_true", help="only the one-line record of the ratio")
    parser.add_argument("--quick", action="store_true", help="800 steps (300 random) per run, 5 repeats")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.steps, args.learning_starts, args.repeats = 800, 300, 5
    ratios, rates, finite = [], {"rlx": [], "sb3": []}, True
    for r in range(args.repeats):
        pair = {}
        for fn in (_rlx, partial(_sb3, flush=args.sb3_flush)):  # interleaved: drifting load hits both alike
            res = fn(args.env, args.steps, args.learning_starts, seed=r, batch=args.batch)
            if not args.json:
                print(json.dumps({**res, "repeat": r}), flush=True)
            pair[res["case"]] = res["steps_per_cpu_s"]
            rates[res["case"]].append(res["steps_per_cpu_s"])
            finite &= res.get("finite", True)
        ratios.append(pair["rlx"] / pair["sb3"])
    if args.json:
        emit(ratio_line(f"sac_{args.env}_vs_sb3", rates["rlx"], rates["sb3"], "steps/s", finite), True)
        return
    print(json.dumps({"case": "ratio", "rlx_over_sb3_steps_per_cpu_s": {
        "min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)},
        "per_repeat": ratios, "torch_threads": torch.get_num_threads(), "batch": args.batch,
        "sb3_flush": args.sb3_flush}), flush=True)
    print(json.dumps({**_rlx(args.env, args.steps, args.learning_starts, seed=0, batch=args.batch, profile=True),
                      "case": "rlx_profile"}))


if __name__ == "__main__":
    main()
