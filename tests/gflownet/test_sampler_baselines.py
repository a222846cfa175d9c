"""The molecule baselines (rlx.algos.sampler_baselines): PPO from the terminal reward, uniform
sampling, and the record of every training molecule (samples.jsonl) that the script reads."""

import itertools
import json

import pytest
import torch

from rlx.algos.sample_log import SampleLog, read_samples
from rlx.algos.sampler_baselines import SamplerPPO, SamplerPPOConfig, UniformSampler
from rlx.models.graph_nets import graph_policy
from rlx.envs.molecules import AtomMoleculeEnv


def _logp(learner, store):
    with torch.no_grad():
        return learner._log_prob(store)[1]


def test_ppo_update_moves_probability_towards_high_reward_trajectories():
    torch.manual_seed(0)
    env = AtomMoleculeEnv(max_atoms=5)
    learner = SamplerPPO(SamplerPPOConfig(hidden=16, num_layers=2, ent_coef=0.0, lr=3e-3), env, graph_policy(env, 16, 2))
    store, _, log_r = learner.sample(32)
    before = _logp(learner, store)
    with torch.no_grad():
        value_before = learner.model.value(store.data["obs"])
    info = learner.update(store.to_batch(log_reward=log_r))
    delta = _logp(learner, store) - before  # [M] change of each taken action's log-prob
    ret = log_r.exp()[store.segment_ids()]
    adv = ret - value_before
    # actions of better-than-expected trajectories gain probability relative to worse ones
    assert delta[adv > adv.median()].mean() > delta[adv < adv.median()].mean()
    with torch.no_grad():  # and the value head moved towards the returns
        assert (learner.model.value(store.data["obs"]) - ret).pow(2).mean() < (value_before - ret).pow(2).mean()
    assert info["train/reward_mean"] == pytest.approx(float(log_r.exp().mean())) and info["train/clipfrac"] >= 0


def test_uniform_sampler_draws_each_allowed_action_equally():
    env = AtomMoleculeEnv(max_atoms=4)
    sampler = UniformSampler(env)
    states = env.reset(3)
    allowed = env.forward_mask(states).reshape(-1)
    ptr = env.action_ptr(states)
    out = sampler.act(states)
    counts = torch.tensor([int(allowed[a:b].sum()) for a, b in itertools.pairwise(ptr.tolist())])
    assert torch.allclose(out["logp"], -counts.float().log())
    store, _, log_r = sampler.sample(8)
    assert sampler.update(store.to_batch(log_reward=log_r))["train/reward_mean"] > 0


def test_sample_log_resume_keeps_batches_up_to_the_checkpoint(tmp_path):
    log = SampleLog(tmp_path)
    for i in range(3):
        log.add([f"C{i}", f"N{i}"], [0.1 * i, 0.2])
    smiles, rewards, clock = read_samples(tmp_path)
    assert smiles == ["C0", "N0", "C1", "N1", "C2", "N2"] and rewards[2] == pytest.approx(0.1)
    assert [n for n, _ in clock] == [2, 4, 6]
    resumed = SampleLog(tmp_path, resume_samples=4)  # the checkpoint was taken after 4 samples
    resumed.add(["O2", "F2"], [0.3, 0.4])
    smiles, _, clock = read_samples(tmp_path)
    assert smiles == ["C0", "N0", "C1", "N1", "O2", "F2"] and [n for n, _ in clock] == [2, 4, 6]
    assert clock[2][1] >= clock[1][1]  # the clock continues from the kept batches


@pytest.mark.parametrize("algo", ["sampler_ppo", "sampler_random", "gflownet_molecules"])
def test_cli_records_every_training_molecule(algo, tmp_path):
    from rlx.train import main

    assert main([f"algo={algo}", "env=molecules_atom", "algo.batch_size=8", "trainer.total_steps=16",
                 "trainer.eval_every=0", "algo.eval_samples=8", "algo.record_samples=true",
                 *(["algo.hidden=16"] if algo != "sampler_random" else []), f"trainer.run_dir={tmp_path}",
                 "trainer.progress=false", "trainer.tensorboard=false"]) == 0
    smiles, rewards, clock = read_samples(tmp_path)
    assert len(smiles) == 16 and [n for n, _ in clock] == [8, 16]
    env = AtomMoleculeEnv()
    assert rewards == pytest.approx([max(env.reward_of_smiles(s), 1e-3) for s in smiles])
    assert json.loads((tmp_path / "summary.json").read_text())["eval/validity"] == 1.0


def test_record_samples_refuses_a_non_molecule_env(tmp_path, capsys):
    from rlx.train import main

    assert main(["algo=gflownet", "env=hypergrid_small", "algo.record_samples=true", "trainer.total_steps=16",
                 f"trainer.run_dir={tmp_path / 'run'}", "trainer.progress=false", "trainer.tensorboard=false"]) == 2
    assert "not a molecule env" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_resumed_run_continues_its_sample_record(tmp_path):
    """A run continued from its checkpoint appends to samples.jsonl: the same molecules as one straight run."""
    from rlx.train import main

    common = ["algo=sampler_random", "env=molecules_atom", "algo.batch_size=8", "trainer.eval_every=0",
              "algo.eval_samples=8", "algo.record_samples=true", "trainer.progress=false", "trainer.tensorboard=false"]
    assert main([*common, "trainer.total_steps=32", f"trainer.run_dir={tmp_path / 'straight'}"]) == 0
    assert main([*common, "trainer.total_steps=16", f"trainer.run_dir={tmp_path / 'split'}"]) == 0
    assert main([*common, "trainer.total_steps=32", f"trainer.resume={tmp_path / 'split'}"]) == 0
    straight, split = read_samples(tmp_path / "straight"), read_samples(tmp_path / "split")
    assert split[0] == straight[0] and [n for n, _ in split[2]] == [8, 16, 24, 32]
