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
    """Write images [N, 1, S, S] in [-1, 1] as one PNG grid (atomic write)."""
    from PIL import Image

    n, _, s, _ = images.shape
    rows = math.ceil(n / nrow)
    canvas = torch.full((rows * (s + 2), nrow * (s + 2)), -1.0)
    for i in range(n):
        r, c = divmod(i, nrow)
        canvas[r * (s + 2) + 1 : r * (s + 2) + 1 + s, c * (s + 2) + 1 : c * (s + 2) + 1 + s] = images[i, 0]
    pixels = ((canvas.clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    img = Image.fromarray(pixels, mode="L").resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
    return atomic_write(path, lambda f: img.save(f, format="PNG"))


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
