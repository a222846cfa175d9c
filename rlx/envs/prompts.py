"""Your prompts, policy and reward for `algo=rlhf` / `algo=cppo` (`env=prompts`, docs/rlhf.md).

* **Prompts**: `read_prompts(path, key)` reads one text column of a local JSONL, CSV or Parquet
  file; a list of files is a stream of tasks, one per file (`PromptFileStream`, a
  `rlx.envs.batched.PromptStream`: the same driver as the built-in stream trains on it).
* **Policy**: `load_policy(spec)` -> (policy, tokenizer) for `hf:<dir>` (a local Hugging Face causal
  LM and its tokenizer, nothing downloaded) or `pkg.mod:factory` (a zero-argument callable
  returning (policy, tokenizer): the policy follows the `rlx.models.transformer` interface
  `model(idx [B, L], kv=None) -> (logits [B, L, V], values [B, L], kv)` and the tokenizer has
  `encode(text) -> list[int]`, `decode(ids) -> str`, `eos_id`, `pad_id`; a `transformers`
  model/tokenizer pair is wrapped as `HFCausalLM` / `HFTokenizer`).
* **Reward**: `load_reward(spec)` -> (callable, name) for `pkg.mod:func` (TRL's convention:
  `func(prompts: list[str], completions: list[str]) -> list[float]`) or `hf:<dir>` (a local
  sequence-classification reward model with one output, scoring prompt + completion).

Every bad value is one line (ConfigError / EnvError) raised before any work.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlx.core.checkpoint import rebuilder
from rlx.core.errors import ConfigError, EnvError, UnsafeFileError
from rlx.core.ranges import check_ranges, count
from rlx.envs.registry import import_object
from rlx.models.transformer import HFCausalLM, HFTokenizer, load_hf_causal_lm

__all__ = ["HFRewardModel", "PromptFileStream", "PromptsConfig", "check_prompt_run", "load_policy", "load_reward",
           "load_rewards", "read_prompts"]

SUFFIXES = (".jsonl", ".csv", ".parquet")
POLICY_FORMS = "hf:<dir> (a local Hugging Face causal LM) or pkg.module:factory (returns (policy, tokenizer))"
REWARD_FORMS = ("pkg.module:function (TRL's reward(prompts, completions) -> list[float]) or hf:<dir> "
                "(a local sequence-classification reward model)")
TOKENIZER_MEMBERS = ("encode", "decode", "eos_id", "pad_id")


@dataclass
class PromptsConfig:
    """`env.kwargs` of `env=prompts`."""

    response_len: int = count(32)  # longest completion in tokens (the eos token included)
    max_prompt_len: int = count(256)  # a longer prompt keeps its last max_prompt_len tokens


def prompt_files(value: Any) -> list[Path]:
    """`env.prompts` (a path or a list of paths) as a list of paths."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(p, (str, Path)) for p in items):
        raise EnvError(f"env.prompts={value!r}; give a file (env.prompts=prompts.jsonl) or a list of files "
                       "(env.prompts=[a.jsonl,b.jsonl])")
    return [Path(p).expanduser() for p in items]


def read_prompts(path: str | Path, key: str = "prompt") -> list[str]:
    """The `key` column of a local .jsonl / .csv / .parquet file as a list of strings."""
    path = Path(path).expanduser()
    where = f"env.prompts: {path}"
    if path.suffix not in SUFFIXES:
        raise EnvError(f"{where} is not a {', '.join(SUFFIXES)} file; give prompts as JSONL, CSV or Parquet")
    if not path.is_file():
        raise EnvError(f"{where} not found; give an existing {', '.join(SUFFIXES)} file of prompts")
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise EnvError(f"{where} line {i} is not JSON ({e.msg}); write one JSON object per line") from None
            if not isinstance(row, dict) or key not in row:
                keys = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise EnvError(f"{where} line {i} has no {key!r} (has {keys}); set env.prompt_key to the prompt's key")
            rows.append(row[key])
    elif path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is not None and key not in reader.fieldnames:
                raise EnvError(f"{where} has no column {key!r} (columns: {', '.join(reader.fieldnames)}); "
                               "set env.prompt_key to the prompt column")
            rows = [r[key] for r in reader]
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise EnvError(f"{where}: reading Parquet needs pyarrow (pip install pyarrow), or give JSONL/CSV") from None
        names = pq.read_schema(path).names
        if key not in names:
            raise EnvError(f"{where} has no column {key!r} (columns: {', '.join(names)}); set env.prompt_key to the prompt column")
        rows = pq.read_table(path, columns=[key]).column(key).to_pylist()
    if not rows:
        raise EnvError(f"{where} holds no prompts; give a file with at least one row")
    for i, r in enumerate(rows):
        if not isinstance(r, str) or not r:
            raise EnvError(f"{where} row {i + 1}: {key!r} is {r!r}, not a non-empty string")
    return rows


