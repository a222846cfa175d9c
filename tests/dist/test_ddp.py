"""Data-parallel learners: 2 gloo ranks step like one process with the combined batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tensordict import TensorDict

from rlx.algos import PPO, PPOConfig
from rlx.core import distributed

ROOT = Path(__file__).parents[2]
CFG = PPOConfig(num_minibatches=1, update_epochs=3, norm_adv=False, lr=1e-2)
OBS, ACT = gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(3)


def _batch() -> TensorDict:
    g = torch.Generator().manual_seed(0)
    T, N = 4, 8
    return TensorDict({
        "obs": torch.randn(T, N, 3, generator=g), "action": torch.randint(0, 3, (T, N), generator=g),
        "logp": torch.full((T, N), -1.1), "value": torch.randn(T, N, generator=g),
        "adv": torch.randn(T, N, generator=g), "ret": torch.randn(T, N, generator=g)}, batch_size=[T, N])


def _learner() -> PPO:
    torch.manual_seed(0)
    return PPO(CFG, OBS, ACT)


def _rank_main(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(100 + rank)  # different init per rank: the sync must fix it
    learner = PPO(CFG, OBS, ACT)
    if rank == 0:
        learner.load_state_dict(_learner().state_dict())
    distributed.sync_learner(learner)
    shard = _batch()[:, rank * 4 : (rank + 1) * 4]  # [T, N/2]: this rank's envs
    learner.update(shard)
    if rank == 0:
        torch.save(learner.modules.state_dict(), out)
    dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process_with_combined_batch(tmp_path):
    single = _learner()
    single.update(_batch())
    out = tmp_path / "rank0.pt"
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    ddp = torch.load(out)
    for k, v in single.modules.state_dict().items():
        torch.testing.assert_close(ddp[k], v, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ddp["net.weight0"], _learner().modules.state_dict()["net.weight0"])


def test_ddp_without_torchrun_is_one_clear_line():
    with pytest.raises(RuntimeError, match="torchrun"):
        distributed.init_from_env(torch.device("cpu"))


def test_torchrun_ppo_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rlx.train",
           "algo=ppo", "env=CartPole-v1", "env.num_envs=2", "algo.num_steps=16", "trainer.total_steps=256",
           "trainer.eval_episodes=2", "trainer.progress=false", "trainer.tensorboard=false",
           "trainer.distributed=ddp", f"trainer.run_dir={run_dir}"]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (run_dir / "summary.json").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert len(ckpt["rng"]["per_rank"]) == 2


# ---------------------------------------------------------------- offline actor-critic

OFF_OBS, OFF_ACT = gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (2,))


def _offline_learner():
    from rlx.algos.offline_ac import IQLConfig, OfflineActorCritic

    torch.manual_seed(0)
    return OfflineActorCritic(IQLConfig(hidden=[16, 16], actor_lr=1e-2, critic_lr=1e-2), OFF_OBS, OFF_ACT)


def _offline_batches(n_updates: int = 3, rows: int = 16) -> list[TensorDict]:
    g = torch.Generator().manual_seed(1)
    return [TensorDict({"obs": torch.randn(rows, 3, generator=g), "action": 4 * torch.rand(rows, 2, generator=g) - 2,
                        "reward": torch.randn(rows, generator=g), "next_obs": torch.randn(rows, 3, generator=g),
                        "terminated": torch.rand(rows, generator=g) < 0.1}, batch_size=[rows])
            for _ in range(n_updates)]


def _offline_rank_main(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    learner = _offline_learner()
    if rank == 1:  # a different init on rank 1: sync_learner must replace it with rank 0's
        for p in learner.modules.parameters():
            p.data.add_(1.0)
    distributed.sync_learner(learner)
    for batch in _offline_batches():
        learner.update(batch[rank * 8 : (rank + 1) * 8])  # this rank's half of every batch
    if rank == 0:
        torch.save({"modules": learner.modules.state_dict(), "q_target": learner.q_target.state_dict()}, out)
    dist.destroy_process_group()


def test_offline_iql_awr_two_gloo_ranks_match_one_process(tmp_path):
    # IQL's expectile, twin-Q and AWR losses are batch means, so averaging the gradients of two
    # equal halves is the gradient of the whole batch, through critic, V, actor and the targets
    single = _offline_learner()
    for batch in _offline_batches():
        single.update(batch)
    out = tmp_path / "rank0.pt"
    mp.spawn(_offline_rank_main, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    ddp = torch.load(out)
    for k, v in single.modules.state_dict().items():
        torch.testing.assert_close(ddp["modules"][k], v, atol=1e-5, rtol=1e-5)
    for k, v in single.q_target.state_dict().items():
        torch.testing.assert_close(ddp["q_target"][k], v, atol=1e-5, rtol=1e-5)
    start = _offline_learner().modules.state_dict()
    moved = [k for k, v in start.items() if "obs_" not in k and not torch.allclose(ddp["modules"][k], v)]
    assert len(moved) > len(start) // 2  # the updates did move the networks


def test_torchrun_offline_iql_runs_and_resumes(tmp_path):
    from rlx.envs.datasets import make_tiny, save_dataset

    data = tmp_path / "data"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "RLX_DATA": str(data)}
    os.environ["RLX_DATA"], old = str(data), os.environ.get("RLX_DATA")
    try:
        save_dataset("pendulum-tiny", make_tiny(num_steps=600, seed=0))
    finally:
        os.environ.pop("RLX_DATA") if old is None else os.environ.update(RLX_DATA=old)
    run_dir = tmp_path / "run"
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rlx.train",
            "algo=iql", "env=pendulum-tiny", "algo.hidden=[16,16]", "algo.batch_size=32", "trainer.eval_every=10",
            "trainer.eval_episodes=1", "trainer.progress=false", "trainer.tensorboard=false", "trainer.distributed=ddp"]
    first = subprocess.run([*base, "trainer.total_steps=20", f"trainer.run_dir={run_dir}"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert len(ckpt["rng"]["per_rank"]) == 2 and ckpt["loop"]["steps"] == 20
    again = subprocess.run([*base, "trainer.total_steps=40", f"trainer.resume={run_dir}"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 40  # one writer (rank 0), continued from step 20
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["loop"]["steps"] == 40


# ---------------------------------------------------------------- DDPO and GFlowNet (sampler learners)


def _ddpo_learner():
    from rlx.algos.ddpo import DDPO, DDPOConfig
    from rlx.models.diffusion import ConditionalUNet, DigitsDiffusionConfig, NoiseSchedule

    base = DigitsDiffusionConfig(base_channels=8, channel_mult=[1])
    torch.manual_seed(0)
    # timestep_fraction=1 and one minibatch: the loss is the mean over all T x N steps whatever the
    # random step order; no per-prompt tracking, so advantages are batch statistics (see _ddpo_batch)
    cfg = DDPOConfig(sample_steps=3, num_samples=8, num_minibatches=1, timestep_fraction=1.0, inner_epochs=2,
                     per_prompt_stat_tracking=False, lr=1e-3, max_grad_norm=0.0)
    return DDPO(cfg, ConditionalUNet(base), NoiseSchedule(base), base.image_size)


def _ddpo_batch() -> TensorDict:
    learner = _ddpo_learner()
    steps = learner.act(torch.arange(8) % 10, generator=torch.Generator().manual_seed(3))  # [T, 8]
    reward = torch.zeros(steps.shape)
    # both halves hold the same rewards, so per-rank reward standardization equals the global one
    reward[-1] = torch.tensor([0.3, -1.0, 2.0, 0.5]).repeat(2)
    steps["reward"] = reward
    return steps


def _gflownet_learner():
    from rlx.algos.gflownet import GFlowNet, GFlowNetConfig, MLPPolicy
    from rlx.envs.hypergrid import HyperGrid

    env = HyperGrid(ndim=2, height=4)
    torch.manual_seed(0)
    return GFlowNet(GFlowNetConfig(objective="tb", lr=1e-2, lr_log_z=0.1), env, MLPPolicy(env, hidden=16))


def _gflownet_batches(n_updates: int = 2) -> list:
    learner = _gflownet_learner()
    learner.generator.manual_seed(5)
    return [learner.sample(8, epsilon=0.5) for _ in range(n_updates)]  # (store, terminal, log R) of 8 trajectories


def _sampler_rank_main(rank: int, world: int, init_file: str, out: str, which: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    if which == "ddpo":
        learner = _ddpo_learner()
        if rank == 1:
            learner.model.apply(lambda m: [p.data.add_(0.5) for p in m.parameters(recurse=False)])
        distributed.sync_learner(learner)
        learner.update(_ddpo_batch()[:, rank * 4 : (rank + 1) * 4])
        state = learner.model.state_dict()
    else:
        learner = _gflownet_learner()
        if rank == 1:
            for p in learner.model.parameters():
                p.data.add_(0.5)
        distributed.sync_learner(learner)
        for store, _, log_r in _gflownet_batches():
            half = torch.arange(rank * 4, (rank + 1) * 4)  # this rank's 4 of the 8 trajectories
            learner.update(store.select(half).to_batch(log_reward=log_r[half]))
        state = {**learner.model.state_dict(), "log_z": learner.log_z.detach().clone()}
    if rank == 0:
        torch.save(state, out)
    dist.destroy_process_group()


@pytest.mark.parametrize("which", ["ddpo", "gflownet"])
def test_sampler_learners_two_gloo_ranks_match_one_process(tmp_path, which):
    # DDPO's and TB's losses are means over steps / trajectories of equal-size halves, so the mean of
    # the two ranks' gradients is the gradient of the combined batch (this failed for DDPO while its
    # update stepped the optimizer itself, without the gradient averaging of optimizer_step)
    if which == "ddpo":
        single = _ddpo_learner()
        start = {k: v.clone() for k, v in single.model.state_dict().items()}
        single.update(_ddpo_batch())
        expected = single.model.state_dict()
    else:
        single = _gflownet_learner()
        start = {k: v.clone() for k, v in single.model.state_dict().items()}
        for store, _, log_r in _gflownet_batches():
            single.update(store.to_batch(log_reward=log_r))
        expected = {**single.model.state_dict(), "log_z": single.log_z.detach()}
    out = tmp_path / "rank0.pt"
    mp.spawn(_sampler_rank_main, args=(2, str(tmp_path / "init"), str(out), which), nprocs=2, join=True)
    ddp = torch.load(out)
    for k, v in expected.items():
        torch.testing.assert_close(ddp[k], v, atol=1e-5, rtol=1e-4)
    moved = [k for k, v in start.items() if v.is_floating_point() and not torch.allclose(ddp[k], v)]
    assert len(moved) > len(start) // 2  # the updates did move the network
