"""DDPO's digits task: the data and the pretrained base model (`rlx.algos.ddpo` fine-tunes it).

* Data: scikit-learn's bundled digits (1,797 8x8 images, nothing downloaded), upsampled
  bilinearly to `image_size` (>= 32) and scaled to [-1, 1] (background -1, ink +1). The
  digit class is the prompt; index 10 is the empty prompt used by classifier-free guidance.
* Base model: `rlx.models.diffusion.ConditionalUNet` (a few hundred thousand parameters at
  the default width), pretrained here as a DDPM (Ho et al. 2020, eq. 14: epsilon prediction,
  linear beta schedule) with the prompt dropped 10% of the time (Ho & Salimans 2022), through
  `rlx.core.fit` (AdamW, cosine schedule, EMA). `python -m rlx.envs.diffusion pretrain` trains
  it once; the checkpoint is cached (`$RLX_CACHE` or `~/.cache/rlx`) under a hash of its config
  and reused. The network, noise schedule and DDIM sampler live in `rlx.models.diffusion`.
* DDPO's denoiser (`load_denoiser`): this digits model, a user's `pkg.mod:factory`, or a local
  diffusers model (`rlx.models.diffusers_unet`), with its noise schedule and image shape.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rlx.core.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from rlx.core.fit import fit
from rlx.models.diffusion import NUM_CLASSES, ConditionalUNet, DigitsDiffusionConfig, NoiseSchedule, ddim_sample

# ---------------------------------------------------------------------------- data


def digits_images(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as images [1797, 1, S, S] in [-1, 1] and labels [1797]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # [1797, 1, 8, 8] in [0, 1]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.clamp(0, 1) * 2 - 1, torch.as_tensor(d.target, dtype=torch.int64)


def cache_dir() -> Path:
    return Path(os.environ.get("RLX_CACHE", Path.home() / ".cache" / "rlx"))


# ---------------------------------------------------------------------------- pretraining


def ddpm_loss(model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, prompt: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Ho et al. 2020 eq. 14: || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, c) ||^2."""
    t = torch.randint(schedule.num_train_timesteps, (x0.shape[0],), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    a = schedule.abar(t, x0.device)
    return F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, prompt), eps)