def _is_import_path(spec: str) -> bool:
    module, _, attr = spec.partition(":")
    return bool(module) and bool(attr) and all(part.isidentifier() for part in [*module.split("."), *attr.split(".")])


def _hf_dir(spec: str, what: str, forms: str) -> Path:
    path = Path(spec[3:]).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"{what}={spec!r}: {path} is not a saved Hugging Face model (no config.json); "
                          f"use {forms}")
    return path


def _check_spec(spec: Any, what: str, forms: str) -> None:
    """Cheap validation of a `hf:<dir>` / `pkg.mod:name` value (the folder exists, the name imports)."""
    if not isinstance(spec, str):
        raise ConfigError(f"{what}={spec!r}; use {forms}")
    if spec.startswith("hf:"):
        _hf_dir(spec, what, forms)
    elif _is_import_path(spec):
        try:
            obj = import_object(spec)
        except EnvError as e:
            raise ConfigError(f"{what}={spec!r}: {e}") from None
        if not callable(obj):
            raise ConfigError(f"{what}={spec!r} is a {type(obj).__name__}, not a callable; use {forms}")
    else:
        raise ConfigError(f"{what}={spec!r}; use {forms}")


@rebuilder
def policy_from_spec(spec: str) -> torch.nn.Module:
    """The policy of `load_policy(spec)`, as a learner file (a run's checkpoint, `learner.save`)
    records a user policy: `rlx.load` rebuilds it from the spec, then loads the trained weights.
    A `pkg.mod:factory` spec's module must already be imported (a file never imports user code)."""
    module = spec.split(":", 1)[0]
    if not spec.startswith("hf:") and module not in sys.modules:
        raise UnsafeFileError(f"the learner file's policy is {spec!r}, whose module {module} is not imported; rlx imports "
                              f"no user code from a file, so `import {module}` first if you trust it")
    return load_policy(spec)[0]


def load_policy(spec: str) -> tuple[torch.nn.Module, Any]:
    """(policy, tokenizer) of an `algo.policy` value: `hf:<dir>` or `pkg.mod:factory`. The policy
    records its spec (`rlx_rebuild`), so a learner built on it saves and loads (`rlx.load`)."""
    policy, tokenizer = _load_policy(spec)
    policy.rlx_rebuild = (f"{__name__}:policy_from_spec", (spec,))
    return policy, tokenizer


def _load_policy(spec: str) -> tuple[torch.nn.Module, Any]:
    _check_spec(spec, "algo.policy", POLICY_FORMS)
    if spec.startswith("hf:"):
        return load_hf_causal_lm(_hf_dir(spec, "algo.policy", POLICY_FORMS))
    out = import_object(spec)()
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ConfigError(f"algo.policy={spec!r} returned {type(out).__name__}; a factory returns (policy, tokenizer)")
    policy, tokenizer = out
    if hasattr(tokenizer, "pad_token_id") and hasattr(tokenizer, "eos_token_id"):  # a transformers tokenizer
        tokenizer = HFTokenizer(tokenizer)
    if hasattr(policy, "config") and hasattr(policy, "generate") and not isinstance(policy, HFCausalLM):
        policy = HFCausalLM(policy, tokenizer.pad_id)  # a transformers causal LM
    missing = [m for m in TOKENIZER_MEMBERS if not hasattr(tokenizer, m)]
    if not isinstance(policy, torch.nn.Module) or missing:
        problem = f"tokenizer lacks {', '.join(missing)}" if missing else f"policy is a {type(policy).__name__}, not a torch.nn.Module"
        raise ConfigError(f"algo.policy={spec!r}: the {problem}; see the interface in docs/rlhf.md")
    return policy, tokenizer


