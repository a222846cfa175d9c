"""Shared machinery with no algorithm knowledge: buffers, loops, learner helpers, nets,
logging and checkpoints."""

from rlx.core.buffers import EpisodeStore, ReplayBuffer, RolloutBuffer
from rlx.core.learner import Learner
from rlx.core.loops import (
                            Loop,
                            OfflineLoop,
                            OnPolicyLoop,
                            SamplerLoop,
                            TrainerConfig,
                            evaluate_policy,
)
from rlx.core.offpolicy import OffPolicyLoop

__all__ = ["EpisodeStore", "Learner", "Loop", "OfflineLoop", "OffPolicyLoop", "OnPolicyLoop", "ReplayBuffer", "RolloutBuffer",
           "SamplerLoop", "TrainerConfig", "evaluate_policy"]
