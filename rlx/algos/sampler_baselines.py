"""The baselines GFlowNets are compared with on the molecule envs, at an equal number of sampled
molecules (docs/gflownet.md, BENCHMARKS.md "GFlowNets, Molecules"):

* `algo=sampler_ppo`: PPO (Schulman et al. 2017) on the same graph policy as `algo=gflownet`
  (`graph_policy`: GINE on atoms or on the fragment block graph) with its value head, learning
  from the terminal reward only: gamma = 1, so every step's return is R(x); advantages R(x) - V(s)
  normalized per batch; `epochs` passes of rlx's `clipped_surrogate` + `value_loss` - entropy
  bonus over each batch of trajectories (no minibatches).
* `algo=sampler_random`: uniform over the allowed actions of each state (no learning).

Both sample with the env's masks through `rlx.algos.gflownet.sample_trajectories` and run in
the `SamplerLoop` (budget in sampled molecules). `algo.record_samples=true` (also on
`algo=gflownet`) writes every molecule sampled in training, in order, to `<run>/samples.jsonl`
(`rlx.algos.sample_log.SampleLog`): the input of the "metrics over every molecule sampled so far" of
scripts/gflownet_molecules.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict
from torch import nn

from rlx.algos.gflownet import GFlowNet, _policy_dist, check, run_sampler, sample_trajectories
from rlx.algos.ppo import clipped_surrogate, value_loss
from rlx.algos.registry import register
from rlx.core.buffers import EpisodeStore
from rlx.core.checkpoint import Saveable
from rlx.core.learner import make_optimizer, optimizer_step
from rlx.core.ranges import count, nonneg, positive

__all__ = ["SamplerPPO", "SamplerPPOConfig", "SamplerRandomConfig", "UniformSampler"]


@dataclass
class SamplerPPOConfig:
    """PPO from the terminal reward on a molecule env; defaults are the molecule benchmark's."""

    batch_size: int = count(32)  # trajectories sampled per update
    lr: float = positive(1e-3)  # Adam learning rate
    epochs: int = count(4)  # passes over each batch
    clip: float = positive(0.2)  # PPO ratio clip
    vf_coef: float = nonneg(0.5)  # weight of the value loss
    ent_coef: float = nonneg(0.01)  # entropy bonus (mean over visited states)
    max_grad_norm: float = nonneg(0.5)  # global gradient-norm clip (0: off)
    hidden: int = count(64)  # MPNN width
    num_layers: int = count(3)  # message-passing rounds
    encoder: str = "gine"  # gine | nnconv
    record_samples: bool = False  # write every training molecule to <run>/samples.jsonl
    eval_samples: int = count(256)  # molecules sampled for the evaluation metrics


@dataclass
class SamplerRandomConfig:
    """Uniform random sampling over the allowed actions (the no-learning reference)."""

    batch_size: int = count(32)  # trajectories sampled per iteration
    record_samples: bool = False  # write every sampled molecule to <run>/samples.jsonl
    eval_samples: int = count(256)  # molecules sampled for the evaluation metrics


