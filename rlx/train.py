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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlx.algos.registry import CONFIG_DIR, algorithms, registered_name
from rlx.core.checkpoint import latest_checkpoint
from rlx.core.errors import SETTING_ERRORS, ConfigError
from rlx.core.logging import RunLogger, make_run_dir
from rlx.core.loops import Loop, TrainerConfig, seed_everything
from rlx.envs.registry import EnvConfig
from rlx.envs.rewards import RewardConfig

GROUPS = {"env": EnvConfig, "trainer": TrainerConfig, "reward": RewardConfig}


@dataclass
class RunConfig:
    """The whole resolved configuration of one run."""

    algorithm: str = "ppo"  # the `algo=` choice (an algorithm or a configs/algo preset); set by compose_config
    algo: Any = None  # the selected algorithm's config dataclass
    env: EnvConfig = field(default_factory=EnvConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    seed: int = 0  # seeds python, numpy, torch and the envs


# ---------------------------------------------------------------------------- config store


def _register_schemas() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="rlx_base", node=RunConfig)
    for name, spec in algorithms().items():
        cs.store(group="algo", name=name, node=spec.config)
    cs.store(group="env", name="gym", node=EnvConfig)
    cs.store(group="trainer", name="default", node=TrainerConfig)
    cs.store(group="reward", name="original", node=RewardConfig)


def group_options(group: str) -> list[str]:
    """Choices for a config group: registered schemas plus YAML presets in configs/<group>/."""
    names = set(algorithms()) if group == "algo" else {"env": {"gym"}, "trainer": {"default"}, "reward": {"original"}}[group]
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
    specs = algorithms()
    if specs[algo_name].default_env and not any(ov.key_or_group == "env" for ov in parsed):
        out.insert(0, f"env={specs[algo_name].default_env}")
    schemas = {"algo": specs[algo_name].config, **GROUPS}
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
        fields = {f.name: f for f in dataclasses.fields(schemas[group])}
        if field_name not in fields:
            owner = f"algo={algo_name}" if group == "algo" else group
            raise ConfigError(f"unknown key {key!r} for {owner}{_suggest(field_name, list(fields))}; valid keys: "
                              + ", ".join(f"{group}.{v}" for v in fields))
        if "dict" in str(fields[field_name].type).lower():
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
    _register_schemas()
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
    spec = algorithms()[registered_name(obj.algorithm)]
    if spec.check is not None:
        try:
            spec.check(obj)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return obj


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

    @property
    def run_dir(self) -> Path | None:
        return self.logger.run_dir

    def run(self, loop: Loop) -> dict[str, Any]:
        """Resume the loop if asked, run it to the end of its budget, return its summary."""
        if self.resume_from is not None:
            loop.resume(self.resume_from)
        return loop.run()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but CUDA is not available; use trainer.device=cpu or auto")
    return device


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run one fully resolved configuration; returns the final metrics (also in summary.json)."""
    from rlx.core import distributed
    from rlx.core.checkpoint import atomic_write, load_checkpoint

    spec = algorithms()[registered_name(cfg.algorithm)]
    t = cfg.trainer
    device = resolve_device(t.device)
    if t.distributed not in ("none", "ddp"):
        raise ConfigError(f"unknown trainer.distributed={t.distributed!r}; choose none or ddp")
    if t.distributed == "ddp":
        distributed.init_from_env(device)
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
    main_rank = distributed.is_main()
    resume_from = run_dir = None
    fresh = False  # whether this call made the run directory
    if t.resume:
        resume_from = latest_checkpoint(t.resume)
        run_dir = Path(t.resume)
    elif main_rank and t.run_dir:
        run_dir = Path(t.run_dir)
        fresh = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
    elif main_rank:
        run_dir = make_run_dir(t.root, cfg.algorithm, cfg.env.name, cfg.seed)
        fresh = True
    run_dir = distributed.broadcast_object(run_dir)
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    if t.deterministic:
        torch.use_deterministic_algorithms(True)
    if main_rank:
        atomic_write(run_dir / "config.yaml", lambda f: f.write(to_yaml(cfg).encode()))
    # each data-parallel rank draws its own data; rank 0's parameters are broadcast by the loop
    cfg = dataclasses.replace(cfg, seed=cfg.seed + 10_007 * distributed.rank())
    seed_everything(cfg.seed)
    resume_step = load_checkpoint(resume_from)["loop"]["steps"] if resume_from is not None else None
    logger = RunLogger(run_dir if main_rank else None, tensorboard=t.tensorboard, resume_step=resume_step)
    if main_rank:
        print(f"rlx.train: {'resuming' if resume_from else 'writing'} {run_dir}", file=sys.stderr)
    try:
        summary = spec.train(RunContext(cfg, logger, device, resume_from))
    except Exception as e:
        logger.close()
        if fresh and is_setting_error(e) and not (run_dir / "checkpoints").exists():
            remove_run_dir(run_dir, Path(t.root))  # a refused setting leaves no half-made run behind
        raise
    finally:
        logger.close()
        if t.distributed == "ddp" and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return summary


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
    return isinstance(e, SETTING_ERRORS)


def help_text() -> str:
    lines = [__doc__.strip(), "", "algorithms (algo=...):"]
    for name, spec in algorithms().items():
        lines.append(f"  {name:<14} {spec.description}")
    presets = [p for p in group_options("algo") if p not in algorithms()]
    if presets:
        lines.append(f"  presets: {', '.join(presets)}")
    lines += ["", "envs (env=...): " + ", ".join(group_options("env")) + ", or any gymnasium id (env=HalfCheetah-v5),",
              "  or a custom env: env.entry_point=pkg.module:Class env.kwargs='{size: 5}'"]
    for group, schema in GROUPS.items():
        lines += ["", f"{group}.* keys:"]
        lines += [f"  {group}.{f.name}" for f in dataclasses.fields(schema)]
    lines += ["", "keys of one algorithm: python -m rlx.train algo=<name> --cfg  (prints the resolved config)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
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
    except KeyboardInterrupt:
        print("rlx.train: interrupted; checkpoint saved (resume with trainer.resume=<run dir>)", file=sys.stderr)
        return 130
    except Exception as e:
        if is_setting_error(e):
            print(f"rlx.train: error: {e}", file=sys.stderr)
            return 2
        raise
    if os.environ.get("RANK", "0") != "0":
        return 0  # data-parallel workers: rank 0 reports
    shown = {k: v for k, v in summary.items() if k.startswith("eval/") or k.startswith("final/")}
    print("final: " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
