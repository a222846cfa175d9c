"""The learner protocol (`rlx.core.learner.Learner`), checked over every registered algorithm.

For each `algo=<name>` (every registered algorithm and every preset of rlx/configs/algo/) a small
factory of its registered algorithm builds the learner the algorithm trains on a tiny env,
dataset or task, plus an observation batch and a training batch. The test asserts that
`act(obs, deterministic=False)` returns a TensorDict with `action`, `update(batch)` returns
`dict[str, float]`, every optimizer step goes through `rlx.core.learner.optimizer_step`, and
`state_dict` / `load_state_dict` round-trip (a learner rebuilt from another seed acts and
updates exactly like the original after loading its state), and `learner.save(path)` /
`<Class>.load(path)` rebuild it from the file alone (its config and the spaces, env or model it
was built from travel inside the file). A new algorithm needs a factory here, or this test fails.
"""

from __future__ import annotations

import functools
import inspect
import io
import sys

import gymnasium as gym
import pytest
import torch
from tensordict import TensorDict

from rlx.algos.registry import algorithms, preset_config, registered_name
from rlx.core import learner as learner_mod
from rlx.train import group_options

BOX3, BOX2 = gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (2,))


def _rows(n: int = 16, goal: bool = False) -> TensorDict:
    g = torch.Generator().manual_seed(1)
    td = TensorDict({"obs": torch.randn(n, 3, generator=g), "action": 4 * torch.rand(n, 2, generator=g) - 2,
                     "reward": torch.randn(n, generator=g), "next_obs": torch.randn(n, 3, generator=g),
                     "terminated": torch.rand(n, generator=g) < 0.1}, batch_size=[n])
    if goal:
        td["goal"] = torch.randn(n, 3, generator=g)
    return td


def _ppo(choice):
    from rlx.algos.ppo import PPO

    g = torch.Generator().manual_seed(2)
    T, N = 4, 8
    batch = TensorDict({"obs": torch.randn(T, N, 3, generator=g), "action": torch.randint(0, 3, (T, N), generator=g),
                        "logp": torch.full((T, N), -1.1), "value": torch.randn(T, N, generator=g),
                        "adv": torch.randn(T, N, generator=g), "ret": torch.randn(T, N, generator=g)},
                       batch_size=[T, N])
    learner = PPO(preset_config(choice, num_minibatches=2, update_epochs=1), BOX3, gym.spaces.Discrete(3))
    return learner, torch.randn(5, 3), {}, batch


def _offline(choice):
    from rlx.algos.offline_ac import OfflineActorCritic

    learner = OfflineActorCritic(preset_config(choice, hidden=[16, 16]), BOX3, BOX2, total_steps=10)
    return learner, torch.randn(5, 3), {}, _rows()


def _goal_conditioned(choice):
    from rlx.algos.gcrl import GoalConditioned

    learner = GoalConditioned(preset_config(choice, hidden=[16, 16]), BOX3, BOX2, total_steps=10)
    return learner, torch.randn(5, 3), {"goal": torch.randn(5, 3)}, _rows(goal=True)


def _hilp(choice):
    from rlx.algos.hilp import HILP

    learner = HILP(preset_config(choice, hidden=[16, 16], latent_dim=4), BOX3, BOX2, total_steps=10)
    learner.set_dataset_stats(torch.randn(32, 3))
    return learner, torch.randn(5, 3), {"goal": torch.randn(5, 3)}, _rows(goal=True)


def _attribution(choice):
    # attribution trains explanation policies; its tabular learner is the one with no optimizer
    from rlx.envs.gridworld import TabularQ, TabularQConfig

    obs_space, act_space = gym.spaces.MultiDiscrete([4, 4]), gym.spaces.Discrete(4)
    g = torch.Generator().manual_seed(3)
    batch = TensorDict({"obs": torch.randint(0, 4, (32, 2), generator=g),
                        "action": torch.randint(0, 4, (32,), generator=g),
                        "reward": torch.randn(32, generator=g), "next_obs": torch.randint(0, 4, (32, 2), generator=g),
                        "terminated": torch.rand(32, generator=g) < 0.2}, batch_size=[32])
    return TabularQ(TabularQConfig(), obs_space, act_space), batch["obs"][:5], {}, batch


