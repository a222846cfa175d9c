"""What a user brings to DDPO: a denoiser factory and a reward
(`algo.model=tests.ddpo.user_model:factory algo.reward=tests.ddpo.user_model:color`)."""

import torch
import torch.nn.functional as F
from torch import nn

from rlx.models.diffusion import NoiseSchedule, NoiseScheduleConfig


class TinyDenoiser(nn.Module):
    """eps(x, t, prompt) for C x S x S images: the exact denoiser of a Gaussian image prior
    N(0, sigma^2 I) under rlx's default schedule (a "pretrained" base model in closed form), plus a
    small conv net on x, sqrt(abar_t) and the prompt, zero-initialised (so the base is the prior)."""

    def __init__(self, channels: int = 3, size: int = 8, num_prompts: int = 2, width: int = 16, sigma: float = 0.5):
        super().__init__()
        self.image_shape, self.num_prompts, self.sigma = (channels, size, size), num_prompts, sigma
        self.register_buffer("abar", NoiseSchedule(NoiseScheduleConfig()).alphas_cumprod)
        self.inp, self.time, self.prompt = nn.Conv2d(channels, width, 3, padding=1), nn.Linear(1, width), nn.Embedding(num_prompts, width)
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].reshape(-1, 1, 1, 1)
        prior = (1 - a).sqrt() * x / (a * self.sigma**2 + 1 - a)  # E[eps | x_t] for x_0 ~ N(0, sigma^2)
        h = self.inp(x) + (self.time(a.reshape(-1, 1).sqrt()) + self.prompt(prompt))[:, :, None, None]
        return prior + self.out(F.silu(h))


def factory(**kwargs) -> TinyDenoiser:
    return TinyDenoiser(**kwargs)


def color(images: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """Prompt p asks for channel p % C: its mean minus the mean of all channels, per image [N]."""
    channel = prompts.long() % images.shape[1]
    chosen = images[torch.arange(images.shape[0]), channel].mean((1, 2))
    return (chosen - images.mean((1, 2, 3))).float()


def wrong_length(images: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    return torch.zeros(images.shape[0] - 1)


class OneChannel(TinyDenoiser):
    """A mistake: eps of the first channel only."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        return super().forward(x, t, prompt)[:, :1]


def not_a_module(**kwargs):
    return lambda x, t, prompt: x
