"""`python -m rlx.train algo=<name> env=<preset|gym id> seed=<n> [group.key=value ...]`

Configuration is Hydra with structured (dataclass) configs: every algorithm's dataclass
is the schema of `algo.*`, so misspelt keys, unknown choices and wrong types are caught
before any work starts and reported in one line that names the valid choices.
`-m` / `--multirun` expands comma-separated values into a grid and runs it through
`rlx.sweep` when that module is present.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlx.algos.registry import CONFIG_DIR, algorithm, catalog, registered_name
from rlx.core.errors import SETTING_ERRORS, ConfigError, DivergenceError, EnvFailure, RunFailure, RunLocked, UnsafeFileError
from rlx.core.ranges import nonneg
from rlx.core.trainer_config import TrainerConfig
from rlx.envs.registry import EnvConfig
from rlx.envs.rewards import RewardConfig

# torch, the loops and the algorithm modules are imported where a run needs them: `--help` and a
# config error are answered from the config dataclasses and the algorithms' source (catalog())

# OpenMP threads that wait for each other sleep instead of spinning. Set before torch loads (it
# is read once, when the OpenMP runtime starts): on a busy machine a torch op split over 2 threads
# otherwise spins while the other thread is descheduled; one SFT fit of the main job took 47 s of
# CPU and 208 s wall with 2 spinning threads against 3.8 s / 16 s passive (BENCHMARKS.md, "Threads").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if TYPE_CHECKING:
    import torch

    from rlx.core.logging import RunLogger
    from rlx.core.loops import Loop
GROUPS = {"env": EnvConfig, "trainer": TrainerConfig, "reward": RewardConfig}


@dataclass
class RunConfig:
    """The whole resolved configuration of one run."""

    algorithm: str = "ppo"  # the `algo=` choice (an algorithm or a rlx/configs/algo preset); set by compose_config
    algo: Any = None  # the selected algorithm's config dataclass
    env: EnvConfig = field(default_factory=EnvConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    seed: int = nonneg(0)  # seeds python, numpy, torch and the envs


# ---------------------------------------------------------------------------- config store


def _register_schemas(algo_name: str) -> None:
    """Hydra's schemas: the run, the groups and the chosen algorithm (only its module is imported)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="rlx_base", node=RunConfig)
    cs.store(group="algo", name=algo_name, node=algorithm(algo_name).config)
    cs.store(group="env", name="gym", node=EnvConfig)
    cs.store(group="trainer", name="default", node=TrainerConfig)
    cs.store(group="reward", name="original", node=RewardConfig)


