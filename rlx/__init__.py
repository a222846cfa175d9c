"""rlx: offline RL, RLHF fine-tuning of generative policies and GFlowNets on one small core."""

__version__ = "0.1.0"
