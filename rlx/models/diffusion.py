"""The class-conditional diffusion model of DDPO's digits task (`rlx.envs.diffusion` holds its
data, DDPM pretraining and cache; `rlx.algos.ddpo` fine-tunes it).

* `ConditionalUNet`: epsilon_theta(x_t, t, c), a UNet with residual blocks and time + class
  embeddings; prompt c in 0..9, or 10 (`NUM_CLASSES`) for the empty prompt used by
  classifier-free guidance (Ho & Salimans 2022).
* `NoiseSchedule`: betas and alpha_bar of a `NoiseScheduleConfig` (linear, Ho et al. 2020;
  scaled_linear; squaredcos_cap_v2, Nichol & Dhariwal 2021), or of given alpha_bar (a
  diffusers scheduler's); independent of the digits model's config.
* Sampler: DDIM with stochasticity eta (Song et al. 2021, eq. 12 and 16). With eta > 0 every
  step is a Gaussian policy pi(x_{t-1} | x_t, c) whose log-density DDPO needs; eta = 1 on the
  full 1000-step grid is DDPM's ancestral sampler. `ddim_sample` returns the trajectory
  x_T..x_0 and each step's log-prob; `ddim_step(..., prev_sample=x)` recomputes the log-prob
  of a stored step under the current parameters (for importance sampling).

Log-prob convention: a step's log-prob is the Gaussian log-density **averaged over
pixels** (`reduction="mean"`, DDPO's convention), so a ratio exp(logp - old_logp) moves
D = C*H*W times less than with the sum and DDPO's clip range (1e-4) is per pixel;
`reduction="sum"` gives the true log-density in nats (used for the KL estimate).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from rlx.core.checkpoint import Saveable
from rlx.core.ranges import count, one_of, positive

NUM_CLASSES = 10  # digits 0-9; prompt index 10 is "no prompt" (classifier-free guidance)
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclass
class NoiseScheduleConfig:
    """A DDPM noise schedule: `num_train_timesteps` betas from `beta_start` to `beta_end`."""

    num_train_timesteps: int = count(1000)  # diffusion steps the model was trained on
    beta_start: float = positive(1e-4)  # first beta (linear / scaled_linear)
    beta_end: float = positive(0.02)  # last beta (linear / scaled_linear)
    beta_schedule: str = one_of("linear", BETA_SCHEDULES)  # linear (DDPM) | scaled_linear (sqrt-linear, Stable Diffusion) | squaredcos_cap_v2 (cosine)

__all__ = ["NUM_CLASSES", "DigitsDiffusionConfig", "ConditionalUNet", "NoiseSchedule", "NoiseScheduleConfig",
           "BETA_SCHEDULES", "timestep_embedding",
           "guided_eps", "gaussian_log_prob", "ddim_step", "ddim_sample"]


@dataclass
class DigitsDiffusionConfig:
    """The base model: data resolution, network width, noise schedule and DDPM pretraining."""

    image_size: int = 32  # digits are upsampled from 8x8 to this size (>= 32)
    patch_size: int = 4  # pixel-unshuffle factor: the UNet runs on (S/p)x(S/p) maps of p*p channels (cheap on CPU)
    base_channels: int = 32  # UNet width at its first resolution
    channel_mult: list[int] = field(default_factory=lambda: [1, 2])  # width multipliers per resolution level
    num_train_timesteps: int = 1000  # DDPM diffusion steps
    beta_start: float = 1e-4  # linear beta schedule start (Ho et al. 2020)
    beta_end: float = 0.02  # linear beta schedule end
    cond_drop: float = 0.1  # probability of training with the empty prompt (enables guidance)
    steps: int = 2000  # pretraining gradient steps
    batch_size: int = 64  # pretraining batch size
    lr: float = 2e-3  # AdamW learning rate (cosine-decayed to 0)
    ema_decay: float = 0.995  # EMA of weights kept as the pretrained model
    seed: int = 0  # pretraining seed

    def __post_init__(self):
        factor = self.patch_size * 2 ** (len(self.channel_mult) - 1)
        if self.image_size < 32 or self.image_size % factor:
            raise ValueError(f"image_size={self.image_size}: must be >= 32 and divisible by "
                             f"patch_size * 2^(levels-1) = {factor}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")

    def key(self) -> str:
        """A short hash naming the cached checkpoint of exactly this config."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps [B] -> [B, dim] (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]  # [B, half]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the (time + prompt) embedding added in between."""

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]  # [B, cout] -> [B, cout, 1, 1]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class ConditionalUNet(Saveable, nn.Module):
    """epsilon_theta(x_t, t, c): a UNet over `len(channel_mult)` resolutions with skip
    connections; prompt `c` in 0..9, or 10 for the empty prompt."""

    def __init__(self, cfg: DigitsDiffusionConfig, image_channels: int = 1):
        super().__init__()
        self.patch = cfg.patch_size
        in_channels = image_channels * cfg.patch_size**2
        c = cfg.base_channels
        chs = [c * m for m in cfg.channel_mult]
        self.emb_dim = emb = 4 * c
        self.time_mlp = nn.Sequential(nn.Linear(c, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.prompt_emb = nn.Embedding(NUM_CLASSES + 1, emb)
        self.inp = nn.Conv2d(in_channels, c, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        prev = c
        for i, ch in enumerate(chs):
            self.down.append(ResBlock(prev, ch, emb))
            last = i == len(chs) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            prev = ch
        self.mid = ResBlock(prev, prev, emb)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(chs))):
            self.up.append(ResBlock(prev + chs[i], chs[i], emb))
            self.upsample.append(nn.Identity() if i == 0 else nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(chs[i], chs[i], 3, padding=1)))
            prev = chs[i]
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.time_dim = c
        self.null_prompt = NUM_CLASSES  # the empty prompt of classifier-free guidance
        self.num_prompts = NUM_CLASSES

    def forward(self, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.time_dim)) + self.prompt_emb(prompt)  # [B, emb]
        h = self.inp(F.pixel_unshuffle(x, self.patch))  # [B, C, S, S] -> [B, C*p*p, S/p, S/p] -> [B, c, S/p, S/p]
        skips = []
        for block, down in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid(h, emb)
        for block, up in zip(self.up, self.upsample):
            h = up(block(torch.cat([h, skips.pop()], dim=1), emb))
        return F.pixel_shuffle(self.out(h), self.patch)  # [B, C*p*p, S/p, S/p] -> [B, C, S, S]


