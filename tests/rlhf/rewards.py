"""Rule rewards in TRL's convention `f(prompts, completions) -> list[float]` (named on the command
line as `algo.reward=tests.rlhf.rewards:count_yes`)."""


def count_yes(prompts: list[str], completions: list[str]) -> list[float]:
    return [float(c.split().count("yes")) for c in completions]


def count_no(prompts: list[str], completions: list[str]) -> list[float]:
    return [float(c.split().count("no")) for c in completions]


def wrong_length(prompts, completions):
    return [0.0]


def tiny_policy():
    """A `pkg.mod:factory` policy: (transformers model, transformers tokenizer) of the saved tiny GPT-2."""
    import os

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = os.environ["RLX_TEST_TINY_GPT2"]
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
