"""rlx: offline RL, RLHF fine-tuning of generative policies and GFlowNets on one small core.

`rlx.load(run_dir)` gives a saved run's policy (`predict(obs)`) or generative learner (`sample`);
it is imported on first use, so `import rlx` loads neither torch nor any algorithm."""

__version__ = "0.1.0"
__all__ = ["load"]


def __getattr__(name: str):
    if name == "load":
        from rlx.runs import load

        return load
    raise AttributeError(f"module 'rlx' has no attribute {name!r}")