class NoiseSchedule(Saveable):
    """Betas and their cumulative products alpha_bar_t = prod_{s<=t} (1 - beta_s), from a
    `NoiseScheduleConfig` or any object with its fields (`DigitsDiffusionConfig`: linear)."""

    def __init__(self, cfg: NoiseScheduleConfig | DigitsDiffusionConfig):
        T, kind = cfg.num_train_timesteps, getattr(cfg, "beta_schedule", "linear")
        if not 0 < cfg.beta_start < cfg.beta_end < 1:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {cfg.beta_start}, {cfg.beta_end}")
        if kind == "linear":
            betas = torch.linspace(cfg.beta_start, cfg.beta_end, T, dtype=torch.float64)
        elif kind == "scaled_linear":  # linear in sqrt(beta)
            betas = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, T, dtype=torch.float64) ** 2
        elif kind == "squaredcos_cap_v2":  # Nichol & Dhariwal 2021, eq. 17: abar(t) = cos^2((t/T + s) / (1 + s) pi/2)
            f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        else:
            raise ValueError(f"beta_schedule={kind!r}: choose one of {', '.join(BETA_SCHEDULES)}")
        self._set(torch.cumprod(1 - betas, 0), betas)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor) -> NoiseSchedule:
        """The schedule of given alpha_bar [T] (e.g. a diffusers scheduler's `alphas_cumprod`)."""
        schedule = cls.__new__(cls)
        schedule._set(torch.as_tensor(alphas_cumprod, dtype=torch.float64))
        return schedule

    def _set(self, abar: torch.Tensor, betas: torch.Tensor | None = None) -> None:
        if betas is None:  # beta_t = 1 - abar_t / abar_{t-1}
            betas = 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
        self.betas = betas.float()
        self.alphas_cumprod = abar.float()  # [num_train_timesteps]
        self.num_train_timesteps = abar.numel()

    def timesteps(self, num_steps: int) -> torch.Tensor:
        """The sampling grid tau_S > ... > tau_1 > tau_0 = 0 ([num_steps + 1], evenly spaced).
        Step k goes from tau_k to tau_{k-1}; ending at tau_0 = 0 (alpha_bar_0 < 1) keeps every
        step's variance positive, so every step has a log-density."""
        if not 1 <= num_steps < self.num_train_timesteps:
            raise ValueError(f"num_steps={num_steps}: must be in [1, {self.num_train_timesteps - 1}]")
        return torch.linspace(self.num_train_timesteps - 1, 0, num_steps + 1).round().long()

    def abar(self, t: torch.Tensor, device) -> torch.Tensor:
        return self.alphas_cumprod.to(device)[t].reshape(-1, 1, 1, 1)  # [B] -> [B, 1, 1, 1]


