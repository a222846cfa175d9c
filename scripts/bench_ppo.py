"""rlx PPO vs Stable-Baselines3 PPO: env steps per process-CPU second at matched settings, in one
process, interleaved (rlx, sb3, rlx, sb3, ...), one torch thread each.

Matched (printed first): the same envs (gymnasium SyncVectorEnv of N copies), 64x64 tanh actor
and critic (separate), Adam eps 1e-5 with the learning rate annealed linearly to 0, GAE 0.99 /
0.95, clip 0.2 for the surrogate and the value, normalized advantages, gradient-norm clip 0.5,
the same minibatches and epochs, the same loss (rlx `vf_coef=1.0` x 0.5 MSE = SB3 `vf_coef=0.5`
x MSE). Cases:

* `cartpole`: CartPole-v1, 8 envs x 64 steps, 4 minibatches, 10 epochs, lr 1e-3, entropy 0.01;
* `mujoco`: HalfCheetah-v5, 1 env x 2048 steps, 32 minibatches, 10 epochs, lr 3e-4, no entropy
  bonus, observation and reward normalization (rlx `normalize_obs/normalize_reward`, SB3
  `VecNormalize`), actions clipped to the box;
* `--scaling`: CartPole with 1, 4, 16 envs (64 steps each; 8 is `cartpole`).

Correctness: both sides must learn alike: `correct` is rlx's mean training return over its last
10 episodes >= SB3's minus half its magnitude (both printed, with `--json` under "returns").

    OMP_NUM_THREADS=1 python scripts/bench_ppo.py [--cases cartpole mujoco] [--repeats 5] [--scaling] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_json import emit, ratio_line  # noqa: E402

from rlx.algos import PPO, PPOConfig  # noqa: E402
from rlx.algos.ppo import ClipBoxActions  # noqa: E402
from rlx.core.loops import OnPolicyLoop, TrainerConfig, seed_everything  # noqa: E402

CASES = {
    "cartpole": dict(env="CartPole-v1", n_envs=8, n_steps=64, minibatches=4, epochs=10, lr=1e-3, ent=0.01,
                     normalize=False, iterations=8),
    "mujoco": dict(env="HalfCheetah-v5", n_envs=1, n_steps=2048, minibatches=32, epochs=10, lr=3e-4, ent=0.0,
                   normalize=True, iterations=2),
}


def make_envs(env_id: str, n: int) -> gym.vector.VectorEnv:
    return gym.vector.SyncVectorEnv([lambda: gym.make(env_id)] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def run_rlx(c: dict, seed: int) -> tuple[float, float]:
    """(env steps per CPU second, mean return of the last 10 training episodes)."""
    seed_everything(seed)
    envs = make_envs(c["env"], c["n_envs"])
    if isinstance(envs.single_action_space, gym.spaces.Box):
        envs = ClipBoxActions(envs)  # what `algo=ppo` wraps a Box-action env in
    steps = c["iterations"] * c["n_envs"] * c["n_steps"]
    cfg = PPOConfig(num_steps=c["n_steps"], num_minibatches=c["minibatches"], update_epochs=c["epochs"], lr=c["lr"],
                    ent_coef=c["ent"], vf_coef=1.0, normalize_obs=c["normalize"], normalize_reward=c["normalize"])
    learner = PPO(cfg, envs.single_observation_space, envs.single_action_space, total_updates=c["iterations"])
    loop = OnPolicyLoop(learner, envs, TrainerConfig(total_steps=steps, eval_every=0, progress=False, tensorboard=False),
                        c["n_steps"], seed=seed, normalize_reward=c["normalize"])
    recent: deque = deque(maxlen=10)
    start = time.process_time()
    while loop.steps < steps:
        finished = loop.collect()
        learner.update(loop.buffer.compute_advantages(cfg.gamma, cfg.gae_lambda))
        recent.extend(r for r, _ in finished)
        loop.steps += c["n_envs"] * c["n_steps"]
        loop.iterations += 1
    cpu = time.process_time() - start
    envs.close()
    return steps / cpu, float(np.mean(recent)) if recent else float("nan")


def run_sb3(c: dict, seed: int) -> tuple[float, float]:
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    env = DummyVecEnv([lambda: Monitor(gym.make(c["env"]))] * c["n_envs"])  # Monitor: SB3's episode returns
    if c["normalize"]:
        env = VecNormalize(env, gamma=0.99)
    env.seed(seed)
    steps = c["iterations"] * c["n_envs"] * c["n_steps"]
    model = SB3PPO("MlpPolicy", env, n_steps=c["n_steps"], batch_size=c["n_envs"] * c["n_steps"] // c["minibatches"],
                   n_epochs=c["epochs"], learning_rate=lambda frac: c["lr"] * frac, gamma=0.99, gae_lambda=0.95,
                   clip_range=0.2, clip_range_vf=0.2, ent_coef=c["ent"], vf_coef=0.5, max_grad_norm=0.5,
                   policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}}, seed=seed, device="cpu", verbose=0)
    start = time.process_time()
    model.learn(total_timesteps=steps)
    cpu = time.process_time() - start
    env.close()
    returns = [e["r"] for e in list(model.ep_info_buffer)[-10:]]
    return steps / cpu, float(np.mean(returns)) if returns else float("nan")


def bench(name: str, c: dict, repeats: int, as_json: bool) -> None:
    mine, theirs, r_mine, r_theirs = [], [], [], []
    for r in range(repeats):  # interleaved: drifting machine load hits both alike
        rate, ret = run_rlx(c, seed=r)
        mine.append(rate), r_mine.append(ret)
        rate, ret = run_sb3(c, seed=r)
        theirs.append(rate), r_theirs.append(ret)
    m, t = (float(np.nanmean(x)) if not np.isnan(x).all() else float("nan") for x in (r_mine, r_theirs))
    line = ratio_line(f"ppo_{name}_vs_sb3", mine, theirs, "steps/s", bool(m >= t - 0.5 * abs(t)))
    emit({**line, "returns": {"rlx": round(m, 1), "sb3": round(t, 1)}} if as_json else line, as_json)
    if not as_json:
        print(f"  mean training return of the last 10 episodes: rlx {m:.1f}, sb3 {t:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scaling", action="store_true", help="also CartPole with 1, 4, 16 envs")
    parser.add_argument("--json", action="store_true", help="one JSON line per case")
    parser.add_argument("--quick", action="store_true", help="CartPole only, 4 iterations per run, 5 repeats")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = {"cartpole": {**CASES["cartpole"], "iterations": 4}} if args.quick else {k: CASES[k] for k in args.cases}
    settings = {"rlx": "PPOConfig(num_steps, num_minibatches, update_epochs, lr annealed, ent_coef, vf_coef=1.0, "
                       "clip_coef=0.2, clip_vloss, max_grad_norm=0.5, hidden [64, 64] tanh)",
                "sb3": "PPO(MlpPolicy, n_steps, batch_size, n_epochs, lr schedule, ent_coef, vf_coef=0.5, clip_range=0.2, "
                       "clip_range_vf=0.2, max_grad_norm=0.5, net_arch pi/vf [64, 64])", "cases": cases}
    print(json.dumps({"case": "settings", **settings}) if args.json else f"settings: {json.dumps(settings)}", flush=True)
    for name, c in cases.items():
        bench(name, c, max(args.repeats, 5), args.json)
    if args.scaling and not args.quick:
        for n in (1, 4, 16):  # 8 envs is the cartpole case
            bench(f"cartpole_{n}envs", {**CASES["cartpole"], "n_envs": n}, max(args.repeats, 5), args.json)


if __name__ == "__main__":
    main()
