"""A local diffusers model as DDPO's denoiser (`algo.model=diffusers:<dir>`, the `diffusion` extra).

`<dir>` is a saved pipeline folder (`unet/` and `scheduler/` subfolders) or a bare model folder
(the UNet's `config.json` and weights, with the scheduler's `scheduler_config.json` beside it).
Nothing is downloaded (`local_files_only=True`). What is read:

* the UNet: `UNet2DModel` (unconditional, or class-conditional when `num_class_embeds` is set:
  the prompt is the class label) or `UNet2DConditionModel` (cross-attention: prompt i is row i of
  `prompt_embeds.safetensors` in `<dir>`, tensor `prompt_embeds` [P, L, D]; an optional
  `negative_prompt_embeds` [L, D] is the empty prompt of classifier-free guidance, index P);
* the scheduler config, loaded as a `DDIMScheduler`: its `alphas_cumprod` become rlx's
  `NoiseSchedule` and its `prediction_type` (epsilon | v_prediction | sample) is turned into an
  epsilon prediction. The DDIM step itself is rlx's (`ddim_step`, the same formula as
  `DDIMScheduler.step` with its log-density, tested against it).

`DiffusersDenoiser(x [B, C, H, W], t [B] int64, prompt [B] int64) -> eps [B, C, H, W]`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from rlx.models.diffusion import NoiseSchedule

__all__ = ["DiffusersDenoiser", "load_diffusers"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class DiffusersDenoiser(nn.Module):
    """eps(x_t, t, prompt) of a diffusers UNet (see the module docstring)."""

    def __init__(self, unet: nn.Module, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon",
                 prompt_embeds: torch.Tensor | None = None, negative_prompt_embeds: torch.Tensor | None = None):
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"scheduler prediction_type={prediction_type!r}: rlx reads {', '.join(PREDICTION_TYPES)}")
        self.unet, self.prediction_type = unet, prediction_type
        self.register_buffer("alphas_cumprod", torch.as_tensor(alphas_cumprod, dtype=torch.float32), persistent=False)
        config = unet.config
        self.cross_attention = type(unet).__name__ == "UNet2DConditionModel"
        self.null_prompt = self.num_prompts = None
        if self.cross_attention:
            if prompt_embeds is None:
                raise ValueError("a UNet2DConditionModel needs prompt embeddings: save prompt_embeds.safetensors "
                                 "(tensor prompt_embeds [P, L, D]) in the model folder")
            if prompt_embeds.dim() != 3 or prompt_embeds.shape[-1] != config.cross_attention_dim:
                raise ValueError(f"prompt_embeds {tuple(prompt_embeds.shape)} must be [P, L, "
                                 f"cross_attention_dim={config.cross_attention_dim}]")
            table = prompt_embeds
            self.num_prompts = prompt_embeds.shape[0]
            if negative_prompt_embeds is not None:
                table = torch.cat([prompt_embeds, negative_prompt_embeds.reshape(1, *prompt_embeds.shape[1:])])
                self.null_prompt = self.num_prompts
            self.register_buffer("prompt_table", table.float())
        elif config.get("num_class_embeds"):
            self.num_prompts = config.num_class_embeds

    def forward(self, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        if self.cross_attention:
            out = self.unet(x, t, encoder_hidden_states=self.prompt_table[prompt]).sample
        elif self.num_prompts is not None:
            out = self.unet(x, t, class_labels=prompt).sample
        else:
            out = self.unet(x, t).sample
        if self.prediction_type == "epsilon":
            return out
        a = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0  =>  eps = sqrt(a) v + sqrt(1 - a) x_t
            return a.sqrt() * out + (1 - a).sqrt() * x
        return (x - a.sqrt() * out) / (1 - a).sqrt()  # x0 prediction


def _folder(path: Path, sub: str, file: str) -> str | None:
    """The subfolder of a pipeline folder that holds `file`, "" for the folder itself, None if neither."""
    if (path / sub / file).is_file():
        return sub
    return "" if (path / file).is_file() else None


def load_diffusers(path: str | Path) -> tuple[DiffusersDenoiser, NoiseSchedule, tuple[int, int, int]]:
    """(denoiser, its noise schedule, image shape (C, H, W)) of a local diffusers model folder."""
    try:
        import diffusers
    except ImportError:
        raise ValueError("algo.model=diffusers:... needs the diffusers package: pip install 'rlx[diffusion]'") from None
    path = Path(path)
    unet_dir, sched_dir = _folder(path, "unet", "config.json"), _folder(path, "scheduler", "scheduler_config.json")
    if unet_dir is None:
        raise ValueError(f"no diffusers model in {path}: expected {path}/unet/config.json or {path}/config.json")
    if sched_dir is None:
        raise ValueError(f"no scheduler config in {path}: expected {path}/scheduler/scheduler_config.json or "
                         f"{path}/scheduler_config.json (save the DDIMScheduler/DDPMScheduler the model was trained with)")
    name = json.loads((path / unet_dir / "config.json").read_text()).get("_class_name")
    if name not in ("UNet2DModel", "UNet2DConditionModel"):
        raise ValueError(f"{path}: a {name} is not supported; rlx's adapter loads UNet2DModel or UNet2DConditionModel")
    unet = getattr(diffusers, name).from_pretrained(path, subfolder=unet_dir or None, local_files_only=True)
    scheduler = diffusers.DDIMScheduler.from_pretrained(path, subfolder=sched_dir or None, local_files_only=True)
    embeds = {}
    if (path / "prompt_embeds.safetensors").is_file():
        from safetensors.torch import load_file

        embeds = load_file(path / "prompt_embeds.safetensors")
    model = DiffusersDenoiser(unet.eval(), scheduler.alphas_cumprod, scheduler.config.prediction_type,
                              embeds.get("prompt_embeds"), embeds.get("negative_prompt_embeds"))
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return model, NoiseSchedule.from_alphas_cumprod(scheduler.alphas_cumprod), (unet.config.in_channels, h, w)
