"""`<run>/samples.jsonl`, the record of every molecule a trajectory sampler drew in training
(`algo.record_samples=true` on `algo=gflownet`, `sampler_ppo`, `sampler_random`), and its reader.
Both `rlx.algos.gflownet.run_sampler` and the baselines of `rlx.algos.sampler_baselines` use it."""

from __future__ import annotations

import json
import time
from pathlib import Path

__all__ = ["SampleLog", "read_samples"]


class SampleLog:
    """`<run>/samples.jsonl`: one line per sampled batch, `{"samples": total so far, "seconds": since the
    run started, "smiles": [...], "reward": [...]}`. A resumed run keeps the lines up to its checkpoint
    (the loop's sample count) and continues the clock from there, so the file never repeats a batch."""

    def __init__(self, run_dir: str | Path, resume_samples: int = 0):
        self.path = Path(run_dir) / "samples.jsonl"
        kept = []
        if resume_samples and self.path.is_file():
            kept = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["samples"] <= resume_samples]
        self.count = json.loads(kept[-1])["samples"] if kept else 0
        offset = json.loads(kept[-1])["seconds"] if kept else 0.0
        self.path.write_text("".join(ln + "\n" for ln in kept))
        self.t0 = time.perf_counter() - offset

    @classmethod
    def for_run(cls, ctx, env) -> SampleLog | None:
        """The run's log when `algo.record_samples` is on and this process writes the run dir."""
        if not ctx.cfg.algo.record_samples or ctx.run_dir is None:
            return None
        if not hasattr(env, "smiles"):
            from rlx.envs.registry import EnvError

            raise EnvError(f"algo.record_samples records molecules; {type(env).__name__} is not a molecule env")
        resume = 0
        if ctx.resume_from is not None:
            from rlx.core.checkpoint import load_checkpoint

            resume = load_checkpoint(ctx.resume_from)["loop"]["steps"]
        return cls(ctx.run_dir, resume)

    def add(self, smiles: list[str], rewards: list[float]) -> None:
        self.count += len(smiles)
        row = {"samples": self.count, "seconds": round(time.perf_counter() - self.t0, 3), "smiles": smiles,
               "reward": rewards}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def read_samples(run_dir: str | Path) -> tuple[list[str], list[float], list[tuple[int, float]]]:
    """Molecules and rewards of a run's samples.jsonl in sampling order, and (samples, seconds) per batch."""
    smiles, rewards, clock = [], [], []
    for line in (Path(run_dir) / "samples.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            smiles += row["smiles"]
            rewards += row["reward"]
            clock.append((row["samples"], row["seconds"]))
    return smiles, rewards, clock
