"""IQL gradient steps per second: rlx's `OfflineActorCritic` (through `OfflineLoop` sampling
from a `ReplayBuffer`) vs a CORL-style step written out here (the shape of CORL's `iql.py`:
plain tensors, twin Q as two MLPs called one after the other, separate V / Q / actor Adam
optimizers, here fused, losses read back with `.item()`), same process, same networks
(256-256 MLPs, twin Q, V, Gaussian actor), same batch size, same data.

Correctness first: the reference is loaded with rlx's initial weights and both take one
update on the same batch; V/Q/actor losses must agree. Then, per batch size, `--repeats`
interleaved rounds (rlx then reference, `--steps` updates each, process CPU time); prints the
median steps/s of each, the per-round ratio rlx / reference (median, min, max).

    OMP_NUM_THREADS=1 python scripts/bench_offline.py [--batches 16 64 256 1024] [--steps 200] [--repeats 5] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_json import emit, ratio_line  # noqa: E402

from rlx.algos.offline_ac import IQLConfig, OfflineActorCritic  # noqa: E402
from rlx.core.buffers import EpisodeStore, ReplayBuffer  # noqa: E402
from rlx.core.loops import OfflineLoop, TrainerConfig  # noqa: E402


# ------------------------------------------------------------------ CORL-style reference
class RefIQL:
    """Single-file IQL: V by expectile regression on min target Q, twin Q on r + g (1-d) V(s'),
    AWR actor exp(beta A) clipped at 100, Polyak target Q. Works on raw tensors; the update
    order (V and Q, then actor with the new V, then targets) is rlx's so losses compare 1:1."""

    def __init__(self, q1, q2, v, actor_net, log_std, beta=3.0, tau=0.7, discount=0.99, polyak=0.005, lr=3e-4,
                 max_steps=1000):
        self.q1, self.q2, self.v, self.actor_net = q1, q2, v, actor_net
        self.log_std = log_std
        self.q1_t, self.q2_t = copy.deepcopy(q1).requires_grad_(False), copy.deepcopy(q2).requires_grad_(False)
        self.q_opt = torch.optim.Adam([*q1.parameters(), *q2.parameters()], lr=lr, fused=True)
        self.v_opt = torch.optim.Adam(v.parameters(), lr=lr, fused=True)
        self.a_opt = torch.optim.Adam([*actor_net.parameters(), log_std], lr=lr, fused=True)
        self.a_sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.a_opt, max_steps)
        self.beta, self.tau, self.discount, self.polyak = beta, tau, discount, polyak

    def qs(self, nets, s, a):
        sa = torch.cat([s, a], 1)
        return [n(sa).squeeze(-1) for n in nets]

    def train(self, s, a, r, s2, d):
        with torch.no_grad():
            tq = torch.min(*self.qs((self.q1_t, self.q2_t), s, a))
            next_v = self.v(s2).squeeze(-1)
        v = self.v(s).squeeze(-1)
        u = tq - v
        v_loss = (torch.abs(self.tau - (u < 0).float()) * u ** 2).mean()
        self.v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.v_opt.step()
        target = r + (1.0 - d) * self.discount * next_v
        q1, q2 = self.qs((self.q1, self.q2), s, a)
        q_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        with torch.no_grad():  # advantage with the freshly updated V, as rlx (and the original IQL) do
            exp_adv = torch.exp(self.beta * (tq - self.v(s).squeeze(-1))).clamp(max=100.0)
        mean = torch.tanh(self.actor_net(s))
        std = self.log_std.clamp(-5.0, 2.0).exp()
        log_prob = torch.distributions.Normal(mean, std).log_prob(a).sum(-1)
        a_loss = -(exp_adv * log_prob).mean()
        self.a_opt.zero_grad(set_to_none=True)
        a_loss.backward()
        self.a_opt.step()
        self.a_sched.step()
        with torch.no_grad():
            for t, p in zip([*self.q1_t.parameters(), *self.q2_t.parameters()], [*self.q1.parameters(), *self.q2.parameters()]):
                t.mul_(1 - self.polyak).add_(p, alpha=self.polyak)
        return {"v": v_loss.item(), "q": q_loss.item(), "actor": a_loss.item()}


def mlp(sizes):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def member_state(ensemble, i: int) -> dict:
    """Member i of rlx's batched `EnsembleQ` as an `mlp` state dict (weights [n, in, out] -> [out, in])."""
    return {f"{2 * l}.{kind}": (getattr(ensemble, f"weight{l}")[i].T if kind == "weight" else getattr(ensemble, f"bias{l}")[i, 0])
            for l in range(ensemble.depth) for kind in ("weight", "bias")}


