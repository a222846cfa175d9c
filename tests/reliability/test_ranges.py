"""Declared valid ranges: every numeric field of every config declares one, and the composer
refuses an out-of-range value in one line before anything is written."""

import dataclasses
from dataclasses import dataclass

import pytest

from rlx.algos.registry import algorithms
from rlx.core.loops import TrainerConfig
from rlx.core.ranges import bounded, check_ranges, count, each, one_of, positive, unit
from rlx.envs.registry import EnvConfig
from rlx.envs.rewards import RewardConfig
from rlx.train import ConfigError, RunConfig, compose_config

# numeric fields that may take any real value
UNBOUNDED = {"log_std_init", "scale", "shift", "low", "high"}


def _configs():
    seen = {TrainerConfig, EnvConfig, RewardConfig, RunConfig}
    seen |= {spec.config for spec in algorithms().values()}
    return sorted(seen, key=lambda c: c.__name__)


@pytest.mark.parametrize("config", _configs(), ids=lambda c: c.__name__)
def test_every_numeric_field_declares_a_range(config):
    missing = [f.name for f in dataclasses.fields(config)
               if any(t in str(f.type) for t in ("int", "float")) and "str" not in str(f.type)
               and f.name not in UNBOUNDED and "range" not in f.metadata]
    assert not missing, f"{config.__name__}: declare a range (rlx.core.ranges) for {missing}"


@dataclass
class _C:
    lr: float = positive(1.0)
    p: float = unit(0.5, "(]")
    n: int | None = count(None)
    g: float = bounded(0.9, 0, 1, "[)")
    hidden: list = each(lambda: [4, 4], 1)
    act: str = one_of("tanh", ("tanh", "relu"))


@pytest.mark.parametrize("change,message", [
    ({"lr": 0.0}, "x.lr=0.0 is out of range: it must be > 0"),
    ({"p": 0.0}, "x.p=0.0 is out of range: it must be > 0 and <= 1"),
    ({"n": 0}, "x.n=0 is out of range: it must be >= 1"),
    ({"g": 1.0}, "x.g=1.0 is out of range: it must be >= 0 and < 1"),
    ({"g": float("nan")}, "x.g=nan is out of range"),
    ({"hidden": [4, 0]}, "x.hidden=0 is out of range"),
    ({"act": "relux"}, "x.act='relux' is not one of tanh, relu (did you mean 'relu'?)"),
])
def test_check_ranges_names_field_value_and_range(change, message):
    check_ranges(_C(), "x")  # defaults pass, None is skipped
    with pytest.raises(ValueError) as e:
        check_ranges(dataclasses.replace(_C(), **change), "x")
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("override,message", [
    ("trainer.total_steps=0", "trainer.total_steps=0 is out of range: it must be >= 1"),
    ("trainer.total_steps=-5", "trainer.total_steps=-5"),
    ("env.num_envs=0", "env.num_envs=0"),
    ("algo.gamma=2", "algo.gamma=2.0 is out of range: it must be > 0 and <= 1"),
    ("seed=-1", "seed=-1 is out of range: it must be >= 0"),
    ("trainer.checkpoint_every=-1", "trainer.checkpoint_every=-1"),
    ("algo.lr=-0.001", "algo.lr=-0.001"),
    ("trainer.on_nonfinite=ignore", "trainer.on_nonfinite='ignore' is not one of stop, warn"),
])
def test_composer_refuses_out_of_range(override, message):
    with pytest.raises(ConfigError) as e:
        compose_config([override])
    assert message in str(e.value)