class SamplerPPO(Saveable):
    """`update(batch)` takes `store.to_batch(log_reward=...)` of what `sample` returns: the
    transitions (rows `data` [M], offsets `ptr` [E+1]) and log R(x) per trajectory [E]; the model
    gives ragged forward logits, log F(s) (unused) and `value(states)` [B]."""

    def __init__(self, cfg: SamplerPPOConfig, env, model: nn.Module):
        self.cfg, self.env, self.model = cfg, env, model
        self.optimizer = make_optimizer(model.parameters(), cfg.lr)
        self.generator = torch.Generator().manual_seed(0)

    def sample(self, n: int, epsilon: float = 0.0):
        return sample_trajectories(self.env, self.model, n, epsilon, self.generator)

    act = GFlowNet.act  # the same draw (or argmax) from the model's masked logits: uses env, model, generator

    def _log_prob(self, store):
        d = store.data
        dist, _, _ = _policy_dist(self.env, self.model, d["obs"])
        return dist, dist.log_prob(dist.ptr[:-1] + d["action"])

    def update(self, batch: TensorDict) -> dict[str, float]:
        store, log_reward = EpisodeStore.from_batch(batch), batch["log_reward"]
        cfg, obs = self.cfg, store.data["obs"]
        reward = log_reward.exp()
        ret = reward[store.segment_ids()]  # [M] gamma = 1 and reward only at the end: every return is R(x)
        with torch.no_grad():
            _, old_logp = self._log_prob(store)
            old_value = self.model.value(obs)
        adv = ret - old_value
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        for _ in range(cfg.epochs):
            dist, logp = self._log_prob(store)
            pg, info = clipped_surrogate(logp, old_logp, adv, cfg.clip)
            v_loss = value_loss(self.model.value(obs), old_value, ret, None)
            entropy = dist.entropy().mean()
            optimizer_step(self.optimizer, pg + cfg.vf_coef * v_loss - cfg.ent_coef * entropy,
                           max_grad_norm=cfg.max_grad_norm)
        return {"loss/policy": float(pg.detach()), "loss/value": float(v_loss.detach()),
                "train/entropy": float(entropy.detach()), "train/reward_mean": float(reward.mean()),
                "train/length_mean": float(store.lengths.float().mean()), **{k: float(v) for k, v in info.items()}}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])


class _UniformLogits(nn.Module):
    """Zero logits in the env's ragged layout: with the env's masks, uniform over allowed actions."""

    def __init__(self, env):
        super().__init__()
        self.env = env

    def forward(self, states: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(int(self.env.action_ptr(states)[-1])), torch.zeros(states.shape[0])


class UniformSampler(Saveable):
    """Uniform random sampling; `update` only reports the batch's reward."""

    def __init__(self, env):
        self.env, self.model = env, _UniformLogits(env)
        self.generator = torch.Generator().manual_seed(0)

    def sample(self, n: int, epsilon: float = 0.0):
        del epsilon  # uniform already
        return sample_trajectories(self.env, self.model, n, 0.0, self.generator)

    act = GFlowNet.act  # the same draw (or argmax) from the model's masked logits: uses env, model, generator

    def update(self, batch: TensorDict) -> dict[str, float]:
        store, log_reward = EpisodeStore.from_batch(batch), batch["log_reward"]
        return {"train/reward_mean": float(log_reward.exp().mean()), "train/length_mean": float(store.lengths.float().mean())}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def _train(ctx, make_learner) -> dict:
    from rlx.envs.registry import EnvError, import_object

    cfg = ctx.cfg
    if not cfg.env.entry_point:
        raise EnvError(f"algo={cfg.algorithm} needs a molecule env: env=molecules_atom, molecules_similarity, "
                       "molecules_fragments, molecules_fragments_seh, or env.entry_point=pkg.mod:Class")
    env = import_object(cfg.env.entry_point)(**cfg.env.kwargs)
    if not hasattr(env, "smiles"):
        raise EnvError(f"algo={cfg.algorithm} samples molecules; {type(env).__name__} is not a molecule env")
    return run_sampler(ctx, env, make_learner(env), "eval/top100_reward")


@register("sampler_ppo", SamplerPPOConfig, "PPO from the terminal reward on the molecule envs (GFlowNet baseline)",
          default_env="molecules_atom", check=check)
def train_ppo(ctx) -> dict:
    """`python -m rlx.train algo=sampler_ppo env=molecules_atom trainer.total_steps=2048`."""
    from rlx.models.graph_nets import graph_policy

    a = ctx.cfg.algo
    return _train(ctx, lambda env: SamplerPPO(a, env, graph_policy(env, a.hidden, a.num_layers, a.encoder)))


@register("sampler_random", SamplerRandomConfig, "uniform random sampling on the molecule envs (GFlowNet baseline)",
          default_env="molecules_atom", check=check)
def train_random(ctx) -> dict:
    """`python -m rlx.train algo=sampler_random env=molecules_atom trainer.total_steps=2048`."""
    return _train(ctx, UniformSampler)
