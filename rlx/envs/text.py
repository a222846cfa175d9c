"""The built-in continual preference stream: CPPO's setting (Zhang et al., ICLR 2024, sec. 4:
Reddit TL;DR split by domain into tasks) in miniature, generated locally and cached.

* A word-level **tokenizer** over a fixed vocabulary: prompts `<bos> domain item <sep>` from six
  domains; responses are words (domain nouns, sentiment, register, filler) ended by `<eos>`.
* A **stream of 3 tasks**, each with its own two domains and a hidden **gold scorer** whose style
  preferences differ and partly conflict (enthusiast: positive + casual; analyst: formal +
  concise; critic: negative + detailed). All reward on-topic, non-repetitive answers. Style
  words are shared by every domain, so learning one task's style moves the others: forgetting.
* A **pretraining corpus** (domain-conditional unigram responses) and the **SFT policy**
  (`rlx.models.transformer.TransformerLM`) trained on it by maximum likelihood.
* **Pairwise preferences** per task: response pairs (10% with a degenerate 0-1 word answer)
  labelled by the gold scorer through a Bradley-Terry draw plus a flip with probability
  `label_noise`, and one **reward model** (`rlx.models.reward_models.BagRewardModel`) per
  task trained with the Bradley-Terry loss; held-out pair accuracy is reported. Both fits go
  through `rlx.core.fit.fit` (fused Adam; AdamW with a linear decay for the SFT policy).

Everything is rebuilt deterministically from `StreamConfig` when missing and cached in
`$RLX_CACHE/text_stream/<hash>/` (default `~/.cache/rlx`), written atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from rlx.core.checkpoint import atomic_write, safe_load
from rlx.core.fit import fit
from rlx.core.logging import Progress
from rlx.models.reward_models import BagRewardModel
from rlx.models.transformer import LMConfig, TransformerLM, until_eos

SPECIALS = ["<pad>", "<bos>", "<sep>", "<eos>"]
DOMAINS = {  # domain -> (prompt items, on-topic nouns)
    "movie": (["film", "series", "trailer"], ["plot", "actors", "scenes", "ending"]),
    "music": (["album", "concert", "song"], ["melody", "vocals", "rhythm", "lyrics"]),
    "tech": (["phone", "laptop", "app"], ["battery", "screen", "speed", "software"]),
    "travel": (["hotel", "flight", "city"], ["room", "staff", "views", "location"]),
    "food": (["restaurant", "pizza", "cafe"], ["taste", "menu", "service", "price"]),
    "sports": (["match", "team", "race"], ["players", "coach", "defense", "goals"]),
}
STYLE = {
    "pos": ["great", "lovely", "excellent", "fun", "amazing"],
    "neg": ["boring", "awful", "bad", "dull", "terrible"],
    "formal": ["therefore", "indeed", "overall", "notably"],
    "casual": ["lol", "totally", "super", "kinda"],
    "filler": ["the", "is", "was", "and", "very", "it"],
}
# A task's gold score = relevance + repetition penalty + sum_f weight_f * (count_f / length) + length term.
TASKS = [
    {"name": "enthusiast", "domains": ["movie", "music"], "style": {"pos": 2.0, "neg": -2.0, "casual": 1.0, "formal": -1.0},
     "length": ("none", 0)},
    {"name": "analyst", "domains": ["tech", "travel"], "style": {"formal": 2.0, "casual": -2.0}, "length": ("max", 4)},
    {"name": "critic", "domains": ["food", "sports"], "style": {"neg": 2.0, "pos": -2.0}, "length": ("min", 8)},
]
CORPUS_MIX = {"noun": 0.30, "off_noun": 0.05, "pos": 0.12, "neg": 0.12, "formal": 0.08, "casual": 0.08, "filler": 0.25}


class Tokenizer:
    """Word-level tokenizer of the built-in task (ids 0..3 are `<pad> <bos> <sep> <eos>`)."""

    def __init__(self):
        words = list(SPECIALS) + list(DOMAINS)
        for items, nouns in DOMAINS.values():
            words += items + nouns
        for group in STYLE.values():
            words += group
        self.words = words
        self.ids = {w: i for i, w in enumerate(words)}
        self.pad_id, self.bos_id, self.sep_id, self.eos_id = range(4)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        unknown = [w for w in text.split() if w not in self.ids]
        if unknown:
            raise ValueError(f"unknown words {unknown[:5]} for the text_stream tokenizer; valid words: {' '.join(self.words[4:])}")
        return [self.ids[w] for w in text.split()]

    def decode(self, ids) -> str:
        return " ".join(self.words[i] for i in until_eos(ids, self.eos_id, self.pad_id))


@dataclass
class StreamConfig:
    """Sizes of the generated data and models (the cache key); `env.kwargs` of `env=text_stream`."""

    num_tasks: int = 3  # tasks in the stream (1..3), in order enthusiast, analyst, critic
    response_len: int = 10  # longest response in tokens (`<eos>` included)
    corpus_size: int = 4000  # pretraining sequences
    sft_steps: int = 400  # maximum-likelihood steps of the SFT policy
    pairs_per_task: int = 2000  # labelled preference pairs per task (20% held out)
    label_noise: float = 0.1  # probability that a preference label is flipped
    bt_temperature: float = 0.25  # labels are Bernoulli(sigmoid((gold_a - gold_b) / T)) before the flip
    rm_steps: int = 400  # Bradley-Terry steps per reward model
    seed: int = 0  # seed of all generated data and models
    cache_dir: str | None = None  # None: $RLX_CACHE or ~/.cache/rlx


def _features(tok: Tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """[V, 5] style indicator table (pos, neg, formal, casual, content) and [V] domain of each noun (-1 if none)."""
    table = torch.zeros(len(tok), 5)
    noun_domain = torch.full((len(tok),), -1)
    for j, name in enumerate(["pos", "neg", "formal", "casual"]):
        for w in STYLE[name]:
            table[tok.ids[w], j] = 1
    table[4:, 4] = 1
    for d, (_, nouns) in enumerate(DOMAINS.values()):
        for w in nouns:
            noun_domain[tok.ids[w]] = d
    return table, noun_domain


class TextStream:
    """The stream: tokenizer, task prompts, gold scorers, SFT weights and reward models."""

    def __init__(self, cfg: StreamConfig, sft_state: dict | None = None, reward_models: list[nn.Module] | None = None,
                 rm_stats: list[dict] | None = None):
        if not 1 <= cfg.num_tasks <= len(TASKS):
            raise ValueError(f"num_tasks={cfg.num_tasks}; the built-in stream has 1 to {len(TASKS)} tasks")
        self.cfg, self.tokenizer = cfg, Tokenizer()
        self.tasks = TASKS[: cfg.num_tasks]
        self.table, self.noun_domain = _features(self.tokenizer)
        self.sft_state, self.reward_models, self.rm_stats = sft_state, reward_models or [], rm_stats or []
        self.prompt_len = 4

    gold_is_reward = False  # the learned reward models differ from the hidden gold scorer

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def response_len(self) -> int:
        return self.cfg.response_len

    def prompt_text(self, row: torch.Tensor) -> str:
        """`domain item` of a prompt row `<bos> domain item <sep>`."""
        return self.tokenizer.decode(row[1:-1])

    def all_prompts(self, task: int) -> torch.Tensor:
        """Every prompt of a task [n, 4]: `<bos> domain item <sep>`."""
        t = self.tokenizer
        rows = [[t.bos_id, t.ids[d], t.ids[item], t.sep_id] for d in self.tasks[task]["domains"] for item in DOMAINS[d][0]]
        return torch.tensor(rows)

    def prompts(self, task: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        pool = self.all_prompts(task)
        return pool[torch.randint(len(pool), (n,), generator=generator)]

    def gold(self, task: int, prompt: torch.Tensor, response: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden scorer [B] of task `task` for responses [B, T] (valid where `mask`, `<eos>` counted as valid)."""
        spec = self.tasks[task]
        eos = response == self.tokenizer.eos_id
        words = mask & ~eos
        n = words.sum(1).float()  # [B] content length
        feats = self.table[response] * words[..., None]  # [B, T, 5]
        frac = feats.sum(1) / n.clamp_min(1)[:, None]  # [B, 5]
        domain = torch.tensor([list(DOMAINS).index(self.tokenizer.words[int(d)]) for d in prompt[:, 1]])
        nd = self.noun_domain[response]  # [B, T]
        on = ((nd == domain[:, None]) & words).sum(1)
        off = ((nd >= 0) & (nd != domain[:, None]) & words).sum(1)
        relevance = (on.clamp_max(3) - 2 * off).float() / 3  # up to three distinct-ish on-topic nouns count
        one_hot = F.one_hot(response, len(self.tokenizer)) * words[..., None]  # [B, T, V]
        distinct = (one_hot.sum(1) > 0).sum(1).float()
        repetition = distinct / n.clamp_min(1) - 1  # 0 when every word is different
        style = sum(w * frac[:, ["pos", "neg", "formal", "casual"].index(k)] for k, w in spec["style"].items())
        kind, target = spec["length"]
        length = {"none": torch.zeros_like(n), "max": -0.25 * (n - target).clamp_min(0),
                  "min": -0.25 * (target - n).clamp_min(0)}[kind]
        score = relevance + 2 * repetition + style + length
        return torch.where(n > 0, score, torch.full_like(score, -3.0))

    def reward(self, task: int, prompt: torch.Tensor, response: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Learned reward of task `task` [B], standardised by its mean/std on SFT-corpus responses."""
        if not self.reward_models:
            raise RuntimeError("this TextStream has no reward models; build it with load_stream()")
        s = self.rm_stats[task]
        with torch.no_grad():
            return (self.reward_models[task](prompt, response, mask) - s["mean"]) / s["std"]

    # ---------------------------------------------------------------- generated data
    def corpus(self, n: int, generator: torch.Generator, domains: list[str] | None = None):
        """n (prompt [n, 4], response [n, T], mask [n, T]) pairs from the pretraining distribution."""
        t, T = self.tokenizer, self.cfg.response_len
        names = domains or list(DOMAINS)
        pool = torch.tensor([[t.bos_id, t.ids[d], t.ids[i], t.sep_id] for d in names for i in DOMAINS[d][0]])
        prompt = pool[torch.randint(len(pool), (n,), generator=generator)]
        groups = list(CORPUS_MIX)
        probs = torch.tensor([CORPUS_MIX[g] for g in groups])
        kinds = torch.multinomial(probs, n * (T - 1), replacement=True, generator=generator).view(n, T - 1)
        domain_idx = torch.tensor([list(DOMAINS).index(t.words[int(d)]) for d in prompt[:, 1]])
        nouns = torch.tensor([[t.ids[w] for w in ns] for _, ns in DOMAINS.values()])  # [6, 4]
        pick = lambda k, size: torch.randint(k, size, generator=generator)  # noqa: E731
        off_domain = (domain_idx[:, None] + 1 + pick(len(DOMAINS) - 1, (n, T - 1))) % len(DOMAINS)
        choices = {
            "noun": nouns[domain_idx[:, None].expand(n, T - 1), pick(4, (n, T - 1))],
            "off_noun": nouns[off_domain, pick(4, (n, T - 1))],
            **{g: torch.tensor([t.ids[w] for w in STYLE[g]])[pick(len(STYLE[g]), (n, T - 1))] for g in STYLE},
        }
        words = torch.zeros(n, T - 1, dtype=torch.long)
        for j, g in enumerate(groups):
            words = torch.where(kinds == j, choices[g], words)
        length = torch.randint(2, T, (n,), generator=generator)  # content words, then <eos>
        steps = torch.arange(T)[None, :]
        response = torch.where(steps < length[:, None], F.pad(words, (0, 1)), t.pad_id)
        response[torch.arange(n), length] = t.eos_id
        return prompt, response, steps <= length[:, None]


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r(y_w) - r(y_l)) (Bradley & Terry 1952; Ouyang et al. 2022 eq. 1)."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def _train_reward_model(stream: TextStream, task: int, g: torch.Generator, tick=lambda: None) -> tuple[nn.Module, dict]:
    cfg = stream.cfg
    n = cfg.pairs_per_task
    a = stream.corpus(n, g, stream.tasks[task]["domains"])
    b_resp = stream.corpus(n, g, stream.tasks[task]["domains"])
    # 10% of the second answers are cut to 0-1 words: degenerate answers a policy can drift to
    # (an RM that never saw them extrapolates arbitrarily there and PPO exploits it)
    cut = torch.rand(n, generator=g) < 0.1
    keep = torch.randint(0, 2, (n,), generator=g)
    steps = torch.arange(cfg.response_len)[None, :]
    eos = stream.tokenizer.eos_id
    cut_resp = torch.where(steps < keep[:, None], b_resp[1], stream.tokenizer.pad_id)
    cut_resp[torch.arange(n), keep] = eos
    b_tokens = torch.where(cut[:, None], cut_resp, b_resp[1])
    b_mask = torch.where(cut[:, None], steps <= keep[:, None], b_resp[2])
    b = (a[0], b_tokens, b_mask)  # the same prompt answered twice
    ga, gb = stream.gold(task, *a), stream.gold(task, *b)
    prefer_a = torch.rand(n, generator=g) < torch.sigmoid((ga - gb) / cfg.bt_temperature)
    prefer_a ^= torch.rand(n, generator=g) < cfg.label_noise
    n_train = int(0.8 * n)
    with torch.random.fork_rng():  # initialise from the stream's seed, not the global RNG
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))
        model = BagRewardModel(len(stream.tokenizer), cfg.response_len)

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.randint(n_train, (128,), generator=g)
        ra, rb = model(a[0][idx], a[1][idx], a[2][idx]), model(b[0][idx], b[1][idx], b[2][idx])
        sign = prefer_a[idx].float() * 2 - 1
        return bradley_terry_loss(sign * ra, sign * rb)

    fit(model, loss_fn, cfg.rm_steps, lr=3e-3, callback=lambda step, loss: tick())
    model.requires_grad_(False).eval()
    test = slice(n_train, n)
    ra, rb = model(a[0][test], a[1][test], a[2][test]), model(b[0][test], b[1][test], b[2][test])
    scores = torch.cat([ra, rb])
    stats = {"mean": float(scores.mean()), "std": float(scores.std().clamp_min(1e-6)),
             "accuracy": float(((ra > rb) == prefer_a[test]).float().mean()),  # against the noisy labels
             "gold_accuracy": float(((ra > rb) == (ga[test] > gb[test])).float().mean()),  # against the hidden scorer
             "label_agreement": float((prefer_a[test] == (ga[test] > gb[test])).float().mean())}  # ceiling of `accuracy`
    return model, stats


def _pretrain(stream: TextStream, lm_cfg: LMConfig, g: torch.Generator, tick=lambda: None) -> dict:
    """Maximum likelihood on the corpus responses (prompt tokens are context, not targets)."""
    prompt, response, mask = stream.corpus(stream.cfg.corpus_size, g)
    with torch.random.fork_rng():  # initialise from the stream's seed, not the global RNG
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))
        model = TransformerLM(lm_cfg)
    P = prompt.shape[1]

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.randint(len(prompt), (128,), generator=g)
        seq = torch.cat([prompt[idx], response[idx]], 1)
        logits, _, _ = model(seq[:, :-1])
        target = seq[:, P:]  # [B, T] predicted from positions P-1 .. P+T-2
        loss = F.cross_entropy(logits[:, P - 1 :].reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
        return (loss * mask[idx].reshape(-1)).sum() / mask[idx].sum()

    fit(model, loss_fn, stream.cfg.sft_steps, lr=3e-3, weight_decay=0.01, schedule="linear",
        callback=lambda step, loss: tick())
    return model.state_dict()


def cache_root(cfg: StreamConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("RLX_CACHE") or Path.home() / ".cache" / "rlx") / "text_stream"


def _save(path: Path, obj) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def cache_paths(cfg: StreamConfig, lm_cfg: LMConfig) -> tuple[Path, Path]:
    """Where the stream's reward models and the SFT weights for `lm_cfg` are cached."""
    data_key = {k: v for k, v in asdict(cfg).items() if k not in ("cache_dir", "num_tasks")}
    digest = lambda d: hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]  # noqa: E731
    folder = cache_root(cfg) / digest({"data": data_key, "version": 2})
    return folder / "reward_models.pt", folder / f"sft-{digest(asdict(lm_cfg))}.pt"