def group_options(group: str) -> list[str]:
    """Choices for a config group: registered schemas plus YAML presets in rlx/configs/<group>/."""
    names = set(catalog()) if group == "algo" else {"env": {"gym"}, "trainer": {"default"}, "reward": {"original"}}[group]
    folder = CONFIG_DIR / group
    if folder.is_dir():
        names |= {p.stem for p in folder.glob("*.yaml")}
    return sorted(names)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def normalize_overrides(overrides: list[str]) -> list[str]:
    """Check group choices and keys; turn `env=<gymnasium id>` into `env=gym env.id=<id>`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:
        raise ConfigError(f"cannot parse overrides {overrides}: {' '.join(str(e).split())}") from None
    out: list[str] = []
    algo_name = choice = "ppo"
    for ov, text in zip(parsed, overrides):
        key = ov.key_or_group.lstrip("+~")
        if key in ("algo", "env", "trainer", "reward") and not ov.is_sweep_override():
            value = str(ov.value())
            options = group_options(key)
            if key == "env" and value not in options:
                import gymnasium as gym

                import rlx.envs  # noqa: F401  (registers rlx/ envs)

                if value in gym.registry:
                    out += ["env=gym", f"env.id={value}", f"env.name={value.replace('/', '_')}"]
                    continue
            if value not in options:
                raise ConfigError(f"unknown {key} {value!r}{_suggest(value, options)}; valid choices: {', '.join(options)}"
                                  + ("; or any registered gymnasium id" if key == "env" else ""))
            if key == "algo":
                algo_name, choice = registered_name(value), value
        out.append(text)
    keys = {ov.key_or_group.lstrip("+~") for ov in parsed}
    if "env.entry_point" in keys and "env.name" not in keys:  # file the run under the env it runs
        entry = next(str(ov.value()) for ov in parsed if ov.key_or_group.lstrip("+~") == "env.entry_point")
        out.append(f"env.name={_override_value(entry.replace(':', '.').rsplit('.', 1)[-1] or 'custom')}")
    info = catalog()[algo_name]
    # an algorithm's default env preset, unless the command names an env (a preset or an entry point of its own)
    if info.default_env and not any(ov.key_or_group == "env" for ov in parsed) and "env.entry_point" not in keys:
        out.insert(0, f"env={info.default_env}")
    schemas = {"algo": info.fields, **{g: {f.name: str(f.type) for f in dataclasses.fields(c)} for g, c in GROUPS.items()}}
    for ov in parsed:
        key = ov.key_or_group.lstrip("+~")
        if "." not in key:
            top = key in ("algo", "env", "trainer", "reward", "seed") or key.startswith("hydra")
            if not top or key == "algorithm":  # `algorithm` is written by compose_config, never given
                raise ConfigError(f"unknown key {key!r}{_suggest(key, ['seed', *schemas])}; top-level keys: seed, "
                                  f"and groups algo, env, trainer, reward (e.g. trainer.total_steps=1000)")
            continue
        group, _, sub = key.partition(".")
        if group not in schemas:
            continue
        field_name = sub.split(".")[0]
        fields = schemas[group]  # field -> annotation
        if field_name not in fields:
            owner = f"algo={algo_name}" if group == "algo" else group
            raise ConfigError(f"unknown key {key!r} for {owner}{_suggest(field_name, list(fields))}; valid keys: "
                              + ", ".join(f"{group}.{v}" for v in fields))
        if "dict" in fields[field_name].lower():
            # free-form dict fields (env.kwargs, ...) take new keys: `x.kwargs={a: 1}` or `x.kwargs.a=1`
            text = overrides[parsed.index(ov)]
            out.remove(text)
            value = ov.value()
            items = value.items() if isinstance(value, dict) and sub == field_name else [(sub[len(field_name) + 1:], None)]
            for k, v in items:
                out.append(f"++{group}.{field_name}.{k}={_override_value(v)}" if v is not None
                           else f"++{text.lstrip('+~')}")
    return [*out, f"algorithm={choice}"]


def _override_value(v: Any) -> str:
    """A Python value written back as Hydra override syntax."""
    if isinstance(v, str):
        return "'" + v.replace("'", "\\'") + "'"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_override_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_override_value(x) for x in v) + "]"
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def compose_config(overrides: list[str]) -> RunConfig:
    """Overrides -> validated, typed RunConfig (raises ConfigError with one clear line).

    The one place a configuration is validated: keys, group choices and types here, then the
    algorithm's registered `check(cfg)` (switch values, env kwargs, dataset names; a ValueError
    becomes a ConfigError). `run` trusts what this returns."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    overrides = normalize_overrides(overrides)
    _register_schemas(registered_name(overrides[-1].partition("=")[2]))  # normalize_overrides ends with algorithm=<choice>
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        obj = OmegaConf.to_object(cfg)
    except Exception as e:
        msg = " ".join(str(e).split())
        for cause in (e.__cause__, e.__context__):
            if cause is not None and str(cause):
                msg = " ".join(str(cause).split())
        raise ConfigError(f"invalid configuration: {msg}") from None
    check_config(obj)  # declared value ranges (rlx.core.ranges)
    spec = algorithm(registered_name(obj.algorithm))
    if spec.check is not None:
        try:
            spec.check(obj)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return obj


def check_config(cfg: RunConfig) -> None:
    """The declared valid range of every numeric field (rlx.core.ranges), before anything is
    written; the first violation is one ConfigError line."""
    from rlx.core.logging import check_loggers
    from rlx.core.ranges import check_ranges

    try:
        for group in ("algo", "env", "trainer", "reward"):
            check_ranges(getattr(cfg, group), group)
        check_ranges(cfg, "")
    except ValueError as e:
        raise ConfigError(str(e).lstrip(".")) from None
    check_loggers(cfg.trainer.loggers)  # a logger's package is missing: one line with the pip command