def reference_from(learner: OfflineActorCritic) -> RefIQL:
    """A reference with rlx's initial weights (same MLP shapes, so state dicts map 1:1)."""
    obs_dim, act_dim = learner.actor.net.in_dim, learner.actor.net.out_dim
    h = learner.cfg.hidden
    q1, q2 = mlp([obs_dim + act_dim, *h, 1]), mlp([obs_dim + act_dim, *h, 1])
    v, actor = mlp([obs_dim, *h, 1]), mlp([obs_dim, *h, act_dim])
    q1.load_state_dict(member_state(learner.q, 0))
    q2.load_state_dict(member_state(learner.q, 1))
    v.load_state_dict(learner.v.state_dict())
    actor.load_state_dict(learner.actor.net.state_dict())
    ref = RefIQL(q1, q2, v, actor, nn.Parameter(learner.actor.log_std.detach().clone()), beta=learner.cfg.awr_alpha,
                 tau=learner.cfg.expectile, discount=learner.cfg.gamma, polyak=learner.cfg.tau, lr=learner.cfg.actor_lr)
    ref.q1_t.load_state_dict(member_state(learner.q_target, 0))
    ref.q2_t.load_state_dict(member_state(learner.q_target, 1))
    return ref


def synthetic_store(n: int, obs_dim: int, act_dim: int, seed: int = 0) -> EpisodeStore:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n + 1, obs_dim, generator=g)
    term = torch.zeros(n, dtype=torch.bool)
    term[999::1000] = True
    data = TensorDict({"obs": obs[:-1], "next_obs": obs[1:], "action": torch.rand(n, act_dim, generator=g) * 2 - 1,
                       "reward": torch.randn(n, generator=g), "terminated": term,
                       "truncated": torch.zeros(n, dtype=torch.bool)}, batch_size=[n])
    return EpisodeStore.from_flat(data)


def bench_batch(env: gym.Env, store: EpisodeStore, batch_size: int, steps: int, repeats: int, as_json: bool) -> None:
    cfg = IQLConfig(batch_size=batch_size, normalize_obs=False, actor_cosine_decay=True)
    torch.manual_seed(0)
    learner = OfflineActorCritic(cfg, env.observation_space, env.action_space, total_steps=10**6)
    ref = reference_from(learner)
    buffer = ReplayBuffer.from_episodes(store)
    batch = buffer.sample(batch_size, torch.Generator().manual_seed(1))
    # correctness: one update from identical weights on the same batch
    m = learner.update(batch)
    r = ref.train(batch["obs"], batch["action"], batch["reward"], batch["next_obs"], batch["terminated"].float())
    correct = all(np.isclose(m[a], r[b], rtol=1e-4, atol=1e-5)
                  for a, b in (("loss/value", "v"), ("loss/q", "q"), ("loss/actor", "actor")))
    if not correct:
        print(f"rlx and the reference disagree at batch {batch_size}: rlx {m}, reference {r}", file=sys.stderr)
    loop = OfflineLoop(learner, buffer, TrainerConfig(total_steps=10**9, progress=False, eval_every=0), batch_size)
    data, gen = store.data, torch.Generator().manual_seed(2)
    n = data.shape[0]
    obs, act, rew, nobs, done = data["obs"], data["action"], data["reward"], data["next_obs"], data["terminated"].float()

    def rate(fn) -> float:
        start = time.process_time()
        for _ in range(steps):
            fn()
        return steps / (time.process_time() - start)

    def ref_step():
        idx = torch.randint(n, (batch_size,), generator=gen)
        ref.train(obs[idx], act[idx], rew[idx], nobs[idx], done[idx])

    rate(loop.iteration), rate(ref_step)  # warm-up
    mine, theirs = [], []
    for _ in range(repeats):
        mine.append(rate(loop.iteration))
        theirs.append(rate(ref_step))
    emit(ratio_line(f"iql_b{batch_size}_256x256_vs_corl_style_fused_adam", mine, theirs, "steps/s", correct), as_json)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="Hopper-v5", help="sets obs/action sizes (Hopper: 11/3)")
    p.add_argument("--steps", type=int, default=200, help="updates per timing")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256, 1024])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="one JSON line per case")
    p.add_argument("--quick", action="store_true", help="batch 256 only, 50 updates per timing, 5 repeats")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    env = gym.make(args.env)
    store = synthetic_store(100_000, env.observation_space.shape[0], env.action_space.shape[0])
    batches, steps = ([256], 50) if args.quick else (args.batches, args.steps)
    for b in batches:
        bench_batch(env, store, b, steps, max(args.repeats, 5) if args.quick else args.repeats, args.json)


if __name__ == "__main__":
    main()