def _took(what: str, clock: tuple[float, float], verbose: bool) -> None:
    if verbose:  # the phase timings of a first run (the cache is built once)
        print(f"{what} in {time.perf_counter() - clock[0]:.1f} s ({time.process_time() - clock[1]:.1f} s CPU)", flush=True)


def load_stream(cfg: StreamConfig | None = None, lm_cfg: LMConfig | None = None, verbose: bool = False) -> TextStream:
    """The stream with its SFT weights (for `lm_cfg`) and reward models, from the cache or built."""
    cfg = cfg or StreamConfig()
    stream = TextStream(cfg)
    lm_cfg = lm_cfg or LMConfig(vocab_size=len(stream.tokenizer))
    if lm_cfg.vocab_size < len(stream.tokenizer) or lm_cfg.block_size < stream.prompt_len + cfg.response_len:
        raise ValueError(f"the policy needs vocab_size >= {len(stream.tokenizer)} and block_size >= "
                         f"{stream.prompt_len + cfg.response_len}; got {lm_cfg}")
    rm_path, sft_path = cache_paths(cfg, lm_cfg)
    folder = rm_path.parent
    if rm_path.is_file():
        saved = safe_load(rm_path)
    else:
        clock = time.perf_counter(), time.process_time()
        if verbose:
            print(f"building the text_stream reward models in {folder} ...", flush=True)
        g = torch.Generator().manual_seed(cfg.seed)
        every_task = TextStream(replace(cfg, num_tasks=len(TASKS)))  # the cache holds all of them (its key omits num_tasks)
        models = []
        for j in range(len(TASKS)):
            bar = Progress(cfg.rm_steps, f"reward model {j} ({TASKS[j]['name']})", verbose)
            models.append(_train_reward_model(every_task, j, g, lambda bar=bar: bar.update(1)))
            bar.close()
        saved = {"states": [m.state_dict() for m, _ in models], "stats": [s for _, s in models]}
        _save(rm_path, saved)
        _took("built the reward models", clock, verbose)
    if sft_path.is_file():
        sft_state = safe_load(sft_path)
    else:
        clock = time.perf_counter(), time.process_time()
        if verbose:
            print(f"pretraining the SFT policy in {folder} ...", flush=True)
        bar = Progress(cfg.sft_steps, "SFT policy", verbose)
        sft_state = _pretrain(stream, lm_cfg, torch.Generator().manual_seed(cfg.seed + 1), lambda: bar.update(1))
        bar.close()
        _save(sft_path, sft_state)
        _took("pretrained the SFT policy", clock, verbose)
    rms = []
    for state in saved["states"][: cfg.num_tasks]:
        rm = BagRewardModel(len(stream.tokenizer), cfg.response_len)
        rm.load_state_dict(state)
        rms.append(rm.requires_grad_(False).eval())
    stream.sft_state, stream.reward_models, stream.rm_stats = sft_state, rms, saved["stats"][: cfg.num_tasks]
    return stream
