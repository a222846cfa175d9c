"""Where experience comes from: env construction, datasets, reward transforms and rlx's
own environments (registered with gymnasium under the `rlx/` namespace on import)."""

from rlx.envs.registry import EnvConfig, EnvError, make_env, make_vec_env

__all__ = ["EnvConfig", "EnvError", "make_env", "make_vec_env"]
