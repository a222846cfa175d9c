"""A tiny randomly initialised GPT-2 and a word-level tokenizer built here (nothing downloaded),
saved to a temporary directory, and 64-prompt JSONL files."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TOPICS = ["movie", "song", "phone", "hotel", "pizza", "match", "book", "game"]
ASKS = ["tell me about the", "what about the", "describe the", "rate the", "review the", "talk about the",
        "say something on the", "give an opinion on the"]
ANSWERS = ["yes", "no", "maybe", "good", "bad", "fine", "okay", "sure", "never", "always"]
SPECIALS = ["<pad>", "<eos>", "<unk>"]


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def prompts(n: int = 64, offset: int = 0) -> list[str]:
    return [f"{ASKS[(i + offset) % len(ASKS)]} {TOPICS[(i // len(ASKS) + offset) % len(TOPICS)]}" for i in range(n)]


def save_tiny_gpt2(path, seed: int = 0):
    """A 1-layer, 32-wide GPT-2 over the words of the prompts and answers, and its tokenizer, in `path`."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted({w for p in prompts() for w in p.split()} | set(ANSWERS))
    vocab = {w: i for i, w in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                                unk_token="<unk>")
    fast.save_pretrained(path)
    cfg = transformers.GPT2Config(vocab_size=len(vocab), n_positions=32, n_embd=32, n_layer=1, n_head=2,
                                  bos_token_id=vocab["<eos>"], eos_token_id=vocab["<eos>"], pad_token_id=vocab["<pad>"])
    torch.manual_seed(seed)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


def write_jsonl(path, rows: list[str], key: str = "prompt"):
    path.write_text("".join(json.dumps({key: r, "id": i}) + "\n" for i, r in enumerate(rows)))
    return path


@pytest.fixture
def prompt_files(tmp_path):
    """Two 64-prompt JSONL files (the tasks of a stream)."""
    return write_jsonl(tmp_path / "ask_a.jsonl", prompts()), write_jsonl(tmp_path / "ask_b.jsonl", prompts(offset=3))
