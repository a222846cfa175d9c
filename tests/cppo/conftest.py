"""A small text stream built once per test session in a temporary cache (about 15 s on 2 cores)."""

import pytest
import torch

from rlx.envs.text import StreamConfig, Tokenizer, load_stream
from rlx.models.transformer import LMConfig, TransformerLM

SMALL = dict(corpus_size=1000, sft_steps=150, pairs_per_task=1000, rm_steps=200)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def stream_cfg(tmp_path_factory):
    return StreamConfig(**SMALL, cache_dir=str(tmp_path_factory.mktemp("rlx_cache")))


@pytest.fixture(scope="session")
def lm_cfg(stream_cfg):
    return LMConfig(vocab_size=len(Tokenizer()), block_size=4 + stream_cfg.response_len, d_model=32)  # CI-sized


@pytest.fixture(scope="session")
def stream(stream_cfg, lm_cfg):
    return load_stream(stream_cfg, lm_cfg)


@pytest.fixture
def sft_policy(stream, lm_cfg):
    policy = TransformerLM(lm_cfg)
    policy.load_state_dict(stream.sft_state)
    return policy