def to_yaml(cfg: RunConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


# ---------------------------------------------------------------------------- running


@dataclass
class RunContext:
    """What an algorithm's `train(ctx)` gets: the config, where to write, the device."""

    cfg: RunConfig
    logger: RunLogger
    device: torch.device
    resume_from: Path | None = None
    resumed: bool = False  # the checkpoint was loaded into the loop (a later failure keeps the run's files)

    @property
    def run_dir(self) -> Path | None:
        return self.logger.run_dir

    def run(self, loop: Loop) -> dict[str, Any]:
        """Resume the loop if asked, run it to the end of its budget, return its summary.
        An unexpected exception becomes a `RunFailure` naming the loop's step."""
        if self.resume_from is not None:
            try:
                loop.resume(self.resume_from)
            except (RuntimeError, KeyError, ValueError, TypeError) as e:
                raise ConfigError(f"cannot resume from {self.resume_from}: the checkpoint does not fit the networks of "
                                  f"this configuration ({_one_line(e)[:200]}); resume with the run's own settings") from None
        self.resumed = True
        try:
            return loop.run()
        except Exception as e:
            if is_setting_error(e) or isinstance(e, (DivergenceError, RunFailure)):
                raise
            raise RunFailure(f"{_one_line(e)} at {loop.unit} {loop.steps}") from e


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown trainer.device={name!r}; use cpu, cuda, cuda:<index> or auto") from None
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ConfigError(f"trainer.device={name!r} is not supported by rlx; use cpu, cuda, cuda:<index> or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but CUDA is not available; use trainer.device=cpu or auto")
    return device


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run one fully resolved configuration; returns the final metrics (also in summary.json)."""
    import torch

    from rlx.core import distributed
    from rlx.core.checkpoint import latest_checkpoint, load_checkpoint
    from rlx.core.logging import lock_run_dir, make_run_dir

    spec = algorithm(registered_name(cfg.algorithm))
    t = cfg.trainer
    device = resolve_device(t.device)
    if t.distributed not in ("none", "ddp"):
        raise ConfigError(f"unknown trainer.distributed={t.distributed!r}; choose none or ddp")
    if t.on_nonfinite not in ("stop", "warn"):
        raise ConfigError(f"unknown trainer.on_nonfinite={t.on_nonfinite!r}; choose stop or warn")
    if t.distributed == "ddp":
        distributed.init_from_env(device)
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
    main_rank = distributed.is_main()
    resume_from = run_dir = None
    fresh = False  # whether this call made the run directory
    resume_step = None
    if t.resume:
        resume_from = latest_checkpoint(t.resume)
        run_dir = Path(t.resume)
        resume_step = load_checkpoint(resume_from)["loop"]["steps"]  # read (and refused) before anything is written
        check_resume(cfg, run_dir)
    elif main_rank:
        try:
            if t.run_dir:
                run_dir = Path(t.run_dir)
                fresh = not run_dir.exists()
                run_dir.mkdir(parents=True, exist_ok=True)
            else:
                # filed under what it runs on: an algorithm with its own dataset/task (algo=attribution) under that
                where = str(getattr(cfg.algo, "dataset", None) or cfg.env.name)
                run_dir = make_run_dir(t.root, cfg.algorithm, where, cfg.seed)
                fresh = True
        except OSError as e:
            where = f"trainer.run_dir={t.run_dir}" if t.run_dir else f"trainer.root={t.root}"
            raise ConfigError(f"cannot create the run directory ({where}): {e.strerror or e}; "
                              "choose a writable location") from None
    run_dir = distributed.broadcast_object(run_dir)
    lock = lock_run_dir(run_dir) if main_rank else None  # one writer per run directory
    try:
        return _run_locked(cfg, spec, device, run_dir, resume_from, resume_step, fresh, main_rank)
    finally:
        if lock is not None:
            os.close(lock)


def _run_locked(cfg: RunConfig, spec, device: torch.device, run_dir: Path, resume_from: Path | None,
                resume_step: int | None, fresh: bool, main_rank: bool) -> dict[str, Any]:
    import torch

    from rlx.core import distributed
    from rlx.core.checkpoint import atomic_write
    from rlx.core.logging import RunLogger
    from rlx.core.loops import seed_everything

    t = cfg.trainer
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    if t.deterministic:
        torch.use_deterministic_algorithms(True)
    before = snapshot(run_dir) if resume_from is not None and main_rank else None
    if main_rank:
        atomic_write(run_dir / "config.yaml", lambda f: f.write(to_yaml(cfg).encode()))
    # each data-parallel rank draws its own data; rank 0's parameters are broadcast by the loop
    cfg = dataclasses.replace(cfg, seed=cfg.seed + 10_007 * distributed.rank())
    seed_everything(cfg.seed)
    # a run directory without a checkpoint restarts from step 0: its old metrics are dropped
    logger = RunLogger(run_dir if main_rank else None, tensorboard=t.tensorboard and "tensorboard" in t.loggers,
                       loggers=t.loggers, config=dataclasses.asdict(cfg),
                       resume_step=resume_step if resume_from is not None else (None if fresh else -1))
    if main_rank:
        print(f"rlx.train: {'resuming' if resume_from else 'writing'} {run_dir}{_elapsed('configured')}", file=sys.stderr)
    ctx = RunContext(cfg, logger, device, resume_from)
    try:
        summary = spec.train(ctx)
    except Exception as e:
        logger.close()
        if before is not None and not ctx.resumed:
            restore(run_dir, before)  # a refused resume leaves the run it points at as it was
        if is_setting_error(e):
            if fresh and not (run_dir / "checkpoints").exists():
                remove_run_dir(run_dir, Path(t.root))  # a refused setting leaves no half-made run behind
            raise
        if isinstance(e, DivergenceError):
            raise
        raise _failure(e, cfg, run_dir if main_rank else None) from e
    finally:
        logger.close()
        if t.distributed == "ddp" and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return summary


def check_resume(cfg: RunConfig, run_dir: Path) -> None:
    """The run at trainer.resume must be the same algorithm on the same env (or dataset)."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    try:
        saved = yaml.safe_load(path.read_text()) or {}
        name = saved.get("algorithm") or saved["algo"]["name"]  # runs written before `algorithm` carried algo.name
        old = {"algo": name, **{f"env.{k}": saved["env"].get(k) for k in ("id", "entry_point", "name", "dataset")}}
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"cannot resume {run_dir}: unreadable {path.name} ({_one_line(e)[:160]})") from None
    new = {"algo": cfg.algorithm, **{f"env.{k}": getattr(cfg.env, k) for k in ("id", "entry_point", "name", "dataset")}}
    for key, value in old.items():
        if new[key] != value:
            raise ConfigError(f"cannot resume {run_dir}: it is a run with {key}={value}, this command has {key}={new[key]}; "
                              "resume with the run's own settings or start a new run")


