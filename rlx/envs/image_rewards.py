"""Rewards for generated images (DDPO, Black et al. 2023, section 5.1), as plain callables

    reward_fn(images [N, 1, S, S] in [-1, 1], prompts [N] int64) -> rewards [N] float32

so any `pkg.mod:func` with that signature plugs in (`algo.reward=pkg.mod:func`). Built-ins:

* `compressibility` / `incompressibility`: minus / plus the JPEG file size in kB at
  quality 95 (PIL), DDPO's compressibility tasks.
* `alignment`: log p(prompt | image) under `rlx.models.classifier.DigitClassifier`, a small
  classifier trained locally on the digits (cached like the base model), DDPO's prompt-alignment task with a
  classifier in place of the VLM.
* `aesthetic`: a hand-written proxy for "bold, crisp strokes" (DDPO's LAION aesthetic
  predictor needs downloads): crispness mean|x| (pixels decisively ink or background, in
  [0, 1]) plus an ink-coverage term 1 - |ink - 0.25| / 0.25 (ink = fraction of pixels > 0;
  1 at 25% coverage, a white page scores -1). Range [-2, 2].
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rlx.core.checkpoint import load_checkpoint, save_checkpoint
from rlx.core.fit import fit
from rlx.envs.diffusion import cache_dir, digits_images
from rlx.models.classifier import DigitClassifier

RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"image rewards take grayscale images [N, 1, S, S] in [-1, 1], got {tuple(images.shape)}")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 1, S, S] in [-1, 1] -> uint8 [N, S, S]."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()[:, 0]


def jpeg_kb(images: torch.Tensor, quality: int = 95) -> torch.Tensor:
    """JPEG file size in kB of each image [N] at the given quality."""
    from PIL import Image

    _check(images)
    sizes = []
    for pixels in to_uint8(images):
        buf = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buf, format="JPEG", quality=quality)
        sizes.append(buf.tell() / 1000.0)
    return torch.tensor(sizes, dtype=torch.float32)


def compressibility(images: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    return -jpeg_kb(images)


def incompressibility(images: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    return jpeg_kb(images)


def aesthetic(images: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    _check(images)
    x = images.detach().float().clamp(-1, 1).flatten(1).cpu()  # [N, D]
    crisp = x.abs().mean(1)
    ink = (x > 0).float().mean(1)
    return crisp + 1 - (ink - 0.25).abs() / 0.25


def train_classifier(image_size: int = 32, steps: int = 600, seed: int = 0) -> tuple[DigitClassifier, float]:
    """Train on 1,500 digits with shift and noise augmentation; returns the model and its
    accuracy on the 297 held-out digits."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    images, labels = digits_images(image_size)
    train_x, train_y, test_x, test_y = images[:1500], labels[:1500], images[1500:], labels[1500:]
    model = DigitClassifier()
    shift = image_size // 16

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.randint(train_x.shape[0], (128,), generator=gen)
        dx, dy = torch.randint(-shift, shift + 1, (2,), generator=gen).tolist()
        x = torch.roll(train_x[idx], shifts=(dy, dx), dims=(2, 3))
        x = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
        return F.cross_entropy(model(x), train_y[idx])

    fit(model, loss_fn, steps, lr=1e-3)
    with torch.no_grad():
        acc = float((model(test_x).argmax(1) == test_y).float().mean())
    return model.eval(), acc


_CLASSIFIERS: dict[int, DigitClassifier] = {}


def load_classifier(image_size: int = 32) -> DigitClassifier:
    """The cached digit classifier for this image size (trained, ~10 s, and cached on first use)."""
    if image_size not in _CLASSIFIERS:
        path = Path(cache_dir()) / "classifier" / f"digits-mlp-{image_size}.pt"
        model = DigitClassifier()
        if path.is_file():
            model.load_state_dict(load_checkpoint(path)["model"])
        else:
            with torch.enable_grad():  # may be first called under no_grad (evaluation)
                model, acc = train_classifier(image_size)
            save_checkpoint(path, {"model": model.state_dict(), "test_accuracy": acc})
        _CLASSIFIERS[image_size] = model.eval().requires_grad_(False)
    return _CLASSIFIERS[image_size]


@torch.no_grad()
def classify(images: torch.Tensor) -> torch.Tensor:
    """Log-probabilities [N, 10] of each digit class."""
    _check(images)
    model = load_classifier(images.shape[-1])
    return F.log_softmax(model(images.detach().float().cpu()), dim=1)


def alignment(images: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    return classify(images).gather(1, prompts.cpu().long()[:, None]).squeeze(1)


BUILTIN_REWARDS: dict[str, RewardFn] = {
    "compressibility": compressibility,
    "incompressibility": incompressibility,
    "alignment": alignment,
    "aesthetic": aesthetic,
}


def get_reward(name: str) -> RewardFn:
    """A built-in reward by name, or any `pkg.mod:func` callable."""
    if name in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[name]
    if ":" not in name:
        raise ValueError(f"unknown image reward {name!r}; built-ins: {', '.join(BUILTIN_REWARDS)}, "
                         f"or a callable 'pkg.mod:func'")
    from rlx.envs.registry import import_object

    fn = import_object(name)
    if not callable(fn):
        raise ValueError(f"reward {name!r} is not callable; it must be fn(images, prompts) -> rewards [N]")
    return fn