def guided_eps(model: nn.Module, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor,
               guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: eps_u + w (eps_c - eps_u), eps_u the prediction for the model's
    empty prompt `model.null_prompt`; w = 1 is the plain conditional model."""
    if guidance_scale == 1.0:
        return model(x, t, prompt)
    null = getattr(model, "null_prompt", None)
    if null is None:
        raise ValueError(f"guidance_scale={guidance_scale} needs an empty prompt: {type(model).__name__} has no "
                         "`null_prompt` attribute (the prompt index of the unconditional prediction); use guidance_scale=1")
    empty = torch.full_like(prompt, null)
    eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([prompt, empty]))  # [2B, C, S, S]
    eps_c, eps_u = eps.chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """log N(x; mean, std^2) per sample [B], averaged (`mean`) or summed (`sum`) over pixels."""
    logp = -((x - mean) ** 2) / (2 * std**2) - std.log() - 0.5 * math.log(2 * math.pi)  # [B, C, S, S]
    logp = logp.flatten(1)  # [B, D]
    if reduction == "mean":
        return logp.mean(1)
    if reduction == "sum":
        return logp.sum(1)
    raise ValueError(f"reduction={reduction!r}: use 'mean' (per pixel, DDPO) or 'sum' (nats)")


def ddim_step(model: nn.Module, schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor,
              prompt: torch.Tensor, eta: float, guidance_scale: float = 1.0, prev_sample: torch.Tensor | None = None,
              generator: torch.Generator | None = None, reduction: str = "mean",
              clip_sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step x_t -> x_{t_prev} (t, t_prev: [B]); returns (x_prev, log pi(x_prev | x_t, c) [B]).

    With `prev_sample` given, no noise is drawn: the log-prob of that stored step is
    recomputed under the current parameters (differentiable)."""
    eps = guided_eps(model, x_t, t, prompt, guidance_scale)
    a_t, a_s = schedule.abar(t, x_t.device), schedule.abar(t_prev, x_t.device)
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()  # predicted x_0 (DDIM eq. 12, first term)
    if clip_sample:  # keep x_0 in the data range; eps re-derived so that mean and x_0 agree
        x0 = x0.clamp(-1, 1)
        eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    var = eta**2 * (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)  # DDIM eq. 16
    mean = a_s.sqrt() * x0 + (1 - a_s - var).clamp_min(0).sqrt() * eps  # DDIM eq. 12
    std = var.sqrt()
    if prev_sample is None:
        noise = torch.randn(x_t.shape, generator=generator, device=x_t.device)
        prev_sample = mean + std * noise
    if eta <= 0:
        return prev_sample, torch.zeros(x_t.shape[0], device=x_t.device)
    return prev_sample, gaussian_log_prob(prev_sample.detach(), mean, std, reduction)


@torch.no_grad()
def ddim_sample(model: nn.Module, schedule: NoiseSchedule, prompt: torch.Tensor, num_steps: int = 10,
                eta: float = 1.0, guidance_scale: float = 1.0, generator: torch.Generator | None = None,
                image_size: int | tuple[int, int] = 32, reduction: str = "mean",
                clip_sample: bool = False, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample images of `channels` x H x W (`image_size` S for S x S, or (H, W)) for prompts [N].
    Returns the trajectory [num_steps + 1, N, C, H, W] (x_T first, the final image x_0 last), the
    step log-probs [num_steps, N] (zeros when eta = 0, where DDIM is deterministic), and the
    timestep grid [num_steps + 1]."""
    device = prompt.device
    grid = schedule.timesteps(num_steps)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    x = torch.randn((prompt.shape[0], channels, h, w), generator=generator, device=device)
    xs, logps = [x], []
    for k in range(num_steps):
        t = grid[k].expand(prompt.shape[0]).to(device)
        t_prev = grid[k + 1].expand(prompt.shape[0]).to(device)
        x, logp = ddim_step(model, schedule, x, t, t_prev, prompt, eta, guidance_scale, generator=generator,
                            reduction=reduction, clip_sample=clip_sample)
        xs.append(x)
        logps.append(logp)
    return torch.stack(xs), torch.stack(logps), grid