def snapshot(run_dir: Path) -> tuple[set[Path], dict[Path, bytes]]:
    """The files of a run directory and the bytes of those a resume rewrites."""
    entries = set(run_dir.rglob("*"))
    return entries, {p: p.read_bytes() for p in entries if p.name in ("config.yaml", "metrics.jsonl", "summary.json")}


def restore(run_dir: Path, before: tuple[set[Path], dict[Path, bytes]]) -> None:
    from rlx.core.checkpoint import atomic_write

    entries, contents = before
    for p in sorted(set(run_dir.rglob("*")) - entries, key=lambda p: len(p.parts), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    for p, data in contents.items():
        if not p.is_file() or p.read_bytes() != data:
            atomic_write(p, lambda f, data=data: f.write(data))


def _failure(e: Exception, cfg: RunConfig, run_dir: Path | None) -> RunFailure:
    """The one line for a run that failed after it started; the traceback goes to
    `<run>/error.txt` and the run directory (with its last checkpoint) is kept."""
    import traceback

    from rlx.envs.registry import env_label

    what = str(e) if isinstance(e, RunFailure) else _one_line(e)
    if isinstance(e, EnvFailure):
        what = f"env {env_label(cfg.env)} {what}"
    if run_dir is None:
        return RunFailure(what)
    (run_dir / "error.txt").write_text("".join(traceback.format_exception(e)))
    ckpt = run_dir / "checkpoints" / "last.pt"
    kept = f"its last checkpoint is kept (resume with trainer.resume={run_dir})" if ckpt.is_file() else "no checkpoint was written yet"
    return RunFailure(f"{what}; traceback in {run_dir / 'error.txt'}; {kept}")


def remove_run_dir(run_dir: Path, root: Path) -> None:
    """Delete a run directory this process made, and its parents under `root` left empty."""
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break
        parent = parent.parent


def is_setting_error(e: BaseException) -> bool:
    """Errors that mean "fix the command line" (printed as one line, exit code 2)."""
    return isinstance(e, (*SETTING_ERRORS, UnsafeFileError, RunLocked))


def help_text() -> str:
    lines = [__doc__.strip(), "", "algorithms (algo=...):"]
    for name, info in catalog().items():
        lines.append(f"  {name:<14} {info.description}")
    presets = [p for p in group_options("algo") if p not in catalog()]
    if presets:
        lines.append(f"  presets: {', '.join(presets)}")
    lines += ["", "envs (env=...): " + ", ".join(group_options("env")) + ", or any gymnasium id (env=HalfCheetah-v5),",
              "  or a custom env: env.entry_point=pkg.module:Class env.kwargs='{size: 5}'"]
    for group, schema in GROUPS.items():
        lines += ["", f"{group}.* keys:"]
        lines += [f"  {group}.{f.name}" for f in dataclasses.fields(schema)]
    lines += ["", "keys of one algorithm: python -m rlx.train algo=<name> --cfg  (prints the resolved config)"]
    return "\n".join(lines)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the loop saves its checkpoint, then exit code 143."""


def _install_signal_handlers() -> dict[int, Any]:
    """SIGTERM (batch schedulers, `timeout`) behaves like Ctrl-C; a second SIGINT/SIGTERM while
    the checkpoint is being written exits at once (the atomic write keeps the previous one)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def again(signum, frame):
        os._exit(128 + signum)

    def first(signum, frame):
        signal.signal(signal.SIGINT, again)
        signal.signal(signal.SIGTERM, again)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, first)
    return previous


