"""Sequence policies: a small causal transformer LM with a value head (nanoGPT-sized), KV-cached
sampling with temperature / top-k, per-token log-probabilities, and an adapter that gives a
Hugging Face `transformers` causal LM the same interface.

Interface shared by `TransformerLM` and `HFCausalLM` (and any policy of `algo.policy=pkg.mod:factory`):
`model(idx [B, L], kv=None) -> (logits [B, L, V], values [B, L], kv)`, where `kv` is the
cache to pass back with the next tokens (positions continue after the cached ones; any object,
or None when the model keeps no cache).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from rlx.core.checkpoint import Saveable


@dataclass
class LMConfig:
    """Shape of the built-in causal transformer."""

    vocab_size: int = 64  # number of token ids
    block_size: int = 32  # longest sequence (prompt + response) the position table covers
    n_layer: int = 2  # transformer blocks
    n_head: int = 2  # attention heads per block
    d_model: int = 64  # residual stream width (a multiple of n_head)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        if cfg.d_model % cfg.n_head:
            raise ValueError(f"d_model={cfg.d_model} must be a multiple of n_head={cfg.n_head}")
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None):
        B, L, C = x.shape
        # [B, L, 3C] -> 3 x [B, H, L, C/H]
        q, k, v = (t.view(B, L, self.n_head, C // self.n_head).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))
        past = 0 if kv is None else kv[0].shape[2]
        if kv is not None:
            k, v = torch.cat([kv[0], k], 2), torch.cat([kv[1], v], 2)  # [B, H, past + L, C/H]
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # new query i sits at absolute position past + i and sees keys 0..past + i
            keep = torch.arange(past + L, device=x.device)[None, :] <= (past + torch.arange(L, device=x.device))[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        y = y.transpose(1, 2).reshape(B, L, C)  # [B, H, L, C/H] -> [B, L, C]
        return self.proj(y), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(), nn.Linear(4 * cfg.d_model, cfg.d_model))

    def forward(self, x, kv):
        a, kv = self.attn(self.ln1(x), kv)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


class TransformerLM(Saveable, nn.Module):
    """GPT-style decoder (pre-LayerNorm, learned positions, tied input/output embeddings) with a
    scalar value head on the final hidden state of every position."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.block_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.value_head = nn.Linear(cfg.d_model, 1)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, kv: list | None = None):
        B, L = idx.shape
        past = 0 if kv is None else kv[0][0].shape[2]
        if past + L > self.cfg.block_size:
            raise ValueError(f"sequence of {past + L} tokens exceeds block_size={self.cfg.block_size}; raise lm.block_size")
        x = self.tok(idx) + self.pos(torch.arange(past, past + L, device=idx.device))  # [B, L, C]
        new_kv = []
        for i, block in enumerate(self.blocks):
            x, layer_kv = block(x, None if kv is None else kv[i])
            new_kv.append(layer_kv)
        h = self.ln_f(x)
        return h @ self.tok.weight.T, self.value_head(h).squeeze(-1), new_kv  # [B, L, V], [B, L]


class HFCausalLM(nn.Module):
    """A Hugging Face `transformers` causal LM behind the `TransformerLM` interface, plus a value
    head on its last hidden state. `HFCausalLM.from_config(dict)` builds a randomly initialised
    model (nothing is downloaded); `load_hf_causal_lm(dir)` loads a local one with its tokenizer;
    `HFCausalLM(model, pad_id)` wraps one you loaded yourself.

    Prompts of different lengths are left-padded with `pad_id`: the leading pads of each row are
    masked out of attention and the positions start at the first real token (a prompt must not
    begin with the pad token itself). The cache travels as `(transformers cache, attention mask)`;
    it is built only without gradients (sampling), not in the training forward passes."""

    def __init__(self, model: nn.Module, pad_id: int | None = None):
        super().__init__()
        self.model = model
        self.pad_id = pad_id
        self.value_head = nn.Linear(model.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        # transformers 5.x renamed `past_key_values` to `cache` (the old name is removed in 5.40)
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @classmethod
    def from_config(cls, config: dict, model_type: str = "gpt2", pad_id: int | None = None) -> HFCausalLM:
        transformers = import_transformers()
        cfg = transformers.AutoConfig.for_model(model_type, **config)
        return cls(transformers.AutoModelForCausalLM.from_config(cfg), pad_id)

    @property
    def max_len(self) -> int | None:
        """Longest sequence the model's positions cover (None: unknown or unlimited)."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def forward(self, idx: torch.Tensor, kv=None):
        B, L = idx.shape
        cache, seen = kv if kv is not None else (None, None)
        if seen is None:  # leading pads of a left-padded prompt are masked; everything after them is real
            new = (idx != self.pad_id).cummax(1).values if self.pad_id is not None else torch.ones_like(idx, dtype=torch.bool)
        else:
            new = torch.ones(B, L, dtype=torch.bool, device=idx.device)
        mask = new if seen is None else torch.cat([seen, new], 1)
        positions = (mask.long().cumsum(1) - 1).clamp_min(0)[:, -L:]
        use_cache = not torch.is_grad_enabled()
        out = self.model(input_ids=idx, attention_mask=mask.long(), position_ids=positions, use_cache=use_cache,
                         output_hidden_states=True, **{self._cache_arg: cache})
        new_cache = getattr(out, self._cache_arg, None) if use_cache else None
        values = self.value_head(out.hidden_states[-1]).squeeze(-1)
        return out.logits, values, (new_cache, mask) if use_cache else None


class HFTokenizer:
    """A Hugging Face tokenizer behind the interface of `rlx.envs.text.Tokenizer`: `encode(text)
    -> list[int]`, `decode(ids) -> str` (up to the first `eos_id`, pads dropped), `eos_id`,
    `pad_id` (the tokenizer's pad token, else its eos token, GPT-2's convention)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if self.pad_id is None:
            raise ValueError(f"the tokenizer {type(tokenizer).__name__} has neither a pad nor an eos token; "
                             "set tokenizer.pad_token (e.g. tokenizer.add_special_tokens({'pad_token': '<pad>'}))")

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, ids) -> str:
        return self.tokenizer.decode(until_eos(ids, self.eos_id, self.pad_id), skip_special_tokens=True)


