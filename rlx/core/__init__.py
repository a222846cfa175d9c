"""Shared machinery with no algorithm knowledge: buffers, loops, learner helpers, nets,
logging and checkpoints.

The names below resolve on first use, so `import rlx.core.errors` (or `rlx.core.ranges`,
`rlx.core.trainer_config`) does not import torch: the CLI answers `--help` and config errors
without it."""

from __future__ import annotations

import importlib

_WHERE = {"EpisodeStore": "buffers", "ReplayBuffer": "buffers", "RolloutBuffer": "buffers", "Learner": "learner",
          "Loop": "loops", "OfflineLoop": "loops", "OnPolicyLoop": "loops", "SamplerLoop": "loops",
          "evaluate_policy": "loops", "TrainerConfig": "trainer_config", "OffPolicyLoop": "offpolicy"}

__all__ = ["EpisodeStore", "Learner", "Loop", "OfflineLoop", "OffPolicyLoop", "OnPolicyLoop", "ReplayBuffer", "RolloutBuffer",
           "SamplerLoop", "TrainerConfig", "evaluate_policy"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'rlx.core' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rlx.core.{_WHERE[name]}"), name)
