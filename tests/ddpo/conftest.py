import os
import shutil
from pathlib import Path

import pytest
import torch

from rlx.models.diffusion import DigitsDiffusionConfig

# The base model of `python -m rlx.envs.diffusion pretrain` (default config; ~15 min on a
# CPU core, too long for CI; weights stored in fp16 under tests/ddpo/data/) placed in a
# per-session cache, where the code under test finds it exactly as it finds a cached model.
# Micro models pretrained within CI's budget only produce noise, on which no reward moves.
CI_MODEL: dict = {}
CI_CHECKPOINT = Path(__file__).parent / "data" / "digits_base.pt"


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("rlx_cache")
    old = os.environ.get("RLX_CACHE")
    os.environ["RLX_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("RLX_CACHE", None)
    else:
        os.environ["RLX_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_model(cache):
    from rlx.envs.diffusion import checkpoint_path, load_base_model

    torch.set_num_threads(1)
    cfg = DigitsDiffusionConfig(**CI_MODEL)
    checkpoint_path(cfg).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(CI_CHECKPOINT, checkpoint_path(cfg))
    return cfg, load_base_model(cfg, pretrain_if_missing=False)
