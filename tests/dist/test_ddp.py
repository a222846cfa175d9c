"""Data-parallel learners: 2 gloo ranks step like one process with the combined batch."""

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
    assert not torch.allclose(ddp["actor.0.weight"], _learner().modules.state_dict()["actor.0.weight"])


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
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert len(ckpt["rng"]["per_rank"]) == 2
