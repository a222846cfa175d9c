"""Vector envs run with gymnasium's SAME_STEP autoreset (`rlx.envs.make_vec_env`): when an
episode ends, `step` already returns the first observation of the next one and puts the
final observation in `info["final_obs"]` (flagged by `info["_final_obs"]`). Loops and the
dataset generator recover the true next observation with `final_observations`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["final_observations"]


def final_observations(next_obs: np.ndarray, info: dict[str, Any], out: np.ndarray | None = None) -> np.ndarray:
    """The true next observation of every env: `next_obs`, with the final observation
    substituted where an episode just ended (SAME_STEP autoreset), in one fancy-indexed write.
    With `out` ([N, ...], e.g. a row of a rollout's storage) the result is written there."""
    if out is not None:
        out[...] = next_obs
    if "_final_obs" not in info:
        return next_obs if out is None else out
    real = next_obs.copy() if out is None else out
    ended = np.flatnonzero(info["_final_obs"])
    if ended.size:
        real[ended] = np.stack(info["final_obs"][ended])
    return real