def _gflownet(choice):
    from rlx.algos.gflownet import GFlowNet, MLPPolicy
    from rlx.envs.hypergrid import HyperGrid

    env = HyperGrid(ndim=2, height=4)
    learner = GFlowNet(preset_config(choice, replay_size=4), env, MLPPolicy(env, hidden=16))
    store, _, log_r = learner.sample(6, epsilon=0.3)
    return learner, env.reset(3), {}, store.to_batch(log_reward=log_r)


def _ddpo(choice):
    from rlx.algos.ddpo import DDPO
    from rlx.models.diffusion import ConditionalUNet, DigitsDiffusionConfig, NoiseSchedule

    base = DigitsDiffusionConfig(base_channels=8, channel_mult=[1])
    learner = DDPO(preset_config(choice, sample_steps=2, num_samples=4, max_grad_norm=1.0),
                   ConditionalUNet(base), NoiseSchedule(base), base.image_size)
    batch = learner.act(torch.arange(4), generator=torch.Generator().manual_seed(0))
    batch["reward"] = torch.zeros(batch.shape)
    batch["reward"][-1] = torch.tensor([1.0, -1.0, 0.5, 0.0])
    return learner, torch.arange(3), {}, batch


def _text(choice):
    from rlx.models.transformer import LMConfig, TransformerLM

    cfg = preset_config(choice, batch_size=4, num_minibatches=2, update_epochs=1)
    from rlx.algos.cppo import CPPO
    from rlx.algos.rlhf import RLHF

    learner = {"rlhf": RLHF, "cppo": CPPO}[registered_name(choice)](
        cfg, TransformerLM(LMConfig(vocab_size=12, block_size=8, n_layer=1, n_head=2, d_model=16)), 1, 0, 4)
    learner.start_task()  # second task: CPPO's retention term is on
    prompt = torch.randint(2, 12, (4, 3), generator=torch.Generator().manual_seed(4))
    batch = learner.rollout(prompt, lambda p, r, m: (r * m).float().mean(1), torch.Generator().manual_seed(5))
    return learner, prompt[:2], {}, batch


def _off_policy(choice):
    from rlx.algos.sac import SAC
    from rlx.algos.td3 import TD3

    cls = {"sac": SAC, "td3": TD3}[registered_name(choice)]
    learner = cls(preset_config(choice, hidden=[16, 16], batch_size=16), BOX3, BOX2, torch.device("cpu"))
    batch = _rows()
    batch["truncated"] = torch.zeros(16, dtype=torch.bool)
    return learner, torch.randn(5, 3), {}, batch


def _sampler_baseline(choice):
    from rlx.algos.sampler_baselines import SamplerPPO, UniformSampler
    from rlx.envs.molecules import AtomMoleculeEnv
    from rlx.models.graph_nets import graph_policy

    env = AtomMoleculeEnv(max_atoms=4)
    if registered_name(choice) == "sampler_ppo":
        cfg = preset_config(choice, hidden=16, num_layers=1, epochs=1)
        learner = SamplerPPO(cfg, env, graph_policy(env, cfg.hidden, cfg.num_layers, cfg.encoder))
    else:
        learner = UniformSampler(env)
    store, _, log_r = learner.sample(4)
    return learner, env.reset(3), {}, store.to_batch(log_reward=log_r)


FACTORIES = {"ppo": _ppo, "sac": _off_policy, "td3": _off_policy, "sampler_ppo": _sampler_baseline,
             "sampler_random": _sampler_baseline, "iql": _offline, "gciql": _goal_conditioned, "hilp": _hilp, "attribution": _attribution,
             "gflownet": _gflownet, "ddpo": _ddpo, "rlhf": _text, "cppo": _text}
CHOICES = group_options("algo")  # every registered algorithm and every rlx/configs/algo preset


def test_every_registered_algorithm_has_a_factory():
    assert set(FACTORIES) == set(algorithms()), "add a factory for each new algorithm to tests/test_learner_protocol.py"