class HFRewardModel:
    """`hf:<dir>` reward: a local `AutoModelForSequenceClassification` with one output (num_labels=1)
    scoring `prompt + completion` (a space between them unless either side has one), in batches."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 32):
        from rlx.models.transformer import import_transformers

        transformers = import_transformers()
        kw = {"local_files_only": True, "trust_remote_code": False}
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), **kw)
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path), **kw)
        if self.model.config.num_labels != 1:
            raise ConfigError(f"algo.reward=hf:{path} has num_labels={self.model.config.num_labels}; a reward model has "
                              "one output (save it with num_labels=1)")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).requires_grad_(False).eval()
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        texts = [p + c if p[-1:].isspace() or c[:1].isspace() or not c else f"{p} {c}" for p, c in zip(prompts, completions)]
        scores: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i : i + self.batch_size], return_tensors="pt", padding=True, truncation=True)
            scores += self.model(**enc.to(self.device)).logits[:, 0].float().tolist()
        return scores


def load_reward(spec: str | Callable, device: str | torch.device = "cpu") -> tuple[Callable, str]:
    """(reward function, its name) of an `algo.reward` value, or a callable given from Python."""
    if callable(spec):
        return spec, getattr(spec, "__qualname__", type(spec).__name__)
    _check_spec(spec, "algo.reward", REWARD_FORMS)
    if spec.startswith("hf:"):
        return HFRewardModel(_hf_dir(spec, "algo.reward", REWARD_FORMS), device), spec
    return import_object(spec), spec


def load_rewards(specs: Sequence[str | Callable], device: str | torch.device = "cpu") -> tuple[list[Callable], list[str]]:
    """`load_reward` of each spec, a spec repeated (one reward for several tasks) loaded once."""
    loaded: dict[Any, tuple[Callable, str]] = {}
    for spec in specs:
        if spec not in loaded:
            loaded[spec] = load_reward(spec, device)
    return [loaded[s][0] for s in specs], [loaded[s][1] for s in specs]


def check_prompt_run(env, algo) -> tuple[PromptsConfig, list[list[str]], list[str]]:
    """Validate `env=prompts` with the algorithm's policy and reward before any work: the files
    read, the specs resolve, one reward or one per file. Returns (kwargs, prompts per task, reward specs)."""
    if algo.policy == "builtin":
        raise ConfigError("env=prompts needs your policy: algo.policy=" + POLICY_FORMS
                          + " (the built-in transformer knows only env=text_stream's words)")
    _check_spec(algo.policy, "algo.policy", POLICY_FORMS)
    rewards = list(algo.reward) if isinstance(algo.reward, (list, tuple)) else [algo.reward]
    if any(r in ("learned", "gold") for r in rewards):
        raise ConfigError(f"algo.reward={algo.reward!r} is a reward of env=text_stream; env=prompts scores completions "
                          f"with yours: algo.reward={REWARD_FORMS}")
    for r in rewards:
        _check_spec(r, "algo.reward", REWARD_FORMS)
    fields = set(PromptsConfig.__dataclass_fields__)
    unknown = sorted(set(env.kwargs) - fields)
    if unknown:
        raise ConfigError(f"unknown env.kwargs {unknown} for env=prompts; valid keys: {', '.join(sorted(fields))}")
    kwargs = PromptsConfig(**env.kwargs)
    try:
        check_ranges(kwargs, "env.kwargs")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    files = prompt_files(env.prompts)
    texts = [read_prompts(f, env.prompt_key) for f in files]
    if len(rewards) not in (1, len(files)):
        raise ConfigError(f"algo.reward lists {len(rewards)} rewards for {len(files)} prompt files; give one reward "
                          "or one per file, in the order of env.prompts")
    return kwargs, texts, rewards * len(files) if len(rewards) == 1 else rewards


class PromptFileStream:
    """Tasks 0..n-1 = prompt lists (one per file) scored by user rewards: a `PromptStream`.

    Prompts are tokenized once; a batch is left-padded with the tokenizer's `pad_id` to its
    longest prompt. `reward` decodes the completions (up to eos) and calls the task's reward
    with the original prompt strings; there is no hidden scorer, so `gold` is the same reward
    (`gold_is_reward`: the driver scores each batch once)."""

    gold_is_reward = True

    def __init__(self, tasks: Sequence[Sequence[str]], tokenizer, rewards: Sequence[Callable], names: Sequence[str],
                 response_len: int = 32, max_prompt_len: int = 256, reward_names: Sequence[str] | None = None):
        if not len(tasks) == len(rewards) == len(names):
            raise ValueError(f"{len(tasks)} prompt lists, {len(rewards)} rewards and {len(names)} names; give one of each per task")
        self.tokenizer, self.response_len, self.rewards = tokenizer, response_len, list(rewards)
        self.tasks = [{"name": n} for n in names]
        self.reward_names = list(reward_names or [getattr(r, "__qualname__", type(r).__name__) for r in rewards])
        self.pools, self.lengths, self.texts = [], [], []
        for j, prompts in enumerate(tasks):
            ids = [tokenizer.encode(p)[-max_prompt_len:] for p in prompts]
            empty = next((p for p, t in zip(prompts, ids) if not t), None)
            if empty is not None:
                raise EnvError(f"prompt {empty!r} of task {names[j]} encodes to no tokens; remove it")
            width = max(map(len, ids))
            self.pools.append(torch.tensor([[tokenizer.pad_id] * (width - len(t)) + t for t in ids]))
            self.lengths.append(torch.tensor([len(t) for t in ids]))
            self.texts.append({tuple(t): p for t, p in zip(ids, prompts)})
        self.prompt_len = max(pool.shape[1] for pool in self.pools)

    @classmethod
    def from_files(cls, files: Sequence[str | Path], tokenizer, rewards: Sequence[str | Callable], key: str = "prompt",
                   response_len: int = 32, max_prompt_len: int = 256, device: str | torch.device = "cpu") -> PromptFileStream:
        """The stream of `files` (one task each) with one reward per file (`pkg.mod:func`, `hf:<dir>`
        or a callable); a single reward serves every task."""
        funcs, names = load_rewards(list(rewards) * len(files) if len(rewards) == 1 else list(rewards), device)
        return cls([read_prompts(f, key) for f in files], tokenizer, funcs, [Path(f).stem for f in files],
                   response_len, max_prompt_len, names)

    @property
    def num_tasks(self) -> int:
        return len(self.pools)

    def prompts(self, task: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        idx = torch.randint(len(self.pools[task]), (n,), generator=generator)
        width = int(self.lengths[task][idx].max())
        return self.pools[task][idx, -width:]

    def prompt_text(self, row: torch.Tensor, task: int | None = None) -> str:
        """The original string of a (left-padded) prompt row, looked up in `task` first."""
        ids = row.tolist()
        start = next(i for i, t in enumerate(ids) if t != self.tokenizer.pad_id)
        key = tuple(ids[start:])
        order = self.texts if task is None else [self.texts[task], *self.texts]
        for texts in order:
            if key in texts:
                return texts[key]
        return self.tokenizer.decode(key)

    def reward(self, task: int, prompt: torch.Tensor, response: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        prompts = [self.prompt_text(row, task) for row in prompt]
        completions = [self.tokenizer.decode(r[m]) for r, m in zip(response, mask)]
        name = self.reward_names[task]
        scores = self.rewards[task](prompts, completions)
        try:
            out = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"reward {name} returned {type(scores).__name__}; it must return one float per completion") from None
        if out.numel() != len(completions) or not all(math.isfinite(v) for v in out.tolist()):
            raise ValueError(f"reward {name} returned {out.numel()} scores for {len(completions)} completions "
                             f"(non-finite: {int((~torch.isfinite(out)).sum())}); return one finite float per completion")
        return out

    gold = reward
