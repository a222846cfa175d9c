"""Continual training driver: train on tasks 1..n of a preference stream in order, evaluate every
task after every stage, report the matrix R[i, j] (gold reward on task j after stage i), the
average final reward, forgetting and KL to the reference, and plot them (PNG).

One plain `SamplerLoop` covers the whole stream (`ContinualRun` drives it by composition): its
budget is n x samples_per_task, the task of each rollout follows from the samples consumed, and
the loop's evaluation cadence is one task, so every evaluation is one row of R (checkpoints and
resume come from the shared loop).

Metrics (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018), with R[-1] = the SFT policy:
  average reward  = mean_j R[n-1, j]
  forgetting      = mean_{j < n-1} ( max_{j <= i < n-1} R[i, j] - R[n-1, j] )
  plasticity      = mean_j R[j, j]   (reward on each task right after learning it)
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from rlx.core.loops import SamplerLoop, TrainerConfig
from rlx.models.transformer import LMConfig, TransformerLM, response_logprobs

__all__ = ["ContinualRun", "check_stream", "stream_metrics", "train_on_stream"]


def stream_metrics(R: torch.Tensor) -> dict[str, float]:
    """Summary of an [n, n] matrix R[i, j] = reward on task j after stage i."""
    n = R.shape[0]
    final = R[-1]
    drops = [float(R[j:-1, j].max() - final[j]) for j in range(n - 1)]
    return {"final/avg_reward": float(final.mean()),
            "final/forgetting": float(sum(drops) / len(drops)) if drops else 0.0,
            "final/plasticity": float(torch.diagonal(R).mean())}


class ContinualRun:
    """A plain `SamplerLoop` (`self.loop`) over a stream of tasks, by composition: its `sample` is
    `learner.rollout` on the current task's prompts (`learner.start_task()` at each switch, the
    SFT policy evaluated before the first rollout), its `evaluate` adds one row of R, and the
    task, rows and SFT evaluation travel in the loop's checkpoint."""

    def __init__(self, learner, stream, samples_per_task: int, batch_size: int, cfg: TrainerConfig, logger=None,
                 seed: int = 0, reward: str = "learned", eval_samples: int = 128, label: str | None = None):
        self.stream, self.per_task, self.N, self.seed = stream, samples_per_task, batch_size, seed
        self.reward, self.eval_samples = reward, eval_samples
        self.task = 0
        self.rows: list[dict[str, float]] = []  # one evaluation per finished stage
        self.initial: dict[str, float] | None = None  # evaluation of the SFT policy
        cfg = dataclasses.replace(cfg, total_steps=stream.num_tasks * samples_per_task, eval_every=samples_per_task)
        self.loop = SamplerLoop(learner, self._sample, cfg, logger, self._evaluate_stage, seed,
                                label=label or type(learner).__name__, extra=self, postfix=self._postfix)

    @property
    def learner(self):
        return self.loop.learner

    def _postfix(self) -> dict[str, str]:
        return {"task": f"{self.task + 1}/{self.stream.num_tasks}"}

    def state_dict(self) -> dict[str, Any]:
        return {"task": self.task, "rows": self.rows, "initial": self.initial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task, self.rows, self.initial = state["task"], state["rows"], state["initial"]

    def score_fn(self, task: int):
        scorer = self.stream.reward if self.reward == "learned" else self.stream.gold
        return lambda p, r, m: scorer(task, p, r, m)

    def _sample(self):
        if self.initial is None:  # the SFT policy, before the first update (a resumed run has it)
            self.initial = self.evaluate_tasks()
        task = min(self.loop.steps // self.per_task, self.stream.num_tasks - 1)
        if task != self.task:
            self.task = task
            self.learner.start_task()
        generator = self.loop.generator
        prompt = self.stream.prompts(task, self.N, generator)
        batch = self.learner.rollout(prompt, self.score_fn(task), generator)
        resp, mask = batch["action"].transpose(0, 1).cpu(), batch["mask"].transpose(0, 1).cpu()  # [T, N] -> [N, T]
        gold = batch["score"][0] if getattr(self.stream, "gold_is_reward", False) else self.stream.gold(task, prompt, resp, mask)
        return batch, self.N, {"train/gold_mean": float(gold.mean()), "train/task": task}

    @torch.no_grad()
    def evaluate_tasks(self) -> dict[str, float]:
        """Gold and learned reward of every task on fixed prompts/seeds, and the KL to the reference."""
        g = torch.Generator().manual_seed(self.seed + 10_000)
        out: dict[str, float] = {}
        kls = []
        for j in range(self.stream.num_tasks):
            prompt = self.stream.prompts(j, self.eval_samples, g)
            gen = self.learner.act(prompt, generator=g)
            resp, mask = gen["action"].cpu(), gen["mask"].cpu()
            out[f"eval/task{j}_reward"] = float(self.stream.reward(j, prompt, resp, mask).mean())
            out[f"eval/task{j}_gold"] = (out[f"eval/task{j}_reward"] if getattr(self.stream, "gold_is_reward", False)
                                         else float(self.stream.gold(j, prompt, resp, mask).mean()))
            ref = response_logprobs(self.learner.ref, prompt.to(self.learner.device), gen["action"], self.learner.cfg.temperature)[0]
            kls.append(float(((gen["logp"] - ref) * gen["mask"]).sum(1).mean()))
        out["eval/gold_mean"] = sum(out[f"eval/task{j}_gold"] for j in range(self.stream.num_tasks)) / self.stream.num_tasks
        out["eval/kl_ref"] = sum(kls) / len(kls)
        return out

    def _evaluate_stage(self) -> dict[str, float]:
        metrics = self.evaluate_tasks()
        self.rows.append({**metrics, "eval/stage": len(self.rows)})
        return metrics

    def matrix(self, key: str = "gold") -> torch.Tensor:
        """R [stages, tasks] of `eval/task{j}_{key}`."""
        n = self.stream.num_tasks
        return torch.tensor([[row[f"eval/task{j}_{key}"] for j in range(n)] for row in self.rows])


def plot_stream(R: torch.Tensor, R_rm: torch.Tensor | None, initial: list[float], initial_rm: list[float], names: list[str],
                folder: Path, method: str = "", baseline: torch.Tensor | None = None) -> list[Path]:
    """R-matrix heatmap and per-task reward across stages (gold solid, learned dashed unless
    `R_rm` is None, and the sequential-PPO baseline's gold dotted when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    n = R.shape[1]
    fig, ax = plt.subplots(figsize=(1.6 * n + 2, 1.4 * n + 1.5))
    im = ax.imshow(R.numpy(), cmap="viridis")
    for i in range(R.shape[0]):
        for j in range(n):
            ax.text(j, i, f"{R[i, j]:.2f}", ha="center", va="center", color="w")
    ax.set_xticks(range(n), [f"task {j}\n{names[j]}" for j in range(n)])
    ax.set_yticks(range(R.shape[0]), [f"after stage {i}" for i in range(R.shape[0])])
    ax.set_xlabel("task evaluated (j)")
    ax.set_ylabel("training stage (i)")
    ax.set_title(f"{method}: gold reward R[i, j]".strip(": "))
    fig.colorbar(im, label="gold reward")
    fig.tight_layout()
    heat = folder / "r_matrix.png"
    fig.savefig(heat, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    x = list(range(R.shape[0] + 1))
    for j in range(n):
        line, = ax.plot(x, [initial[j], *R[:, j].tolist()], marker="o", label=f"task {j} ({names[j]}) gold, {method}")
        if R_rm is not None:
            ax.plot(x, [initial_rm[j], *R_rm[:, j].tolist()], ls="--", color=line.get_color(), alpha=0.6,
                    label=f"task {j} learned RM (std units)")
        if baseline is not None:
            ax.plot(x, [initial[j], *baseline[:, j].tolist()], ls=":", marker="x", color=line.get_color(),
                    label=f"task {j} gold, sequential PPO")
    ax.set_xticks(x, ["SFT", *[f"after stage {i}" for i in range(R.shape[0])]])
    ax.set_xlabel("training stage")
    ax.set_ylabel("reward on the task's prompts")
    ax.set_title(f"per-task reward across the stream ({method})")
    ax.legend(fontsize=6)
    fig.tight_layout()
    curves = folder / "task_rewards.png"
    fig.savefig(curves, dpi=120)
    plt.close(fig)
    return [heat, curves]


def check_stream(cfg, learner_cls):
    """Validate a run of `learner_cls` before minutes of building: on the built-in text stream its
    env.kwargs and algo settings (returns the StreamConfig), on `env=prompts` the files, policy
    and rewards (returns `rlx.envs.prompts.check_prompt_run`'s tuple). Raises ConfigError (one line)."""
    from rlx.core.errors import ConfigError
    from rlx.envs.text import StreamConfig, TextStream

    try:
        learner_cls.check_config(cfg.algo)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.env.prompts is not None or cfg.env.name == "prompts":
        from rlx.envs.prompts import check_prompt_run

        if cfg.env.prompts is None:
            raise ConfigError("env=prompts needs env.prompts=<file.jsonl|.csv|.parquet> or a list of files (one task each)")
        if cfg.env.name == "text_stream":
            raise ConfigError("env.prompts is read by env=prompts; add env=prompts to the command")
        return check_prompt_run(cfg.env, cfg.algo)
    a = cfg.algo
    if a.policy != "builtin" or a.reward not in ("learned", "gold"):
        key, value = ("policy", a.policy) if a.policy != "builtin" else ("reward", a.reward)
        raise ConfigError(f"algo.{key}={value!r} is for your prompts (env=prompts env.prompts=<file>); env=text_stream "
                          "trains its built-in transformer (algo.policy=builtin) on algo.reward=learned or gold")
    fields = {f.name for f in dataclasses.fields(StreamConfig)}
    unknown = sorted(set(cfg.env.kwargs) - fields)
    if unknown:
        raise ConfigError(f"unknown env.kwargs {unknown} for the text stream; valid keys: {', '.join(sorted(fields))}")
    try:
        stream_cfg = StreamConfig(**cfg.env.kwargs)
        TextStream(stream_cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return stream_cfg


def method_name(a) -> str:
    """How a run's method is called in its output: `CPPO (heuristic)`, `sequential PPO`, ..."""
    retention = getattr(a, "retention", "none")
    return {"none": "sequential PPO", "kl": "PPO + KL to pi_(t-1)", "l2": "PPO + L2 to theta_(t-1)"}.get(
        retention, f"CPPO ({retention})")


def _build(ctx, learner_cls, a, stream, make_policy, logger, label: str) -> ContinualRun:
    """A fresh learner from the initial (SFT) policy and its loop over the whole stream."""
    tok = stream.tokenizer
    learner = learner_cls(a, make_policy(), tok.eos_id, tok.pad_id, stream.response_len, device=ctx.device)
    per_task = math.ceil(a.samples_per_task / a.batch_size) * a.batch_size
    trainer = ctx.cfg.trainer if logger is ctx.logger else dataclasses.replace(ctx.cfg.trainer, checkpoint_every=0)
    return ContinualRun(learner, stream, per_task, a.batch_size, trainer, logger, ctx.cfg.seed, a.reward,
                        a.eval_samples, label=label)


def _builtin_setup(ctx, stream_cfg):
    """env=text_stream: the stream (built or cached) and a maker of its SFT transformer."""
    from rlx.envs.text import Tokenizer, load_stream

    a = ctx.cfg.algo
    lm_cfg = LMConfig(vocab_size=len(Tokenizer()), block_size=4 + stream_cfg.response_len, n_layer=a.n_layer,
                      n_head=a.n_head, d_model=a.d_model)
    stream = load_stream(stream_cfg, lm_cfg, verbose=True)
    for j, s in enumerate(stream.rm_stats):
        print(f"reward model task {j} ({stream.tasks[j]['name']}): held-out accuracy {s['accuracy']:.3f} on noisy labels "
              f"(label ceiling {s['label_agreement']:.3f}), {s['gold_accuracy']:.3f} against the gold scorer", flush=True)

    def make_policy():
        policy = TransformerLM(lm_cfg)
        policy.load_state_dict(stream.sft_state)
        return policy

    return stream, make_policy


def _prompt_setup(ctx, checked):
    """env=prompts: the user's prompt files as a stream, their rewards, and a maker of their policy
    (loaded once now; the sequential-PPO baseline reloads it without touching the RNG)."""
    from rlx.core.errors import ConfigError
    from rlx.envs.prompts import PromptFileStream, load_policy, load_rewards, prompt_files

    cfg, a = ctx.cfg, ctx.cfg.algo
    kwargs, texts, rewards = checked
    files = prompt_files(cfg.env.prompts)
    funcs, names = load_rewards(rewards, ctx.device)
    policy, tok = load_policy(a.policy)
    stream = PromptFileStream(texts, tok, funcs, [f.stem for f in files], kwargs.response_len, kwargs.max_prompt_len, names)
    limit = getattr(policy, "max_len", None) or getattr(getattr(policy, "cfg", None), "block_size", None)
    if limit is not None and stream.prompt_len + stream.response_len > limit:
        raise ConfigError(f"prompts of up to {stream.prompt_len} tokens plus env.kwargs.response_len={stream.response_len} "
                          f"exceed the policy's {limit} positions; lower env.kwargs.max_prompt_len or response_len")
    for j, f in enumerate(files):
        print(f"task {j} ({f.stem}): {len(texts[j])} prompts from {f}, reward {stream.reward_names[j]}", flush=True)
    first = [policy]

    def make_policy():
        if first:
            return first.pop()
        with torch.random.fork_rng():
            return load_policy(a.policy)[0]

    return stream, make_policy


def _matrix_lines(title: str, initial: dict[str, float], R: torch.Tensor, stream) -> list[str]:
    n = stream.num_tasks
    lines = [title + "".join(f"  task{j}:{stream.tasks[j]['name']:>10}" for j in range(n)),
             "  SFT (before training)".ljust(48) + "".join(f"{initial[f'eval/task{j}_gold']:>18.3f}" for j in range(n))]
    for i in range(n):
        lines.append(f"  after stage {i} ({stream.tasks[i]['name']})".ljust(48) + "".join(f"{float(R[i, j]):>18.3f}" for j in range(n)))
    return lines


def _summary_line(m: dict[str, float]) -> str:
    return (f"average final reward {m['final/avg_reward']:.3f}   forgetting {m['final/forgetting']:.3f}   "
            f"plasticity {m['final/plasticity']:.3f}   KL to reference {m['final/kl_ref']:.3f} nats")


def verdict(method: str, m: dict[str, float], base: dict[str, float]) -> str:
    """One line: did the method forget less than sequential PPO, and at what cost in learning."""
    df, dp = m["final/forgetting"] - base["final/forgetting"], m["final/plasticity"] - base["final/plasticity"]
    da = m["final/avg_reward"] - base["final/avg_reward"]
    forget = f"forgot {abs(df):.2f} {'less' if df < 0 else 'more'} than sequential PPO"
    learn = f"learned each task {abs(dp):.2f} {'worse' if dp < 0 else 'better'}"
    return (f"verdict: {method} {forget}, {learn} and ended {abs(da):.2f} {'higher' if da > 0 else 'lower'} on average "
            f"(one seed: the seed-to-seed spread is in the 5-seed front of docs/cppo.md)")


@torch.no_grad()
def sample_lines(stream, policies: dict[str, torch.nn.Module], temperature: float, per_task: int = 2,
                 seed: int = 0) -> list[str]:
    """`per_task` sampled answers per task from each policy (same prompts and sampling noise), with gold reward."""
    from rlx.models.transformer import generate

    tok, T = stream.tokenizer, stream.response_len
    width = max(len(name) for name in policies)
    what = "reward" if getattr(stream, "gold_is_reward", False) else "gold reward"
    lines = [f"sample generations (same prompt and sampling seed for every policy; [{what}])"]
    for j in range(stream.num_tasks):
        prompt = stream.prompts(j, per_task, torch.Generator().manual_seed(seed + 20_000 + j))
        lines.append(f"  task {j} ({stream.tasks[j]['name']})")
        outs = {}
        for name, model in policies.items():
            device = next(model.parameters()).device
            was_training = model.training
            model.eval()
            gen = generate(model, prompt.to(device), T, tok.eos_id, tok.pad_id, temperature=temperature,
                           generator=torch.Generator().manual_seed(seed + 30_000 + j))
            model.train(was_training)
            resp, mask = gen.tokens.cpu(), gen.mask.cpu()
            outs[name] = (resp, stream.gold(j, prompt, resp, mask))
        for i in range(per_task):
            lines.append(f"    prompt: {stream.prompt_text(prompt[i])}")
            for name, (resp, gold) in outs.items():
                lines.append(f"      {name:<{width}} [{float(gold[i]):+.2f}] {tok.decode(resp[i]) or '(empty)'}")
    return lines


def train_on_stream(ctx, learner_cls) -> dict:
    """Shared entry point of `algo=rlhf` / `algo=cppo` on `env=text_stream` or `env=prompts`: train, print R, and
    (`algo.compare_ppo`, CPPO and the KL/L2 baselines) the sequential-PPO run of the same seed
    and budget, trained in the same process from the same SFT policy and RNG seed."""
    from rlx.core.loops import rng_state, set_rng_state
    from rlx.envs.text import StreamConfig

    cfg, a = ctx.cfg, ctx.cfg.algo
    checked = check_stream(cfg, learner_cls)
    builtin = isinstance(checked, StreamConfig)
    stream, make_policy = _builtin_setup(ctx, checked) if builtin else _prompt_setup(ctx, checked)
    # a run on your prompts is labelled with its rewards' names
    tag = "" if builtin else f" [reward {', '.join(dict.fromkeys(stream.reward_names))}]"
    start_rng = rng_state()  # where the run's own policy and training start from
    method = method_name(a)
    run = _build(ctx, learner_cls, a, stream, make_policy, ctx.logger, method + tag)
    summary = ctx.run(run.loop)
    R, R_rm = run.matrix("gold"), run.matrix("reward")
    n = stream.num_tasks
    final = stream_metrics(R)
    final["final/kl_ref"] = run.rows[-1]["eval/kl_ref"]
    final.update({f"final/R_{i}_{j}": float(R[i, j]) for i in range(n) for j in range(n)})
    final.update({f"final/rm_accuracy_task{j}": s["accuracy"] for j, s in enumerate(getattr(stream, "rm_stats", []))})
    summary.update(final)
    what = "gold reward" if builtin else "reward"
    lines = _matrix_lines(f"{method}{tag}: R[i, j] = {what} on task j after stage i", run.initial, R, stream)
    lines.append(_summary_line(final))
    policies = {"SFT": run.learner.ref, method: run.learner.policy}
    baseline = None
    if getattr(a, "compare_ppo", False) and a.retention != "none":
        set_rng_state(start_rng)  # as the run started: exactly the figures of `algo.retention=none` with this seed
        ppo = _build(ctx, learner_cls, dataclasses.replace(a, retention="none"), stream, make_policy, None,
                     method_name(dataclasses.replace(a, retention="none")) + tag)
        ppo.loop.run()
        baseline = ppo.matrix("gold")
        base = stream_metrics(baseline)
        base["final/kl_ref"] = ppo.rows[-1]["eval/kl_ref"]
        summary.update({k.replace("final/", "final/ppo_"): v for k, v in base.items()})
        lines += ["", *_matrix_lines("sequential PPO, same seed and budget (trained in this run): R[i, j]", ppo.initial,
                                     baseline, stream), _summary_line(base), verdict(method, final, base)]
        policies["sequential PPO"] = ppo.learner.policy
    lines += ["", *sample_lines(stream, policies, a.temperature, seed=cfg.seed)]
    if ctx.run_dir is not None:
        names = [t["name"] for t in stream.tasks]
        init = [run.initial[f"eval/task{j}_gold"] for j in range(n)]
        init_rm = [run.initial[f"eval/task{j}_reward"] for j in range(n)]
        paths = plot_stream(R, None if getattr(stream, "gold_is_reward", False) else R_rm, init, init_rm, names,
                            ctx.run_dir / "plots", method + tag, baseline)
        lines.append("plots: " + "  ".join(str(p) for p in paths))
        ctx.logger.write_summary(summary)
    print("\n".join(lines), flush=True)
    return summary
