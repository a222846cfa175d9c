"""DDPO: RL fine-tuning of diffusion models (Black, Janner, Du, Kostrikov, Levine 2023,
"Training Diffusion Models with Reinforcement Learning", arXiv:2305.13301).

Denoising is a T-step MDP: state (c, t, x_t), action x_{t-1} ~ pi_theta(. | x_t, c), the
Gaussian DDIM step with eta > 0 (`rlx.models.diffusion.ddim_step`); the only reward r(x_0, c)
comes at the end. Two estimators of grad J = E[ r(x_0, c) sum_t grad log pi_theta(x_{t-1} | x_t, c) ]:

* DDPO-SF (section 4.2, eq. 3): REINFORCE, one gradient step per batch of samples.
* DDPO-IS (eq. 4): importance-sampled, PPO-clipped (`rlx.algos.ppo.clipped_surrogate`),
  several gradient steps (`num_minibatches` x `inner_epochs`) per batch.

Rewards are normalised per prompt (section 4.3 / appendix; `PerPromptStatTracker`), then
clipped to +-`adv_clip_max`. Gradients are accumulated over the (optionally subsampled)
timesteps of a minibatch before each optimizer step. Log-probs are per-pixel averages
(`logp_reduction="mean"`, DDPO's convention) so `clip_range` is per pixel; with "sum" the
clip range is multiplied by the number of pixels D (to first order the same trust region:
exp(D * d) ~ 1 + D * d).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from tensordict import TensorDict

from rlx import kernels
from rlx.algos.ppo import clipped_surrogate
from rlx.algos.registry import register
from rlx.core.checkpoint import Saveable
from rlx.core.learner import frozen_copy, make_optimizer, optimizer_step
from rlx.core.loops import SamplerLoop
from rlx.core.ranges import bounded, count, each, nonneg, one_of, positive
from rlx.models.diffusion import BETA_SCHEDULES

__all__ = ["DDPO", "DDPOConfig", "PerPromptStatTracker", "score_function_loss", "evaluate_ddpo"]


@dataclass
class DDPOConfig:
    """DDPO hyperparameters (DDPO's defaults where the small digits model allows)."""

    variant: str = "is"  # is: importance-sampled PPO-clipped (DDPO-IS) | sf: REINFORCE (DDPO-SF)
    model: str = "digits"  # digits (built-in, env.kwargs) | pkg.mod:factory (returns eps(x, t, prompt)) | diffusers:<dir>
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of a pkg.mod:factory
    image_shape: list[int] | None = bounded(None, 1, None)  # [C, H, W] a factory's model samples (None: its `image_shape`)
    num_train_timesteps: int | None = count(None)  # a factory model's schedule (None: 1000; digits: env.kwargs, diffusers: its scheduler)
    beta_start: float | None = bounded(None, 0, 1, "()")  # a factory model's first beta (None: 1e-4)
    beta_end: float | None = bounded(None, 0, 1, "()")  # a factory model's last beta (None: 0.02)
    beta_schedule: str | None = one_of(None, BETA_SCHEDULES)  # a factory model's linear | scaled_linear | squaredcos_cap_v2 (None: linear)
    reward: str = "compressibility"  # compressibility | incompressibility | alignment | aesthetic | pkg.mod:func
    lr: float = positive(3e-5)  # Adam learning rate (full fine-tuning of the small UNet; DDPO used 3e-4 for LoRA)
    num_samples: int = count(32)  # images sampled per iteration (N, one round of data collection)
    sample_steps: int = count(10)  # DDIM steps per image (T)
    eta: float = positive(1.0)  # DDIM stochasticity; must be > 0 (eta = 0 has no step log-density)
    guidance_scale: float = nonneg(1.0)  # classifier-free guidance scale (1: plain conditional model)
    clip_sample: bool = False  # clip the predicted x_0 to [-1, 1] (steadies weak base models; clipped pixels get no gradient)
    prompts: list[int] = each(lambda: list(range(10)), 0, None)  # prompt indices sampled uniformly (digits: 0..9)
    inner_epochs: int = count(1)  # passes over each batch (DDPO-IS only)
    num_minibatches: int | None = count(None)  # optimizer steps per inner epoch (None: 1 for sf, 4 for is)
    clip_range: float = positive(1e-4)  # PPO clip epsilon on the ratio of per-pixel-averaged log-probs (DDPO: 1e-4)
    logp_reduction: str = "mean"  # mean: log-prob averaged over pixels (DDPO) | sum: summed (clip scaled by D)
    adv_clip_max: float = positive(5.0)  # advantages clipped to [-adv_clip_max, adv_clip_max]
    timestep_fraction: float = bounded(1.0, 0, 1, "(]")  # fraction of each trajectory's steps trained on (random subset per sample)
    per_prompt_stat_tracking: bool = True  # normalise rewards per prompt (else by batch statistics)
    stat_buffer_size: int = count(32)  # rewards kept per prompt for its statistics
    stat_min_count: int = nonneg(16)  # below this many rewards a prompt uses the batch statistics
    max_grad_norm: float = nonneg(1.0)  # global gradient-norm clip (0: off)
    eval_samples: int = count(40)  # images sampled (fixed noise, prompts cycling over `prompts`) per evaluation
    base_checkpoint: str | None = None  # digits base model file (None: the cached pretrained model of env.kwargs)


def score_function_loss(logp: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """REINFORCE (DDPO eq. 3, negated): -mean(A * log pi_theta(x_{t-1} | x_t, c))."""
    return -(adv * logp).mean()


class PerPromptStatTracker:
    """Reward normalisation per prompt (DDPO section 4.3): each prompt keeps its last
    `buffer_size` rewards; a prompt with fewer than `min_count` uses the batch statistics.
    advantage = (r - mean) / (std + 1e-6). Statistics are segment reductions over the
    prompts' buffers laid out flat with CSR offsets."""

    def __init__(self, buffer_size: int = 32, min_count: int = 16):
        self.buffer_size, self.min_count = buffer_size, min_count
        self.buffers: dict[int, torch.Tensor] = {}

    def __call__(self, prompts: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        rewards = rewards.float()
        keys = torch.unique(prompts)  # sorted
        for p in keys.tolist():
            old = self.buffers.get(p, rewards.new_zeros(0))
            self.buffers[p] = torch.cat([old, rewards[prompts == p]])[-self.buffer_size:]
        flat = torch.cat([self.buffers[p] for p in keys.tolist()])  # [M] all buffers, prompt-major
        lengths = torch.tensor([self.buffers[p].numel() for p in keys.tolist()])
        ptr = kernels.lengths_to_ptr(lengths)
        mean = kernels.segment_mean(flat, ptr)  # [P]
        seg = kernels.ptr_to_segment_ids(ptr, flat.numel())
        std = kernels.segment_mean((flat - mean[seg]) ** 2, ptr).sqrt()  # [P] population std
        few = lengths < self.min_count
        mean = torch.where(few, rewards.mean(), mean)
        std = torch.where(few, rewards.std(unbiased=False), std)
        which = torch.searchsorted(keys, prompts)  # [N] index of each sample's prompt
        return (rewards - mean[which]) / (std[which] + 1e-6)

    def state_dict(self) -> dict:
        return {"buffers": {k: v.clone() for k, v in self.buffers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.buffers = {int(k): v.clone() for k, v in state["buffers"].items()}


class DDPO(Saveable):
    """DDPO learner around a pretrained denoiser `model(x, t, prompt) -> eps` (the digits
    `ConditionalUNet`, a user's module, a diffusers UNet) and its `NoiseSchedule`; `image_size`
    is S for 1 x S x S images or the shape (C, H, W).

    `act(prompts)` samples a `[T, N]` TensorDict of denoising steps (`obs` = x_t, `action` =
    x_{t-1}, `logp`, `timestep`, `prev_timestep`, `prompt`); the final images [N] are the last
    step's action, `rollout["action"][-1]`. `update(batch)` takes that rollout with `reward` set
    on its last step.
    """

    def __init__(self, cfg: DDPOConfig, model: torch.nn.Module, schedule, image_size: int | tuple[int, int, int],
                 device: str | torch.device = "cpu"):
        self.check_config(cfg)
        self.image_shape = (1, image_size, image_size) if isinstance(image_size, int) else tuple(image_size)  # (C, H, W)
        self.cfg, self.schedule = cfg, schedule
        self.check_model(model, cfg)
        self.device = torch.device(device)
        self.model = model.to(self.device).train().requires_grad_(True)
        self.base = frozen_copy(self.model)  # the pretrained sampler, for the KL-like drift
        self.optimizer = make_optimizer(self.model.parameters(), cfg.lr)
        self.tracker = PerPromptStatTracker(cfg.stat_buffer_size, cfg.stat_min_count)
        self.num_minibatches = cfg.num_minibatches or (1 if cfg.variant == "sf" else 4)
        pixels = math.prod(self.image_shape)
        self.clip = cfg.clip_range * (pixels if cfg.logp_reduction == "sum" else 1)

    @staticmethod
    def check_config(cfg: DDPOConfig) -> None:
        """One-line errors (ValueError) for settings that cannot work; `algo=ddpo`'s registered
        check runs it before a run directory exists, the constructor for direct use."""
        if cfg.variant not in ("is", "sf"):
            raise ValueError(f"algo.variant={cfg.variant!r}: use 'is' (importance sampling) or 'sf' (REINFORCE)")
        if cfg.eta <= 0:
            raise ValueError(f"algo.eta={cfg.eta}: DDPO needs eta > 0 (eta = 0 is deterministic DDIM, no log-prob)")
        if cfg.logp_reduction not in ("mean", "sum"):
            raise ValueError(f"algo.logp_reduction={cfg.logp_reduction!r}: use 'mean' or 'sum'")
        if cfg.variant == "sf" and (cfg.inner_epochs != 1 or (cfg.num_minibatches or 1) != 1):
            raise ValueError("DDPO-SF is on-policy: one gradient step per batch; set algo.inner_epochs=1 "
                             "algo.num_minibatches=1, or use algo.variant=is for several steps")
        if not 0 < cfg.timestep_fraction <= 1:
            raise ValueError(f"algo.timestep_fraction={cfg.timestep_fraction}: must be in (0, 1]")
        if cfg.model == "digits" and (not cfg.prompts or any(not 0 <= p <= 9 for p in cfg.prompts)):
            raise ValueError(f"algo.prompts={cfg.prompts}: a non-empty list of digits 0..9")
        if not cfg.prompts or any(p < 0 for p in cfg.prompts):
            raise ValueError(f"algo.prompts={cfg.prompts}: a non-empty list of prompt indices >= 0")

    @staticmethod
    def check_model(model: torch.nn.Module, cfg: DDPOConfig) -> None:
        """What the denoiser declares against the config: prompts below its `num_prompts`, an
        empty prompt (`null_prompt`) for classifier-free guidance."""
        limit = getattr(model, "num_prompts", None)
        if limit is not None and any(p >= limit for p in cfg.prompts):
            raise ValueError(f"algo.prompts={cfg.prompts}: {type(model).__name__} has {limit} prompts (0..{limit - 1})")
        if cfg.guidance_scale != 1.0 and getattr(model, "null_prompt", None) is None:
            raise ValueError(f"algo.guidance_scale={cfg.guidance_scale} needs an empty prompt: {type(model).__name__} "
                             "has no `null_prompt` (the prompt index of its unconditional prediction); use guidance_scale=1")

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def act(self, prompts: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None,
            model: torch.nn.Module | None = None) -> TensorDict:
        """The `[T, N]` denoising rollout for prompts [N] (class labels); `deterministic` runs the
        eta = 0 DDIM chain (no noise after x_T, step log-probs 0). `model` samples from another
        network with the same interface (evaluation's base model)."""
        from rlx.models.diffusion import ddim_sample

        cfg = self.cfg
        prompts = prompts.to(self.device)
        eta = 0.0 if deterministic else cfg.eta
        xs, logps, grid = ddim_sample(model or self.model, self.schedule, prompts, cfg.sample_steps, eta,
                                      cfg.guidance_scale, generator, self.image_shape[1:], cfg.logp_reduction,
                                      cfg.clip_sample, channels=self.image_shape[0])
        T, N = cfg.sample_steps, prompts.shape[0]
        steps = TensorDict({
            "obs": xs[:-1], "action": xs[1:], "logp": logps,  # [T, N, C, H, W], [T, N, C, H, W], [T, N]
            "timestep": grid[:-1, None].expand(T, N).to(self.device),
            "prev_timestep": grid[1:, None].expand(T, N).to(self.device),
            "prompt": prompts[None].expand(T, N),
        }, batch_size=[T, N])
        return steps

    def sample(self, n: int | None = None, prompts=None, deterministic: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Images [n, C, H, W] of the fine-tuned model: one per prompt (class label) of `prompts`,
        or n cycling through `algo.prompts`; `deterministic` runs eta = 0 DDIM."""
        if prompts is None:
            if n is None:
                raise ValueError("DDPO.sample needs n (images over algo.prompts) or prompts (class labels)")
            prompts = torch.tensor(self.cfg.prompts)[torch.arange(n) % len(self.cfg.prompts)]
        return self.act(torch.as_tensor(prompts, dtype=torch.long), deterministic, generator)["action"][-1]

    def step_log_prob(self, rows: TensorDict, model: torch.nn.Module | None = None) -> torch.Tensor:
        """log pi(action | obs, prompt) [B] of stored steps under the current (or given) parameters."""
        from rlx.models.diffusion import ddim_step

        cfg = self.cfg
        _, logp = ddim_step(model or self.model, self.schedule, rows["obs"], rows["timestep"], rows["prev_timestep"],
                            rows["prompt"], cfg.eta, cfg.guidance_scale, prev_sample=rows["action"],
                            reduction=cfg.logp_reduction, clip_sample=cfg.clip_sample)
        return logp

    # ---------------------------------------------------------------- learning
    def advantages(self, prompts: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        if self.cfg.per_prompt_stat_tracking:
            adv = self.tracker(prompts.cpu(), rewards.cpu())
        else:
            adv = (rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-6)
        return adv.clamp(-self.cfg.adv_clip_max, self.cfg.adv_clip_max).to(self.device)

    def loss(self, rows: TensorDict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logp = self.step_log_prob(rows)
        if self.cfg.variant == "sf":
            with torch.no_grad():
                log_ratio = logp - rows["logp"]
            return score_function_loss(logp, rows["adv"]), {"train/approx_kl": ((log_ratio.exp() - 1) - log_ratio).mean()}
        return clipped_surrogate(logp, rows["logp"], rows["adv"], self.clip)

    def update(self, batch: TensorDict) -> dict[str, float]:
        """Inner epochs of minibatch steps over a `[T, N]` rollout; each step accumulates
        gradients over a random `timestep_fraction` of every sample's T steps."""
        cfg = self.cfg
        T, N = batch.shape
        rewards = batch["reward"][-1]  # [N] the reward arrives with the final image
        batch["adv"] = self.advantages(batch["prompt"][0], rewards)[None].expand(T, N)
        flat = batch.reshape(-1)  # [T * N], row = t * N + n
        k = max(1, math.ceil(cfg.timestep_fraction * T))
        mb_size = max(N // self.num_minibatches, 1)
        sums: dict[str, float] = {}
        grad_norms = []

        def step_losses(samples: torch.Tensor, chosen: torch.Tensor):
            """loss / k of each of the k chosen timesteps of `samples` [B] (gradient accumulation)."""
            for j in range(k):
                rows = flat[chosen[samples, j] * N + samples]  # [B] one step of each sample
                loss, info = self.loss(rows)
                info["loss/policy"] = loss.detach()
                for name, v in info.items():
                    sums[name] = sums.get(name, 0.0) + float(v)
                yield loss / k

        for _ in range(cfg.inner_epochs):
            order = torch.randperm(N, device=self.device)
            chosen = torch.argsort(torch.rand(N, T, device=self.device), dim=1)[:, :k]  # [N, k] steps per sample
            for start in range(0, N, mb_size):
                samples = order[start : start + mb_size]  # [B]
                grad_norms.append(optimizer_step(self.optimizer, step_losses(samples, chosen),
                                                 max_grad_norm=cfg.max_grad_norm))
        count = cfg.inner_epochs * math.ceil(N / mb_size) * k
        metrics = {name: v / count for name, v in sums.items()}
        if cfg.max_grad_norm > 0:
            metrics["train/grad_norm"] = sum(grad_norms) / len(grad_norms)
        metrics.update({"train/reward_mean": float(rewards.mean()), "train/reward_std": float(rewards.std()),
                        "train/adv_abs_mean": float(batch["adv"][0].abs().mean())})
        return metrics

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.tracker.load_state_dict(state["tracker"])


@torch.no_grad()
def evaluate_ddpo(learner: DDPO, reward_fn, num_samples: int, seed: int = 12_345,
                  accuracy: bool = True) -> tuple[dict[str, float], torch.Tensor]:
    """Fixed-noise evaluation: `eval/reward_mean`, `eval/accuracy` (digits models, `accuracy`: the
    classifier reads the prompted digit), `eval/diversity` (mean pairwise RMS pixel distance between
    images of the same prompt) and `eval/kl_to_base`, the KL-like drift: a Monte Carlo estimate of
    KL(p_theta || p_base) over whole trajectories, sum_t log pi_theta - log pi_base, in nats
    (log-densities summed over pixels). Returns the metrics and the images."""
    from rlx.envs.image_rewards import classify

    prompt_list = torch.tensor(learner.cfg.prompts)
    prompts = prompt_list.repeat(math.ceil(num_samples / len(prompt_list)))[:num_samples].to(learner.device)
    steps = learner.act(prompts, generator=torch.Generator(learner.device).manual_seed(seed))
    images = steps["action"][-1]  # [N, C, H, W] the final denoised images
    rows = steps.reshape(-1)  # [T * N]
    scale = images[0].numel() if learner.cfg.logp_reduction == "mean" else 1  # per-pixel mean -> sum over pixels
    drift = (learner.step_log_prob(rows) - learner.step_log_prob(rows, learner.base)) * scale
    kl = drift.reshape(steps.shape).sum(0).mean()  # [T, N] -> [N] -> scalar
    distances = []
    for p in prompts.unique():
        x = images[prompts == p].flatten(1)  # [n_p, D]
        if x.shape[0] > 1:
            d = torch.cdist(x, x) / math.sqrt(x.shape[1])  # RMS distance
            distances.append(d.sum() / (x.shape[0] * (x.shape[0] - 1)))
    metrics = {"eval/reward_mean": float(reward_fn(images, prompts).float().mean())}
    if accuracy:
        metrics["eval/accuracy"] = float((classify(images).argmax(1).to(prompts.device) == prompts).float().mean())
    metrics["eval/diversity"] = float(torch.stack(distances).mean()) if distances else float("nan")
    metrics["eval/kl_to_base"] = float(kl)
    return metrics, images


def check(cfg):
    """Validate the model spec, env.kwargs and the reward before anything is built; returns the
    digits base-model config and the reward function. Bad values end as one line (EnvError)."""
    from rlx.core.errors import EnvError
    from rlx.envs.diffusion import check_model_spec, model_label
    from rlx.envs.image_rewards import get_reward
    from rlx.models.diffusion import DigitsDiffusionConfig

    DDPO.check_config(cfg.algo)  # its ValueError becomes a ConfigError in compose_config
    check_model_spec(cfg.algo)
    if cfg.algo.model != "digits" and cfg.env.name == "digits":  # file the run under the model it fine-tunes
        cfg.env.name = model_label(cfg.algo.model)
    try:
        return DigitsDiffusionConfig(**cfg.env.kwargs), get_reward(cfg.algo.reward)
    except (TypeError, ValueError) as e:
        keys = ", ".join(f.name for f in dataclasses.fields(DigitsDiffusionConfig))
        raise EnvError(f"ddpo on env={cfg.env.name}: {e} (env.kwargs keys: {keys})") from None


@register("ddpo", DDPOConfig, "DDPO: RL fine-tuning of a diffusion model (REINFORCE or importance-sampled PPO)",
          default_env="digits", check=lambda cfg: check(cfg))
def train(ctx) -> dict:
    """Entry point of `python -m rlx.train algo=ddpo [algo.variant=sf] [algo.reward=...] [algo.model=...]`."""
    from rlx.core.errors import ConfigError
    from rlx.envs.diffusion import load_denoiser, save_grid

    cfg, algo = ctx.cfg, ctx.cfg.algo
    base_cfg, reward_fn = check(cfg)
    model, schedule, shape = load_denoiser(algo, base_cfg)
    try:
        learner = DDPO(algo, model, schedule, shape, ctx.device)
    except ValueError as e:  # what the model declares disagrees with the config: refused before work
        raise ConfigError(" ".join(str(e).split())) from None
    prompt_list = torch.tensor(algo.prompts)

    def sample() -> tuple[TensorDict, int]:
        prompts = prompt_list[torch.randint(len(prompt_list), (algo.num_samples,), generator=loop.generator)]
        steps = learner.act(prompts, generator=loop.generator)
        images = steps["action"][-1]  # [N, C, H, W]
        reward = torch.zeros(steps.shape, device=learner.device)  # [T, N]: only the final image is scored
        reward[-1] = check_rewards(reward_fn(images, prompts.to(learner.device)), len(prompts), algo.reward).to(learner.device)
        steps["reward"] = reward
        return steps, algo.num_samples  # act already returns the [T, N] rollout

    def evaluate() -> dict[str, float]:
        metrics, images = evaluate_ddpo(learner, reward_fn, algo.eval_samples, seed=cfg.seed + 10_000,
                                        accuracy=algo.model == "digits")
        if ctx.run_dir is not None:
            save_grid(images, ctx.run_dir / "samples" / f"step{loop.steps:07d}.png", nrow=len(algo.prompts))
        return metrics

    loop = SamplerLoop(learner, sample, cfg.trainer, ctx.logger, evaluate, cfg.seed)
    return ctx.run(loop)


def check_rewards(rewards, n: int, name: str) -> torch.Tensor:
    """A reward function's return as a float Tensor [n]; a wrong shape or a NaN is one line naming it."""
    from rlx.core.errors import EnvError

    r = torch.as_tensor(rewards).float()
    if r.shape != (n,):
        raise EnvError(f"reward {name} returned shape {tuple(r.shape)} for {n} images; it must return one value per image ([{n}])")
    if not torch.isfinite(r).all():
        raise EnvError(f"reward {name} returned a non-finite value (NaN/inf) for {int((~torch.isfinite(r)).sum())} of {n} images")
    return r