def pretrain(cfg: DigitsDiffusionConfig, log_every: int = 200, verbose: bool = True) -> ConditionalUNet:
    """Train the base model as a DDPM on the digits; returns the EMA weights (eval mode)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    images, labels = digits_images(cfg.image_size)
    model = ConditionalUNet(cfg)
    ema = copy.deepcopy(model).requires_grad_(False)
    schedule = NoiseSchedule(cfg)

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.randint(images.shape[0], (cfg.batch_size,), generator=gen)
        prompt = labels[idx].clone()
        prompt[torch.rand(cfg.batch_size, generator=gen) < cfg.cond_drop] = NUM_CLASSES
        return ddpm_loss(model, schedule, images[idx], prompt, gen)

    t0, running = time.time(), [0.0]

    def progress(step: int, loss: float) -> None:
        running[0] += loss
        if verbose and (step + 1) % log_every == 0:
            print(f"pretrain step {step + 1}/{cfg.steps}  loss {running[0] / log_every:.4f}  {time.time() - t0:.0f}s",
                  file=sys.stderr, flush=True)
            running[0] = 0.0

    fit(model, loss_fn, cfg.steps, cfg.lr, weight_decay=1e-4, schedule="cosine", max_grad_norm=1.0, ema=ema,
        ema_decay=cfg.ema_decay, callback=progress)
    return ema.eval()


def checkpoint_path(cfg: DigitsDiffusionConfig) -> Path:
    return cache_dir() / "diffusion" / f"digits-{cfg.key()}.pt"


def load_base_model(cfg: DigitsDiffusionConfig, path: str | Path | None = None, pretrain_if_missing: bool = True,
                    verbose: bool = True) -> ConditionalUNet:
    """The pretrained base model for `cfg`: loaded from `path` or the cache, else pretrained
    now and cached (atomic write) for every later run."""
    path = Path(path) if path is not None else checkpoint_path(cfg)
    if path.is_file():
        state = load_checkpoint(path)
        saved = DigitsDiffusionConfig(**state["config"])
        model = ConditionalUNet(saved)
        model.load_state_dict(state["model"])
        return model.eval()
    if not pretrain_if_missing:
        raise FileNotFoundError(f"no base model at {path}; run `python -m rlx.envs.diffusion pretrain` first")
    if verbose:
        print(f"no cached base model at {path}: pretraining it now ({cfg.steps} steps)", file=sys.stderr)
    model = pretrain(cfg, verbose=verbose)
    save_checkpoint(path, {"config": dataclasses.asdict(cfg), "model": model.state_dict()})
    return model


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 10, scale: int = 2) -> Path:
    """Write images [N, C, H, W] in [-1, 1] (C = 1: grayscale, C = 3: RGB, else the first channel)
    as one PNG grid (atomic write)."""
    from PIL import Image

    images = images.detach().float().cpu()
    images = images if images.shape[1] in (1, 3) else images[:, :1]
    n, ch, h, w = images.shape
    rows = math.ceil(n / nrow)
    canvas = torch.full((ch, rows * (h + 2), nrow * (w + 2)), -1.0)
    for i in range(n):
        r, c = divmod(i, nrow)
        canvas[:, r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = images[i]
    pixels = ((canvas.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()  # [H', W', C]
    img = Image.fromarray(pixels[:, :, 0] if ch == 1 else pixels, mode="L" if ch == 1 else "RGB")
    img = img.resize((canvas.shape[2] * scale, canvas.shape[1] * scale), Image.NEAREST)
    return atomic_write(path, lambda f: img.save(f, format="PNG"))


# ---------------------------------------------------------------------------- DDPO's denoiser


SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")


def check_model_spec(algo) -> None:
    """`algo.model` and the fields that go with it, before anything is built (one ValueError line):
    `digits`, `pkg.mod:factory` (importable, callable) or `diffusers:<dir>` (an existing folder)."""
    spec, given = algo.model, [k for k in SCHEDULE_KEYS if getattr(algo, k) is not None]
    if spec != "digits" and algo.base_checkpoint is not None:
        raise ValueError(f"algo.base_checkpoint is the digits model's file; algo.model={spec} brings its own weights")
    if not spec.startswith("diffusers:") and ":" not in spec and spec != "digits":
        raise ValueError(f"algo.model={spec!r}: use digits, pkg.mod:factory (a function returning eps(x, t, prompt)) "
                         "or diffusers:<dir> (a local diffusers model folder)")
    if spec == "digits" or spec.startswith("diffusers:"):
        if given or algo.image_shape is not None or algo.model_kwargs:
            keys = ", ".join(f"algo.{k}" for k in [*given, *(["image_shape"] if algo.image_shape else []),
                                                    *(["model_kwargs"] if algo.model_kwargs else [])])
            owner = "env.kwargs (DigitsDiffusionConfig)" if spec == "digits" else "the model folder's configs"
            raise ValueError(f"{keys} set a pkg.mod:factory model; algo.model={spec} takes them from {owner}")
        if spec.startswith("diffusers:") and not Path(spec.split(":", 1)[1]).is_dir():
            raise ValueError(f"algo.model={spec}: no folder {spec.split(':', 1)[1]!r} (a saved diffusers model)")
        return
    from rlx.envs.registry import import_object

    if not callable(import_object(spec)):
        raise ValueError(f"algo.model={spec} is not callable; it must be factory(**algo.model_kwargs) -> nn.Module")
    if algo.image_shape is not None and len(algo.image_shape) != 3:
        raise ValueError(f"algo.image_shape={algo.image_shape}: give [C, H, W]")


def model_label(spec: str) -> str:
    """The run name of a model spec: `diffusers_<folder>` or `<module>_<factory>`."""
    if spec.startswith("diffusers:"):
        return "diffusers_" + Path(spec.split(":", 1)[1]).name
    module, _, attr = spec.partition(":")
    return f"{module.rsplit('.', 1)[-1]}_{attr}"


def load_denoiser(algo, base_cfg: DigitsDiffusionConfig) -> tuple[nn.Module, NoiseSchedule, tuple[int, int, int]]:
    """DDPO's base model, its noise schedule and the image shape (C, H, W) it samples, from
    `algo.model` (see docs/ddpo.md, "Your own denoiser")."""
    from rlx.core.errors import ConfigError
    from rlx.models.diffusion import NoiseScheduleConfig

    spec = algo.model
    if spec == "digits":
        model = load_base_model(base_cfg, algo.base_checkpoint)
        return model, NoiseSchedule(base_cfg), (1, base_cfg.image_size, base_cfg.image_size)
    if spec.startswith("diffusers:"):
        from rlx.models.diffusers_unet import load_diffusers

        try:
            return load_diffusers(spec.split(":", 1)[1])
        except ValueError as e:
            raise ConfigError(f"algo.model={spec}: {' '.join(str(e).split())}") from None
    from rlx.envs.registry import import_object

    given = {k: getattr(algo, k) for k in SCHEDULE_KEYS if getattr(algo, k) is not None}
    try:
        schedule = NoiseSchedule(NoiseScheduleConfig(**given))
    except ValueError as e:
        raise ConfigError(f"algo.model={spec}: {e}") from None
    model = import_object(spec)(**algo.model_kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"algo.model={spec} returned {type(model).__name__}, not a torch.nn.Module eps(x, t, prompt)")
    shape = algo.image_shape or getattr(model, "image_shape", None)
    if shape is None or len(shape) != 3:
        raise ConfigError(f"algo.model={spec}: give the image shape, algo.image_shape=[C,H,W] (or an `image_shape` "
                          "attribute on the module)")
    shape = tuple(int(v) for v in shape)
    x = torch.zeros(2, *shape)
    with torch.no_grad():
        eps = model(x, torch.full((2,), schedule.num_train_timesteps - 1), torch.tensor(algo.prompts[:1] * 2))
    if not isinstance(eps, torch.Tensor) or eps.shape != x.shape:
        got = tuple(eps.shape) if isinstance(eps, torch.Tensor) else type(eps).__name__
        raise ConfigError(f"algo.model={spec}: the module returned {got} for x [2, {', '.join(map(str, shape))}]; "
                          f"eps(x, t, prompt) must have the shape of x")
    return model, schedule, shape


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlx.envs.diffusion",
                                     description="Pretrain (and cache) or sample the digits diffusion base model.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("pretrain", "sample"):
        p = sub.add_parser(name)
        for f in dataclasses.fields(DigitsDiffusionConfig):
            if f.name != "channel_mult":
                p.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(DigitsDiffusionConfig(), f.name)))
        p.add_argument("--channel-mult", type=int, nargs="+")
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    sub.choices["pretrain"].add_argument("--force", action="store_true", help="retrain even if cached")
    sub.choices["sample"].add_argument("--out", default="digits_samples.png", help="PNG grid to write")
    sub.choices["sample"].add_argument("--num-steps", type=int, default=20, help="DDIM steps")
    sub.choices["sample"].add_argument("--eta", type=float, default=1.0, help="DDIM eta")
    sub.choices["sample"].add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    kwargs = {f.name: getattr(args, f.name) for f in dataclasses.fields(DigitsDiffusionConfig)
              if getattr(args, f.name) is not None}
    cfg = DigitsDiffusionConfig(**kwargs)
    path = checkpoint_path(cfg)
    if args.command == "pretrain":
        if args.force:
            path.unlink(missing_ok=True)
        load_base_model(cfg)
        print(path)
        return 0
    model = load_base_model(cfg, pretrain_if_missing=False)
    prompt = torch.arange(NUM_CLASSES).repeat_interleave(8)
    xs, _, _ = ddim_sample(model, NoiseSchedule(cfg), prompt, args.num_steps, args.eta, args.guidance,
                           torch.Generator().manual_seed(cfg.seed), cfg.image_size)
    print(save_grid(xs[-1], args.out, nrow=8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