def main(argv: list[str] | None = None) -> int:
    import signal

    previous = _install_signal_handlers()
    try:
        return _main(argv)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


_STARTED: tuple[float, float] | None = None  # (wall, CPU) clocks when main() began


def _elapsed(what: str) -> str:
    """` (<what> in W s, C s CPU)` since main() began (the run's log of its phases), or ''."""
    if _STARTED is None:
        return ""
    return f" ({what} in {time.perf_counter() - _STARTED[0]:.1f} s, {time.process_time() - _STARTED[1]:.1f} s CPU)"


def _main(argv: list[str] | None = None) -> int:
    global _STARTED
    _STARTED = (time.perf_counter(), time.process_time())
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    multirun = any(a in ("-m", "--multirun") for a in argv)
    show_cfg = "--cfg" in argv
    overrides = [a for a in argv if a not in ("-m", "--multirun", "--cfg")]
    bad = [a for a in overrides if a.startswith("-")]
    try:
        if bad:
            raise ConfigError(f"unknown option {bad[0]!r}; options are --help, --cfg and -m/--multirun, the rest key=value")
        if multirun:
            from rlx import sweep

            return sweep.main(overrides, compose_config, run)
        cfg = compose_config(overrides)
        if show_cfg:
            print(to_yaml(cfg))
            return 0
        summary = run(cfg)
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"rlx.train: {how}; checkpoint saved (resume with trainer.resume=<run dir>)", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except DivergenceError as e:
        print(f"rlx.train: diverged: {e}", file=sys.stderr)
        return 3
    except RunFailure as e:
        print(f"rlx.train: failed: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if is_setting_error(e):
            print(f"rlx.train: error: {' '.join(str(e).split())}", file=sys.stderr)
            return 2
        if os.environ.get("RLX_TRACEBACK"):
            raise
        print(f"rlx.train: internal error before the run started: {_one_line(e)} "
              "(set RLX_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") != "0":
        return 0  # data-parallel workers: rank 0 reports
    print(f"rlx.train: done{_elapsed('finished')}", file=sys.stderr)
    shown = {k: v for k, v in summary.items() if k.startswith("eval/") or k.startswith("final/")}
    print("final: " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