def _optimizers(obj, depth: int = 0, seen=None) -> list[torch.optim.Optimizer]:
    """Every optimizer reachable from a learner's attributes (learners may wrap learners)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 3:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.optim.Optimizer):
        return [obj]
    if isinstance(obj, (torch.Tensor, torch.nn.Module)):
        return []
    if not hasattr(obj, "__dict__") and not isinstance(obj, (list, dict)):
        return []
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else vars(obj).values()
    return [o for v in values for o in _optimizers(v, depth + 1, seen)]


def _only_through_optimizer_step(learner) -> list[int]:
    """Wrap each optimizer's `step` to fail unless called by `optimizer_step`; returns the call counter."""
    calls = [0]
    for opt in _optimizers(learner):
        inner = opt.step

        @functools.wraps(inner)  # keeps the LR scheduler's marks on a wrapped step
        def step(*args, _inner=inner, **kwargs):
            caller = sys._getframe(1).f_code
            assert caller is learner_mod.optimizer_step.__code__, (
                f"{type(learner).__name__} stepped an optimizer in {caller.co_name} ({caller.co_filename}), "
                "not through rlx.core.learner.optimizer_step")
            calls[0] += 1
            return _inner(*args, **kwargs)

        opt.step = step
    return calls


def _same(a: TensorDict, b: TensorDict) -> None:
    assert set(a.keys()) == set(b.keys())
    for k in a.keys():
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"act()[{k!r}] differs after load_state_dict")


def _act(learner, obs, kwargs, deterministic):
    torch.manual_seed(7)
    if deterministic is None:
        return learner.act(obs, **kwargs)
    return learner.act(obs, deterministic, **kwargs)


@pytest.mark.parametrize("name", CHOICES)
def test_learner_protocol(name):
    factory = FACTORIES[registered_name(name)]
    torch.manual_seed(0)
    learner, obs, kwargs, batch = factory(name)
    # act(obs, deterministic=False) is the signature, and the default is sampling
    params = inspect.signature(learner.act).parameters
    names = list(params)
    assert names[:2] == [names[0], "deterministic"] and params["deterministic"].default is False, names
    out = _act(learner, obs, kwargs, None)
    assert isinstance(out, TensorDict) and "action" in out.keys()
    assert isinstance(_act(learner, obs, kwargs, True), TensorDict)
    # update(batch: TensorDict) -> dict[str, float], every step through optimizer_step
    calls = _only_through_optimizer_step(learner)
    params = [p for opt in _optimizers(learner) for group in opt.param_groups for p in group["params"]]
    before = [p.detach().clone() for p in params]
    torch.manual_seed(1)
    metrics = learner.update(batch.clone())
    assert metrics and all(isinstance(k, str) and "/" in k and isinstance(v, float)
                           for k, v in metrics.items()), metrics
    if _optimizers(learner):
        assert calls[0] > 0, f"{name}: update stepped no optimizer"
        # the step reached the weights (a NaN metric fails the reproducibility check below)
        assert any(not torch.equal(p.detach(), b) for p, b in zip(params, before)), f"{name}: update moved no parameter"
    # state_dict / load_state_dict: a learner from another seed becomes the same learner
    torch.manual_seed(123)
    clone = factory(name)[0]
    buffer = io.BytesIO()  # through bytes, as a checkpoint: nothing aliased, weights_only loadable
    torch.save(learner.state_dict(), buffer)
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    for deterministic in (True, False):
        _same(_act(clone, obs, kwargs, deterministic), _act(learner, obs, kwargs, deterministic))
    torch.manual_seed(2)
    after = learner.update(batch.clone())
    torch.manual_seed(2)
    after_clone = clone.update(batch.clone())
    assert after_clone == pytest.approx(after, rel=1e-5, abs=1e-6)  # optimizer state came along
    _same(_act(clone, obs, kwargs, True), _act(learner, obs, kwargs, True))


@pytest.mark.parametrize("name", CHOICES)
def test_save_and_load_rebuild_the_learner_from_the_file_alone(name, tmp_path):
    factory = FACTORIES[registered_name(name)]
    torch.manual_seed(0)
    learner, obs, kwargs, batch = factory(name)
    torch.manual_seed(1)
    learner.update(batch.clone())  # trained state, optimizer moments included
    path = learner.save(tmp_path / "learner.pt")
    torch.load(path, weights_only=True)  # plain data: no pickled objects
    torch.manual_seed(99)  # the rebuilt networks are initialized from another seed, then overwritten
    loaded = type(learner).load(path)
    assert type(loaded) is type(learner)
    assert getattr(loaded, "cfg", None) == getattr(learner, "cfg", None)  # the config came back from the file
    for deterministic in (True, False):
        _same(_act(loaded, obs, kwargs, deterministic), _act(learner, obs, kwargs, deterministic))
    torch.manual_seed(2)
    after = learner.update(batch.clone())
    torch.manual_seed(2)
    assert loaded.update(batch.clone()) == pytest.approx(after, rel=1e-5, abs=1e-6)
