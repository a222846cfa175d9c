"""End to end: a short CPPO run improves the gold reward; the CLI prints R and writes plots."""

import dataclasses
import json

import torch

from rlx.algos.continual import ContinualRun, stream_metrics
from rlx.algos.cppo import CPPO, CPPOConfig
from rlx.core.loops import TrainerConfig
from rlx.envs.text import TextStream
from rlx.train import main
from tests.interrupt import interrupt_at_sample

from .conftest import SMALL


def test_short_cppo_run_improves_the_gold_reward(stream, sft_policy):
    one = TextStream(dataclasses.replace(stream.cfg, num_tasks=1), stream.sft_state, stream.reward_models[:1],
                     stream.rm_stats[:1])
    tok = one.tokenizer
    cfg = CPPOConfig(batch_size=32, lr=1e-3, kl_coef=0.05, retention_coef=0.2)  # a fast-moving setting for CI
    learner = CPPO(cfg, sft_policy, tok.eos_id, tok.pad_id, one.cfg.response_len)
    learner.start_task()  # as on a later task: weighted PPO term and retention to the SFT snapshot are on
    assert learner.retaining
    trainer = TrainerConfig(progress=False, tensorboard=False, checkpoint_every=0)
    run = ContinualRun(learner, one, samples_per_task=32 * 20, batch_size=32, cfg=trainer, seed=0, eval_samples=256)
    run.loop.run()
    before, after = run.initial["eval/task0_gold"], float(run.matrix()[0, 0])
    assert after > before + 0.3, (before, after)  # seeds 0/1/2 gave +0.90/+0.77/+0.71 with 256 evaluation samples
    assert run.rows[-1]["eval/task0_reward"] > run.initial["eval/task0_reward"] + 0.3
    assert "loss/retention" in run.loop.logger.latest


def test_stream_metrics():
    R = torch.tensor([[1.0, 0.0, 0.0], [0.5, 2.0, 0.0], [0.2, 1.0, 3.0]])
    m = stream_metrics(R)
    assert m["final/avg_reward"] == torch.tensor([0.2, 1.0, 3.0]).mean().item()
    assert abs(m["final/forgetting"] - ((1.0 - 0.2) + (2.0 - 1.0)) / 2) < 1e-6
    assert abs(m["final/plasticity"] - 2.0) < 1e-6


def test_cli_runs_the_stream_and_reports(stream_cfg, stream, tmp_path, capsys):
    run_dir = tmp_path / "run"
    kwargs = [f"env.kwargs.{k}={v}" for k, v in SMALL.items()]
    code = main(["algo=cppo", "algo.retention=learned", "algo.samples_per_task=64", "algo.batch_size=32",
                 "algo.eval_samples=16", "algo.d_model=32", *kwargs, "env.kwargs.num_tasks=2", f"env.kwargs.cache_dir={stream_cfg.cache_dir}",
                 f"trainer.run_dir={run_dir}", "trainer.progress=false", "trainer.tensorboard=false"])
    assert code == 0
    out = capsys.readouterr().out
    assert "R[i, j] = gold reward on task j after stage i" in out and "forgetting" in out and "plots:" in out
    assert "held-out accuracy" in out
    # the main job's answer: the sequential-PPO run of the same seed and budget, a verdict, sample generations
    assert "sequential PPO, same seed and budget (trained in this run)" in out and "verdict: CPPO (learned) forgot" in out
    assert "sample generations" in out and out.count("prompt: ") == 2 * 2  # 2 per task, 2 tasks
    summary = json.loads((run_dir / "summary.json").read_text())
    # trained in the same process from the same seed, it is exactly the standalone `algo.retention=none` run
    assert main(["algo=cppo", "algo.retention=none", "algo.samples_per_task=64", "algo.batch_size=32",
                 "algo.eval_samples=16", "algo.d_model=32", *kwargs, "env.kwargs.num_tasks=2",
                 f"env.kwargs.cache_dir={stream_cfg.cache_dir}", f"trainer.run_dir={tmp_path / 'ppo'}",
                 "trainer.progress=false", "trainer.tensorboard=false"]) == 0
    ppo = json.loads((tmp_path / "ppo" / "summary.json").read_text())
    for key in ("forgetting", "plasticity", "avg_reward", "kl_ref"):
        assert summary[f"final/ppo_{key}"] == ppo[f"final/{key}"], key
    for key in ("final/avg_reward", "final/forgetting", "final/plasticity", "final/kl_ref", "final/R_1_0",
                "final/rm_accuracy_task1"):
        assert key in summary
    assert (run_dir / "plots" / "r_matrix.png").stat().st_size > 1000
    assert (run_dir / "plots" / "task_rewards.png").stat().st_size > 1000
    from rlx.core.checkpoint import load_checkpoint

    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["loop"]["steps"] > 0  # weights_only=True loads it


def test_unknown_stream_key_is_a_clear_error(tmp_path, capsys):
    assert main(["algo=cppo", "env.kwargs.corpus=5", f"trainer.run_dir={tmp_path}", "trainer.progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # (rlx.train may first say where it writes)
    assert "Traceback" not in err and last.startswith("rlx.train: error:") and "unknown env.kwargs ['corpus']" in last


def test_bad_algorithm_setting_is_one_line_on_the_command_line(tmp_path, capsys):
    assert main(["algo=cppo", "algo.retention=ewc", f"trainer.root={tmp_path}", "trainer.progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    # the algorithm's check runs before the run directory is made: one line, nothing written
    assert len(err.splitlines()) == 1 and err.startswith("rlx.train: error:") and "algo.retention='ewc'" in err
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_stream_resumes_to_the_same_matrix(stream, lm_cfg, tmp_path):
    """The task, the rows of R and the SFT evaluation travel in the loop's checkpoint: a run
    interrupted in its second task and resumed ends with the uninterrupted run's R."""
    from rlx.core.logging import RunLogger
    from rlx.models.transformer import TransformerLM

    two = TextStream(dataclasses.replace(stream.cfg, num_tasks=2), stream.sft_state, stream.reward_models[:2],
                     stream.rm_stats[:2])
    tok = two.tokenizer
    trainer = TrainerConfig(progress=False, tensorboard=False, checkpoint_every=1)

    def build(run_dir):
        torch.manual_seed(0)
        policy = TransformerLM(lm_cfg)
        policy.load_state_dict(two.sft_state)
        learner = CPPO(CPPOConfig(batch_size=8), policy, tok.eos_id, tok.pad_id, two.cfg.response_len)
        return ContinualRun(learner, two, samples_per_task=16, batch_size=8, cfg=trainer,
                            logger=RunLogger(run_dir, tensorboard=False), seed=0, eval_samples=8, label="CPPO (test)")

    full = build(tmp_path / "full")
    full.loop.run()
    cut = build(tmp_path / "cut")
    interrupt_at_sample(cut, 3)  # the second rollout of task 1
    assert cut.task == 1 and len(cut.rows) == 1
    resumed = build(tmp_path / "resumed")
    resumed.loop.resume(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert resumed.task == 1 and resumed.rows == cut.rows and resumed.initial == full.initial
    assert resumed.loop.progress_label == "CPPO (test)" and resumed.loop._postfix({})["task"] == "2/2"
    resumed.loop.run()
    assert resumed.matrix().shape == (2, 2)
    torch.testing.assert_close(resumed.matrix(), full.matrix())
    torch.testing.assert_close(resumed.matrix("reward"), full.matrix("reward"))
