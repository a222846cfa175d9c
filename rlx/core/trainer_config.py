"""The `trainer.*` group: `TrainerConfig`, in its own module so that the CLI reads it (for
`--help` and config errors) without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from rlx.core.ranges import count, nonneg, one_of, some_of

LOGGERS = ("jsonl", "tensorboard", "wandb", "mlflow")  # trainer.loggers choices; jsonl is always on


@dataclass
class TrainerConfig:
    """How long to train, how often to evaluate, log and checkpoint, where runs go."""

    total_steps: int = count(100_000)  # budget in the loop's unit: env steps (on-policy), gradient steps (offline), samples (sampler)
    eval_every: int = nonneg(10_000)  # evaluate every this many units (0: only at the end)
    eval_episodes: int = count(10)  # deterministic evaluation episodes
    log_every: int = count(1)  # log training metrics every this many iterations
    # save a checkpoint every this many iterations; None: the loop's default (50 on-policy / sampler
    # iterations, 5,000 offline gradient steps); 0: only at the end and on Ctrl-C
    checkpoint_every: int | None = nonneg(None)
    root: str = "runs"  # parent of run directories: <root>/<algo>/<env>/<time>-s<seed>/
    run_dir: str | None = None  # write into exactly this directory instead
    resume: str | None = None  # a run directory to continue from its checkpoints/last.pt
    progress: bool = True  # show a progress bar on a terminal
    tensorboard: bool = True  # write TensorBoard events when `loggers` has tensorboard (false: never)
    # where metrics go besides metrics.jsonl (always written): tensorboard, wandb, mlflow (rlx.core.logging)
    loggers: list[str] = some_of(lambda: ["jsonl", "tensorboard"], LOGGERS)
    device: str = "cpu"  # torch device for learners (cpu, cuda, cuda:1, auto)
    threads: int = nonneg(1)  # torch CPU threads (1: rlx's small models run fastest on one; 0: torch's default, OMP_NUM_THREADS)
    # CPU: flush subnormal floats to zero during the run (x86 FTZ/DAZ): dead units' Adam moments
    # otherwise decay through the subnormal range, where CPU arithmetic is slow (rlx.core.loops.flush_denormal)
    flush_denormal: bool = True
    deterministic: bool = False  # torch.use_deterministic_algorithms (CPU runs are reproducible without it)
    distributed: str = one_of("none", ("none", "ddp"))  # none | ddp (data-parallel ranks started by torchrun; see rlx.core.distributed)
    # a NaN/inf loss, gradient norm or parameter: stop (exit code 3, last good checkpoint kept) or
    # warn once and go on (checkpoints with non-finite parameters are still never written)
    on_nonfinite: str = one_of("stop", ("stop", "warn"))
