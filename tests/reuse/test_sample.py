"""`sample` of the generative learners: GFlowNet objects (`sample_objects`: states, SMILES for
molecules), DDPO images, RLHF/CPPO completions of text prompts."""

from __future__ import annotations

import pytest
import torch


def test_gflownet_samples_terminal_states_and_smiles():
    from rlx.algos.gflownet import GFlowNet, GFlowNetConfig, MLPPolicy
    from rlx.envs.hypergrid import HyperGrid

    env = HyperGrid(ndim=2, height=4)
    learner = GFlowNet(GFlowNetConfig(hidden=16), env, MLPPolicy(env, hidden=16))
    learner.generator.manual_seed(3)
    states = learner.sample_objects(7)
    learner.generator.manual_seed(3)
    _, terminal, _ = learner.sample(7, epsilon=0.0)
    assert states["pos"].shape == (7, 2) and torch.equal(states["pos"], terminal["pos"])
    pytest.importorskip("rdkit")
    from rlx.envs.molecules import AtomMoleculeEnv
    from rlx.models.graph_nets import graph_policy

    mol_env = AtomMoleculeEnv(max_atoms=4)
    smiles = GFlowNet(GFlowNetConfig(hidden=16), mol_env, graph_policy(mol_env, 16, 1)).sample_objects(5)
    from rdkit import Chem

    assert len(smiles) == 5 and all(isinstance(s, str) and Chem.MolFromSmiles(s) is not None for s in smiles)


def test_ddpo_samples_images_for_prompts_or_n():
    from rlx.algos.ddpo import DDPO, DDPOConfig
    from rlx.models.diffusion import ConditionalUNet, DigitsDiffusionConfig, NoiseSchedule

    base = DigitsDiffusionConfig(base_channels=8, channel_mult=[1])
    learner = DDPO(DDPOConfig(sample_steps=2, prompts=[3, 7]), ConditionalUNet(base), NoiseSchedule(base), base.image_size)
    images = learner.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, base.image_size, base.image_size)
    rollout = learner.act(torch.tensor([3, 7, 3]), generator=torch.Generator().manual_seed(0))
    assert torch.equal(images, rollout["action"][-1])  # n images cycle through algo.prompts
    given = learner.sample(prompts=[1, 2], deterministic=True, generator=torch.Generator().manual_seed(5))
    same = learner.act(torch.tensor([1, 2]), True, torch.Generator().manual_seed(5))["action"][-1]
    assert given.shape[0] == 2 and torch.equal(given, same)
    with pytest.raises(ValueError, match="needs n"):
        learner.sample()


@pytest.mark.parametrize("algo", ["rlhf", "cppo"])
def test_text_learners_complete_prompts(algo):
    from rlx.algos.registry import preset_config
    from rlx.envs.text import Tokenizer
    from rlx.models.transformer import LMConfig, TransformerLM

    tok = Tokenizer()
    cls = {"rlhf": "rlx.algos.rlhf:RLHF", "cppo": "rlx.algos.cppo:CPPO"}[algo]
    module, name = cls.split(":")
    learner_cls = getattr(__import__(module, fromlist=[name]), name)
    torch.manual_seed(0)
    lm = TransformerLM(LMConfig(vocab_size=len(tok), block_size=12, n_layer=1, n_head=2, d_model=16))
    learner = learner_cls(preset_config(algo, batch_size=4, num_minibatches=2), lm, tok.eos_id, tok.pad_id, 6)
    prompts = ["tech laptop", "travel", "food pizza"]  # two lengths: generated in two groups
    out = learner.sample(prompts, deterministic=True)
    assert len(out) == 3 and all(isinstance(s, str) for s in out)
    assert all(w in tok.ids for s in out for w in s.split())
    assert out == [learner.sample([p], deterministic=True)[0] for p in prompts]
    ids = torch.tensor([[tok.bos_id, *tok.encode("tech laptop"), tok.sep_id]])
    greedy = learner.act(ids, deterministic=True)
    assert out[0] == tok.decode(greedy["action"][0][greedy["mask"][0]].tolist())
    sampled = learner.sample(prompts * 4, generator=torch.Generator().manual_seed(1))
    assert len(set(sampled)) > 1


def test_rlx_load_a_cppo_run_completes_prompts(tmp_path):
    import rlx
    from rlx.algos.cppo import CPPO
    from rlx.core.checkpoint import load_checkpoint
    from rlx.train import main

    stream = {"num_tasks": 2, "corpus_size": 300, "sft_steps": 40, "pairs_per_task": 200, "rm_steps": 40}
    run = tmp_path / "run"
    assert main(["algo=cppo", "algo.compare_ppo=false", "algo.samples_per_task=64", "algo.batch_size=32",
                 "algo.eval_samples=16", "algo.d_model=32", *(f"env.kwargs.{k}={v}" for k, v in stream.items()),
                 f"env.kwargs.cache_dir={tmp_path / 'cache'}", "trainer.progress=false", "trainer.tensorboard=false",
                 f"trainer.run_dir={run}"]) == 0
    learner = rlx.load(run)
    assert isinstance(learner, CPPO)
    saved = load_checkpoint(run / "checkpoints" / "last.pt")["learner"]
    assert learner.state_dict().keys() == saved.keys()
    out = learner.sample(["tech laptop", "food pizza"] * 8, generator=torch.Generator().manual_seed(0))
    words = [w for s in out for w in s.split()]
    from rlx.envs.text import Tokenizer

    assert len(out) == 16 and words and all(w in Tokenizer().ids for w in words)
