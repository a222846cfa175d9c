"""End to end on a tiny randomly initialised GPT-2 and a locally built tokenizer (no download):
the rule reward (count of a target word) rises within a CI-sized budget, for algo=rlhf on one
64-prompt file and algo=cppo on a 2-file stream with one reward per file, from Python and the CLI."""

import json

import torch

from rlx.algos.continual import ContinualRun
from rlx.algos.cppo import CPPO, CPPOConfig
from rlx.algos.rlhf import RLHF, RLHFConfig
from rlx.core.loops import TrainerConfig
from rlx.envs.prompts import PromptFileStream, load_policy
from rlx.train import main
from tests.interrupt import interrupt_at_sample

from .conftest import prompts

FAST = dict(batch_size=32, lr=3e-3, kl_coef=0.05, num_minibatches=2, eval_samples=64)  # a fast-moving CI setting
CLI_FAST = [f"algo.{k}={v}" for k, v in FAST.items()] + ["env.kwargs.response_len=8", "trainer.progress=false",
                                                          "trainer.tensorboard=false"]
YES, NO = "tests.rlhf.rewards:count_yes", "tests.rlhf.rewards:count_no"


def _python_run(learner_cls, cfg, tiny_gpt2, files, rewards, iterations):
    torch.manual_seed(0)
    policy, tok = load_policy(f"hf:{tiny_gpt2}")
    stream = PromptFileStream.from_files(files, tok, rewards, response_len=8)
    learner = learner_cls(cfg, policy, tok.eos_id, tok.pad_id, stream.response_len)
    trainer = TrainerConfig(progress=False, tensorboard=False, checkpoint_every=0)
    run = ContinualRun(learner, stream, samples_per_task=32 * iterations, batch_size=32, cfg=trainer, seed=0,
                       eval_samples=64)
    run.loop.run()
    return run


def test_rlhf_from_python_raises_the_reward(tiny_gpt2, prompt_files):
    run = _python_run(RLHF, RLHFConfig(**FAST), tiny_gpt2, prompt_files[:1], [YES], iterations=10)
    before, after = run.initial["eval/task0_reward"], run.rows[-1]["eval/task0_reward"]
    # a random policy says "yes" about 0.2 times in 8 words; GPT-2 init seeds 0/1/2 ended at 6.9/7.2/7.5
    assert before < 0.5 and after > before + 3.0, (before, after)


def test_cppo_from_python_learns_each_task_of_a_two_file_stream(tiny_gpt2, prompt_files):
    cfg = CPPOConfig(**FAST, compare_ppo=False)
    run = _python_run(CPPO, cfg, tiny_gpt2, prompt_files, [YES, NO], iterations=8)
    R = run.matrix()
    initial = [run.initial[f"eval/task{j}_reward"] for j in range(2)]
    # from about 0.2 each, GPT-2 init seeds 0/1/2 reached R[0, 0] = 5.0/5.2/6.4 and R[1, 1] = 3.1/3.1/2.8
    assert R[0, 0] > initial[0] + 2.5 and R[1, 1] > initial[1] + 1.5, (initial, R)
    assert "loss/retention" in run.loop.logger.latest  # the second task retains the first


def _curve(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/reward_mean"] for r in rows if "train/reward_mean" in r]


def test_rlhf_from_the_cli_raises_the_reward_and_names_it(tiny_gpt2, prompt_files, tmp_path, capsys):
    run_dir = tmp_path / "rlhf"
    code = main(["algo=rlhf", "env=prompts", f"env.prompts={prompt_files[0]}", f"algo.policy=hf:{tiny_gpt2}",
                 f"algo.reward={YES}", "algo.samples_per_task=320", *CLI_FAST, f"trainer.run_dir={run_dir}"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"sequential PPO [reward {YES}]: R[i, j] = reward on task j after stage i" in out
    assert f"task 0 (ask_a): 64 prompts from {prompt_files[0]}, reward {YES}" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    curve = _curve(run_dir)
    assert len(curve) == 10 and sum(curve[-3:]) / 3 > sum(curve[:3]) / 3 + 1.0, curve
    assert summary["final/R_0_0"] > 1.5, summary
    assert (run_dir / "plots" / "task_rewards.png").is_file()
    # rlx.load rebuilds the learner on the Hugging Face policy from its spec, with the trained weights
    import rlx
    from rlx.core.checkpoint import load_checkpoint

    learner = rlx.load(run_dir)
    assert isinstance(learner, RLHF)
    trained = load_checkpoint(run_dir / "checkpoints" / "last.pt")["learner"]["policy"]
    for name, value in learner.policy.state_dict().items():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=0)
    tokenizer = load_policy(f"hf:{tiny_gpt2}")[1]
    completions = learner.sample(prompts(16), tokenizer=tokenizer)
    # the trained policy's answers: more than one "yes" per completion on average (untrained: about 0.2)
    assert len(completions) == 16 and sum(c.split().count("yes") for c in completions) > 16, completions


def test_cppo_from_the_cli_on_a_stream_with_one_reward_per_file(tiny_gpt2, prompt_files, tmp_path):
    run_dir = tmp_path / "cppo"
    code = main(["algo=cppo", "env=prompts", f"env.prompts=[{prompt_files[0]},{prompt_files[1]}]",
                 f"algo.policy=hf:{tiny_gpt2}", f"algo.reward=[{YES},{NO}]", "algo.samples_per_task=256",
                 "algo.compare_ppo=false", *CLI_FAST, f"trainer.run_dir={run_dir}"])
    assert code == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first = [r["eval/task0_reward"] for r in rows if "eval/task0_reward" in r]
    assert len(first) == 2  # one evaluation row per stage
    assert summary["final/R_0_0"] > 1.0 and summary["final/R_1_1"] > 1.0, summary
    assert summary["final/R_0_1"] < summary["final/R_1_1"]  # "no" rose on its own task, not before it


def test_an_interrupted_run_on_a_hugging_face_policy_resumes_to_the_same_matrix(tiny_gpt2, prompt_files, tmp_path):
    """The Hugging Face policy, its optimizer and the stream's place travel in the checkpoint
    (read back with weights_only=True): interrupted in task 1 and resumed, R is the full run's."""
    from rlx.core.logging import RunLogger

    trainer = TrainerConfig(progress=False, tensorboard=False, checkpoint_every=1)

    def build(run_dir):
        torch.manual_seed(0)
        policy, tok = load_policy(f"hf:{tiny_gpt2}")
        stream = PromptFileStream.from_files(prompt_files, tok, [YES, NO], response_len=4)
        learner = CPPO(CPPOConfig(batch_size=8, num_minibatches=2), policy, tok.eos_id, tok.pad_id, stream.response_len)
        return ContinualRun(learner, stream, samples_per_task=16, batch_size=8, cfg=trainer,
                            logger=RunLogger(run_dir, tensorboard=False), seed=0, eval_samples=8)

    full = build(tmp_path / "full")
    full.loop.run()
    cut = build(tmp_path / "cut")
    interrupt_at_sample(cut, 3)  # the second rollout of task 1
    resumed = build(tmp_path / "resumed")
    resumed.loop.resume(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert resumed.task == 1 and resumed.rows == cut.rows
    resumed.loop.run()
    assert torch.equal(resumed.matrix(), full.matrix())