def until_eos(ids, eos_id: int, pad_id: int) -> list[int]:
    """The token ids of a completion as text: those before the first eos, pads dropped."""
    out = []
    for i in (int(x) for x in ids):
        if i == eos_id:
            break
        if i != pad_id:
            out.append(i)
    return out


def import_transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("Hugging Face models need the optional dependency transformers: pip install 'rlx[text]'") from None
    return transformers


def load_hf_causal_lm(path: str | Path) -> tuple[HFCausalLM, HFTokenizer]:
    """A local causal LM and its tokenizer (`from_pretrained(path, local_files_only=True)`: nothing
    is downloaded, no code from the folder is run), wrapped as (`HFCausalLM`, `HFTokenizer`)."""
    transformers = import_transformers()
    kw = {"local_files_only": True, "trust_remote_code": False}
    tokenizer = HFTokenizer(transformers.AutoTokenizer.from_pretrained(str(path), **kw))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), **kw)
    return HFCausalLM(model, tokenizer.pad_id), tokenizer


@dataclass
class Generation:
    """Sampled responses, all `[B, T]`; positions after the end of a response hold `pad_id`
    and `mask=False`. `logp` is under the distribution sampled from (temperature, top-k)."""

    tokens: torch.Tensor
    logp: torch.Tensor
    value: torch.Tensor
    mask: torch.Tensor


def _sampling_logits(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    logits = logits.float() / max(temperature, 1e-8)
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


@torch.no_grad()
def generate(model: nn.Module, prompt: torch.Tensor, max_new_tokens: int, eos_id: int | None = None, pad_id: int = 0,
             temperature: float = 1.0, top_k: int = 0, generator: torch.Generator | None = None,
             use_cache: bool = True) -> Generation:
    """Sample up to `max_new_tokens` after `prompt [B, P]` (equal-length prompts). With the KV cache
    each step feeds only the newest token; without it the whole prefix is re-encoded (same result)."""
    B = prompt.shape[0]
    seq, kv = prompt, None
    alive = torch.ones(B, dtype=torch.bool, device=prompt.device)
    tokens, logps, values, masks = [], [], [], []
    feed = prompt
    for _ in range(max_new_tokens):
        logits, value, new_kv = model(feed if use_cache else seq, kv if use_cache else None)
        if use_cache:
            kv = new_kv
        logprobs = torch.log_softmax(_sampling_logits(logits[:, -1], temperature, top_k), -1)  # [B, V]
        u = torch.rand(B, 1, generator=generator, device="cpu" if generator is None else generator.device).to(prompt.device)
        tok = torch.searchsorted(logprobs.exp().cumsum(-1), u).clamp_max(logprobs.shape[-1] - 1).squeeze(-1)  # inverse CDF
        lp = logprobs.gather(-1, tok[:, None]).squeeze(-1)
        tokens.append(torch.where(alive, tok, pad_id))
        logps.append(torch.where(alive, lp, 0.0))
        values.append(torch.where(alive, value[:, -1].float(), 0.0))
        masks.append(alive.clone())
        if eos_id is not None:
            alive = alive & (tok != eos_id)
        feed = tokens[-1][:, None]
        seq = torch.cat([seq, feed], 1)
        if not alive.any():
            break
    pad = max_new_tokens - len(tokens)  # every sequence ended early: fill the fixed [B, T] shape
    stack = lambda xs, fill: F.pad(torch.stack(xs, 1), (0, pad), value=fill)  # noqa: E731
    return Generation(stack(tokens, pad_id), stack(logps, 0.0), stack(values, 0.0), stack(masks, False))


def response_logprobs(model: nn.Module, prompt: torch.Tensor, response: torch.Tensor, temperature: float = 1.0):
    """Log-probs [B, T] of `response` tokens given `prompt` and values [B, T] of the states they
    were sampled in: the logits at position P-1+t predict response token t."""
    P = prompt.shape[1]
    logits, values, _ = model(torch.cat([prompt, response], 1))  # [B, P+T, V]
    logits = logits[:, P - 1 : -1].float() / temperature  # [B, T, V]
    logp = torch.log_softmax(logits, -1).gather(-1, response[..., None]).squeeze(-1)
    return logp, values[:, P - 1 : -1], logits
