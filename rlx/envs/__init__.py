"""Where experience comes from: env construction, datasets, reward transforms and rlx's
own environments (registered with gymnasium under the `rlx/` namespace on import)."""

from rlx.envs.registry import EnvConfig, make_env, make_vec_env

import gymnasium as gym

gym.register(id="rlx/GridWorld-v0", entry_point="rlx.envs.gridworld:GridWorld")
gym.register(id="rlx/PointMaze-Medium-v0", entry_point="rlx.envs.pointmaze:PointMaze", kwargs={"maze": "medium"})
gym.register(id="rlx/PointMaze-Large-v0", entry_point="rlx.envs.pointmaze:PointMaze", kwargs={"maze": "large"})

__all__ = ["EnvConfig", "make_env", "make_vec_env"]
