"""Token-level PPO for sequence policies (RLHF; Ziegler et al. 2019, Stiennon et al. 2020,
Ouyang et al. 2022 sec. 3.5), sharing PPO's losses (`clipped_surrogate`, `value_loss`).

Each response token is one step of an episode whose state is the prompt plus the tokens so far.
Rollouts are time-major `[T tokens, N sequences]` (built whole from the sampled `[N, T]`
sequences, as a transposed view); the per-token reward is
the KL penalty to the frozen reference policy, plus the sequence score on the last token
(Stiennon et al. eq. 2):  r_t = -kl_coef * (log pi(a_t|s_t) - log pi_ref(a_t|s_t)) + [t = end] R(x, y).
Advantages are GAE over tokens (`rlx.kernels.gae`, gamma = 1 by default); the KL coefficient is
fixed or adaptive (Ziegler et al. sec. 2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict
from torch import nn

from rlx.algos.ppo import clipped_surrogate, explained_variance, value_loss
from rlx.algos.continual import check_stream, train_on_stream
from rlx.algos.registry import register
from rlx.core.buffers import compute_advantages, shuffled_minibatches
from rlx.core.checkpoint import Saveable
from rlx.core.learner import frozen_copy, make_optimizer, optimizer_step
from rlx.core.ranges import bounded, count, nonneg, positive, unit
from rlx.models.transformer import generate, response_logprobs

__all__ = ["RLHF", "RLHFConfig", "masked_mean", "masked_whiten"]


@dataclass
class RLHFConfig:
    """PPO-RLHF on the built-in continual preference stream (`env=text_stream`) or on your prompts,
    policy and reward (`env=prompts`, docs/rlhf.md). With no retention term this is the
    "sequential PPO" baseline of CPPO (Zhang et al. 2024)."""

    samples_per_task: int = count(2048)  # sampled responses per task of the stream (rounded up to batch_size)
    batch_size: int = count(64)  # responses per rollout (N)
    lr: float = positive(3e-4)  # Adam learning rate of policy and value head
    update_epochs: int = count(4)  # passes over each rollout
    num_minibatches: int = count(4)  # minibatches per epoch (split over sequences)
    clip_coef: float = positive(0.2)  # surrogate clipping epsilon (PPO eq. 7)
    clip_vloss: bool = True  # clip the value loss around the rollout values
    vf_coef: float = nonneg(0.5)  # value loss coefficient
    ent_coef: float = nonneg(0.0)  # entropy bonus coefficient
    max_grad_norm: float = nonneg(1.0)  # global gradient-norm clip (0: off)
    gamma: float = bounded(1.0, 0, 1, "(]")  # discount over tokens
    gae_lambda: float = unit(0.95)  # GAE lambda over tokens
    kl_coef: float = nonneg(0.1)  # initial coefficient of the per-token KL penalty to the reference (SFT) policy
    kl_target: float | None = positive(None)  # adaptive KL: target sequence KL in nats (None: fixed kl_coef)
    kl_horizon: int = count(10_000)  # adaptive KL horizon in samples (Ziegler et al. 2019)
    temperature: float = positive(1.0)  # sampling temperature of training rollouts (the policy is the tempered softmax)
    reward: Any = "learned"  # what PPO maximises: learned (the RMs) | gold (hidden scorer) on env=text_stream; pkg.mod:func | hf:<dir> | a list, one per file, on env=prompts
    policy: str = "builtin"  # builtin (the stream's SFT transformer, env=text_stream) | hf:<dir> (a local causal LM) | pkg.mod:factory
    eval_samples: int = count(128)  # responses per task at each evaluation
    n_layer: int = count(2)  # policy transformer blocks
    n_head: int = count(2)  # attention heads
    d_model: int = count(64)  # residual width


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std over the valid entries; invalid entries become 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return torch.where(mask, (x - mean) * torch.rsqrt(var + 1e-8), 0.0)


class RLHF(Saveable):
    """Token-level PPO learner for a causal LM with a value head (`rlx.models.transformer` interface).

    `rollout(prompt [N, P], score_fn, generator)` samples responses, scores them and returns the
    `[T, N]` batch with advantages; `update(batch)` runs the minibatch epochs. The frozen `ref`
    (SFT) policy anchors the KL penalty; `start_task()` snapshots the policy as `prev`, the
    previous-task policy of continual variants (CPPO), whose log-probs each rollout also records.
    """

    def __init__(self, cfg: RLHFConfig, policy: nn.Module, eos_id: int, pad_id: int, response_len: int,
                 device: str | torch.device = "cpu"):
        self.check_config(cfg)
        self.cfg, self.device = cfg, torch.device(device)
        self.policy = policy.to(self.device)
        self.ref = frozen_copy(self.policy)
        self.prev: nn.Module | None = None
        self.eos_id, self.pad_id, self.T = eos_id, pad_id, response_len
        self.gamma, self.gae_lambda = cfg.gamma, cfg.gae_lambda
        self.kl_coef = cfg.kl_coef
        self.optimizer = make_optimizer(self.policy.parameters(), cfg.lr, eps=1e-5)
        self.start_task()

    @staticmethod
    def check_config(cfg: RLHFConfig) -> None:
        """One-line errors for settings that cannot work."""
        rewards = cfg.reward if isinstance(cfg.reward, (list, tuple)) else [cfg.reward]
        if not rewards or not all(isinstance(r, str) for r in rewards):
            raise ValueError(f"algo.reward={cfg.reward!r}; choose learned or gold (env=text_stream), or pkg.mod:func, "
                             "hf:<dir> or a list of those, one per prompt file (env=prompts)")
        if cfg.batch_size < cfg.num_minibatches:
            raise ValueError(f"algo.batch_size={cfg.batch_size} is smaller than algo.num_minibatches={cfg.num_minibatches}")
        if cfg.temperature <= 0:
            raise ValueError(f"algo.temperature={cfg.temperature} must be > 0")

    # ---------------------------------------------------------------- sampling
    def start_task(self) -> None:
        """Freeze the current policy as the previous-task policy (called at every task switch)."""
        self.prev = frozen_copy(self.policy)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None,
            top_k: int = 0) -> TensorDict:
        """Responses to prompts `obs [B, P]`: `action, logp, value, mask` ([B, T]); deterministic is greedy."""
        self.policy.eval()
        gen = generate(self.policy, obs.to(self.device), self.T, self.eos_id, self.pad_id,
                       temperature=1e-6 if deterministic else self.cfg.temperature, top_k=top_k, generator=generator)
        self.policy.train()
        return TensorDict({"action": gen.tokens, "logp": gen.logp, "value": gen.value, "mask": gen.mask},
                          batch_size=[obs.shape[0], self.T])

    def sample(self, prompts: list[str], tokenizer=None, deterministic: bool = False,
               generator: torch.Generator | None = None) -> list[str]:
        """Completions of text `prompts` (up to the response length, cut at `<eos>`): encoded and
        decoded by `tokenizer` (`encode(str) -> ids`, `decode(ids) -> str`), by default the built-in
        text_stream tokenizer, whose prompts read `<domain> <item>` (e.g. "tech laptop"). Prompts
        of different token lengths are generated in groups of equal length."""
        if tokenizer is None:
            from rlx.envs.text import Tokenizer

            tokenizer = Tokenizer()
            ids = [[tokenizer.bos_id, *tokenizer.encode(p), tokenizer.sep_id] for p in prompts]
        else:
            ids = [list(tokenizer.encode(p)) for p in prompts]
        out: list[str] = [""] * len(ids)
        for length in sorted({len(i) for i in ids}):
            rows = [k for k, i in enumerate(ids) if len(i) == length]
            gen = self.act(torch.tensor([ids[k] for k in rows]), deterministic, generator)
            keep = gen["mask"] & (gen["action"] != self.eos_id)
            for k, tokens, m in zip(rows, gen["action"].cpu(), keep.cpu()):
                out[k] = tokenizer.decode(tokens[m].tolist())
        return out

    def token_rewards(self, score: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[N, T] per-token rewards: -kl_coef * (logp - ref_logp) + score on the last valid token."""
        mask = batch["mask"]
        reward = -self.kl_coef * (batch["logp"] - batch["ref_logp"]) * mask
        last = mask.sum(1) - 1  # [N] index of the last response token (<eos> or the length limit)
        reward[torch.arange(len(score)), last] += score
        return reward

    @torch.no_grad()
    def rollout(self, prompt: torch.Tensor, score_fn, generator: torch.Generator | None = None) -> TensorDict:
        """Sample N responses, score them (`score_fn(prompt, response, mask) -> [N]`) and return the
        `[T, N]` batch: obs (prompt), action, logp, value, ref_logp, prev_logp, mask, reward, adv, ret."""
        prompt = prompt.to(self.device)
        out = self.act(prompt, generator=generator)
        seq = {k: out[k] for k in ("action", "logp", "value", "mask")}  # [N, T] each
        mask = seq["mask"]
        for key, model in (("ref_logp", self.ref), ("prev_logp", self.prev)):
            seq[key] = torch.where(mask, response_logprobs(model, prompt, seq["action"], self.cfg.temperature)[0], 0.0)
        score = score_fn(prompt.cpu(), seq["action"].cpu(), mask.cpu()).to(self.device).float()
        seq["reward"] = self.token_rewards(score, seq)
        N = prompt.shape[0]
        last = mask.sum(1) - 1
        steps = torch.arange(self.T, device=self.device)[None, :]  # [1, T]
        seq["terminated"] = ~mask | (steps == last[:, None])  # the response (or its padding) ends the episode
        seq["truncated"] = torch.zeros_like(mask)
        seq["next_value"] = torch.nn.functional.pad(seq["value"][:, 1:], (0, 1))
        seq["score"] = score[:, None].expand(N, self.T)
        seq["obs"] = prompt[:, None, :].expand(N, self.T, prompt.shape[1])
        # [N, T] -> [T, N]: transposed views, no copy
        batch = TensorDict({k: v.transpose(0, 1) for k, v in seq.items()}, batch_size=[self.T, N])
        batch = compute_advantages(batch, self.gamma, self.gae_lambda)
        self._adapt_kl(float(((seq["logp"] - seq["ref_logp"]) * mask).sum(1).mean()), N)
        return batch

    def _adapt_kl(self, kl: float, n: int) -> None:
        """Ziegler et al. 2019 eq. (2): beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon)."""
        if self.cfg.kl_target is not None:
            error = max(min(kl / self.cfg.kl_target - 1, 0.2), -0.2)
            self.kl_coef *= 1 + error * n / self.cfg.kl_horizon

    # ---------------------------------------------------------------- learning
    def prepare(self, seqs: TensorDict) -> None:
        """Per-rollout preprocessing of the `[N, T]` batch before the epochs (hook for CPPO's weights)."""

    def loss(self, mb: TensorDict, logp: torch.Tensor, value: torch.Tensor, logits: torch.Tensor):
        """PPO loss on the valid tokens of a minibatch `[B, T]` of sequences."""
        cfg, m = self.cfg, mb["mask"]
        weight = mb["alpha"][m] if "alpha" in mb.keys() else None
        pg_loss, info = clipped_surrogate(logp[m], mb["logp"][m], mb["adv"][m], cfg.clip_coef, weight)
        v_loss = value_loss(value[m], mb["value"][m], mb["ret"][m], cfg.clip_coef if cfg.clip_vloss else None)
        logprobs = torch.log_softmax(logits, -1)
        entropy = masked_mean(-(logprobs.exp() * logprobs).sum(-1), m)
        loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
        info.update({"loss/policy": pg_loss.detach(), "loss/value": v_loss.detach(), "loss/entropy": entropy.detach()})
        return loss, info

    def update(self, batch: TensorDict) -> dict[str, float]:
        """Minibatch epochs over the sequences of a `[T, N]` rollout."""
        cfg = self.cfg
        seqs = batch.transpose(0, 1)  # [T, N] -> [N, T]: minibatches are whole sequences
        seqs["adv"] = masked_whiten(seqs["adv"], seqs["mask"])
        self.prepare(seqs)
        mb_size = max(seqs.shape[0] // cfg.num_minibatches, 1)
        sums: dict[str, float] = {}
        count = 0
        for _ in range(cfg.update_epochs):
            for mb in shuffled_minibatches(seqs, mb_size):
                logp, value, logits = response_logprobs(self.policy, mb["obs"][:, 0], mb["action"], cfg.temperature)
                loss, info = self.loss(mb, logp, value, logits)
                optimizer_step(self.optimizer, loss, max_grad_norm=cfg.max_grad_norm)
                for k, v in info.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
        m = seqs["mask"]
        metrics = {k: v / count for k, v in sums.items()}
        metrics.update({
            "train/reward_mean": float(seqs["score"][:, 0].mean()),
            "train/kl_ref": float(((seqs["logp"] - seqs["ref_logp"]) * m).sum(1).mean()),
            "train/kl_prev": float(((seqs["logp"] - seqs["prev_logp"]) * m).sum(1).mean()),
            "train/kl_coef": self.kl_coef,
            "train/response_length": float(m.sum(1).float().mean()),
            "train/explained_variance": explained_variance(seqs["value"][m], seqs["ret"][m]),
        })
        return metrics

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "ref": self.ref.state_dict(), "prev": self.prev.state_dict(),
                "optimizer": self.optimizer.state_dict(), "kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.ref.load_state_dict(state["ref"])
        self.prev.load_state_dict(state["prev"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_coef = state["kl_coef"]


@register("rlhf", RLHFConfig, "PPO-RLHF (token-level PPO, KL to the SFT policy) over the continual preference stream",
          default_env="text_stream", check=lambda cfg: check_stream(cfg, RLHF))
def train(ctx) -> dict:
    """Entry point of `python -m rlx.train algo=rlhf`: sequential PPO over the built-in stream."""
    return train_on_stream(ctx, RLHF)
