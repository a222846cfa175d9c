"""HILP: the value is -||phi(s) - phi(g)|| by construction, reward inference recovers z,
goal sampling stays inside episodes, a tiny run learns to reach goals, config errors are one line."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlx.algos.gcrl import goal_batch, sample_goals
from rlx.algos.hilp import HILP, HILPConfig, infer_latent, reward_fit_r2, unit_sphere
from rlx.core.buffers import EpisodeStore, ReplayBuffer

OBS = gym.spaces.Box(-10.0, 10.0, (3,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def small_cfg(**kw) -> HILPConfig:
    return HILPConfig(hidden=[32, 32], latent_dim=4, batch_size=64, **kw)


def test_value_is_negative_phi_distance_by_construction():
    learner = HILP(small_cfg(), OBS, ACT)
    learner.set_dataset_stats(torch.randn(100, 3) * 2 + 1)
    s, g = torch.randn(16, 3), torch.randn(16, 3)
    v = learner.value(s, g)  # [2, 16], one per phi network
    for e in range(learner.phi.n):
        phi_s, phi_g = learner.phi(learner._norm(s), member=e), learner.phi(learner._norm(g), member=e)
        torch.testing.assert_close(v[e], -(phi_s - phi_g).norm(dim=-1))
    # symmetric, never positive, and (up to the 1e-3 floor that keeps gradients finite) 0 at s = g
    torch.testing.assert_close(v, learner.value(g, s))
    assert (v < 0).all() and learner.value(s, s).abs().max() <= 1e-3 + 1e-7


def test_reward_inference_recovers_z_exactly_on_synthetic_features():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(500, 8, generator=gen)
    z = unit_sphere(1, 8, gen)[0]
    for scale in (1.0, 3.5):  # the reward's scale does not change the prompted direction
        torch.testing.assert_close(infer_latent(features, scale * features @ z), z, atol=1e-5, rtol=0)
    # through the learner: rewards linear in phi(s') - phi(s) give back their direction
    learner = HILP(small_cfg(), OBS, ACT)
    learner.set_dataset_stats(torch.randn(100, 3))
    s, s2 = torch.randn(200, 3), torch.randn(200, 3)
    z4 = unit_sphere(1, 4, gen)[0]
    reward = (learner.embed(s2) - learner.embed(s)).detach() @ z4
    torch.testing.assert_close(learner.infer_z(s, s2, reward), z4, atol=1e-4, rtol=0)


def test_reward_inference_ignores_a_constant_reward_offset():
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(500, 8, generator=gen) + 3.0  # features with a mean, as phi(s') has
    z = unit_sphere(1, 8, gen)[0]
    reward = 2.0 + features @ z  # e.g. a torso height that never comes near 0
    torch.testing.assert_close(infer_latent(features, reward), z, atol=1e-5, rtol=0)
    assert (infer_latent(features, reward, intercept=False) - z).norm() > 0.05  # the plain regression bends z


def test_reward_fit_r2_is_one_for_linear_rewards_and_near_zero_for_unrelated_ones():
    gen = torch.Generator().manual_seed(3)
    f, fh = torch.randn(400, 6, generator=gen), torch.randn(400, 6, generator=gen)
    w = torch.randn(6, generator=gen)
    assert reward_fit_r2(f, 1.5 + f @ w, fh, 1.5 + fh @ w) == pytest.approx(1.0, abs=1e-9)
    noisy = reward_fit_r2(f, f @ w + torch.randn(400, generator=gen), fh, fh @ w + torch.randn(400, generator=gen))
    assert 0.5 < noisy < 0.95  # about var(fw) / (var(fw) + 1) = 6 / 7
    assert reward_fit_r2(f, torch.randn(400, generator=gen), fh, torch.randn(400, generator=gen)) < 0.05


def test_state_features_follow_the_official_zero_shot_code():
    learner = HILP(small_cfg(feature="state"), OBS, ACT)
    learner.set_dataset_stats(torch.randn(100, 3))
    s, s2 = torch.randn(200, 3), torch.randn(200, 3)
    mean = learner.phi.phi_mean.clone()
    f = learner.features(s, s2)
    torch.testing.assert_close(f, (learner.embed(s2) - mean).detach())  # phi(s') - mean phi, independent of s
    torch.testing.assert_close(learner.features(torch.randn(200, 3), s2), f)
    z = unit_sphere(1, 4, torch.Generator().manual_seed(2))[0]
    torch.testing.assert_close(learner.infer_z(s, s2, 0.7 + f @ z), z, atol=1e-4, rtol=0)
    # the running mean follows phi as phi trains (rate 0.005 per update, official hilp_zsrl)
    batch = TensorDict({"obs": s[:64], "next_obs": s2[:64], "action": torch.rand(64, 2) * 2 - 1, "goal": s2[:64].flip(0),
                        "reward": -torch.ones(64), "terminated": torch.zeros(64, dtype=torch.bool)}, batch_size=[64])
    for _ in range(3):
        learner.update(batch)
    assert not torch.equal(learner.phi.phi_mean, mean)
    assert HILP(small_cfg(), OBS, ACT).feature == "diff" and HILP(small_cfg(), OBS, ACT, auto_feature="state").feature == "state"


def test_current_goal_rows_carry_no_phi_gradient():
    """V(s, s) = 0 by construction, so p_curgoal rows (target 0) give phi no gradient: the official
    HILP goal mix has p_curgoal = 0 (0 / 0.625 / 0.375) instead of spending batch rows on them."""
    cfg = small_cfg()
    assert (cfg.p_curgoal, cfg.p_trajgoal, cfg.p_randomgoal) == (0.0, 0.625, 0.375)
    learner = HILP(cfg, OBS, ACT)
    learner.set_dataset_stats(torch.randn(100, 3))
    s = torch.randn(32, 3)
    loss, _ = learner.phi_loss(s, torch.randn(32, 3), s, torch.zeros(32), torch.ones(32, dtype=torch.bool))
    loss.backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in learner.phi.parameters())
    learner.phi.zero_grad()
    loss, _ = learner.phi_loss(s, torch.randn(32, 3), torch.randn(32, 3), -torch.ones(32), torch.zeros(32, dtype=torch.bool))
    loss.backward()  # an ordinary goal does move phi
    assert max(p.grad.abs().max() for p in learner.phi.parameters() if p.grad is not None) > 0


def test_midpoint_planning_picks_knn_mean_of_minimax_candidates():
    learner = HILP(HILPConfig(hidden=[8], latent_dim=2, plan_knns=1), gym.spaces.Box(-10, 10, (2,), np.float32), ACT)
    learner.embed = lambda x: x.float()  # identity phi: distances are Euclidean
    line = torch.stack([torch.arange(0, 10.01, 0.5), torch.zeros(21)], 1)
    learner.candidates = line
    s, g = torch.tensor([[0.0, 0.0]]), torch.tensor([[10.0, 0.0]])
    for k, want in ((1, 5.0), (2, 2.5), (3, 1.25)):  # each recursion halves the way to the subgoal
        learner.cfg.plan_recursions = k
        torch.testing.assert_close(learner.subgoal(s, g), torch.tensor([[want, 0.0]]), atol=0.26, rtol=0)
    learner.cfg.plan_recursions, learner.cfg.plan_knns = 1, 5  # mean of the 5 best: 4.0 .. 6.0 -> 5.0
    learner._cand_phi = None
    torch.testing.assert_close(learner.subgoal(s, g), torch.tensor([[5.0, 0.0]]))
    # candidates only on a detour (up, across, down): the prompt turns up instead of heading straight to g
    up = torch.arange(0, 5.01, 0.5)
    detour = torch.cat([torch.stack([torch.zeros(11), up], 1), torch.stack([torch.arange(0, 10.01, 0.5), torch.full((21,), 5.0)], 1),
                        torch.stack([torch.full((11,), 10.0), up], 1)])
    learner.candidates, learner._cand_phi, learner.cfg.plan_knns = detour, None, 1
    z = learner.goal_latent(s, g)[0]
    assert z[1] > 0.4 and torch.isclose(z.norm(), torch.tensor(1.0))
    learner.cfg.plan_recursions = 0
    torch.testing.assert_close(learner.goal_latent(s, g)[0], torch.tensor([1.0, 0.0]))


def ragged_buffer(lengths):
    episodes = [TensorDict({"obs": torch.full((n, 1), float(e)), "next_obs": torch.full((n, 1), float(e)),
                            "action": torch.zeros(n, 2), "reward": torch.zeros(n),
                            "terminated": torch.zeros(n, dtype=torch.bool), "truncated": torch.zeros(n, dtype=torch.bool)},
                           batch_size=[n]) for e, n in enumerate(lengths)]
    store = EpisodeStore.from_episodes(episodes)
    return store, ReplayBuffer.from_episodes(store)


def test_goal_sampling_respects_trajectory_boundaries():
    store, buffer = ragged_buffer([3, 1, 7, 2, 40, 5])
    seg = store.segment_ids()
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(store.num_rows, (5000,), generator=gen)
    future = sample_goals(buffer, idx, 0.0, 1.0, 0.9, gen)
    assert (seg[future] == seg[idx]).all()  # same episode, read from EpisodeStore.ptr
    end = store.ptr[1:][seg[idx]] - 1
    assert ((future > idx) | (idx == end)).all() and (future <= end).all()
    assert (future[idx == end] == idx[idx == end]).all()
    # geometric offsets: in the long episode, far from its end, E[k] = 1 / (1 - 0.9) = 10
    start = int(store.ptr[4])
    early = (idx >= start) & (idx < start + 5)
    assert 7.0 < (future[early] - idx[early]).float().mean() < 13.0
    assert (sample_goals(buffer, idx, 1.0, 0.0, 0.9, gen) == idx).all()
    mixed = sample_goals(buffer, idx, 0.2, 0.5, 0.9, gen)
    assert 0.15 < (mixed == idx).float().mean() < 0.3 and (seg[mixed] != seg[idx]).float().mean() > 0.1
    batch = goal_batch(buffer, idx, mixed)  # goal = obs of the goal row; reward 0 and done only at the goal itself
    assert torch.equal(batch["goal"], store.data["obs"][mixed])
    assert torch.equal(batch["terminated"], mixed == idx) and torch.equal(batch["reward"], (mixed == idx).float() - 1)


def test_tiny_run_improves_goal_reaching():
    from rlx.core.loops import OfflineLoop, TrainerConfig
    from rlx.algos.gcrl import goal_transform
    from rlx.envs.pointmaze import PointMaze, evaluate_goals, make_maze_dataset

    torch.manual_seed(0)
    store = EpisodeStore.from_flat(make_maze_dataset("medium", episodes=40, episode_steps=200, seed=0))
    buffer = ReplayBuffer.from_episodes(store)
    env = PointMaze("medium")
    cfg = HILPConfig(hidden=[64, 64], latent_dim=8, batch_size=128, lr=1e-3, tau=0.02)
    learner = HILP(cfg, env.observation_space, env.action_space)
    learner.set_dataset_stats(store.data["obs"])
    tasks = [((1, 1), (2, 2)), ((4, 4), (4, 6)), ((6, 1), (6, 3)), ((3, 2), (3, 4)), ((2, 5), (1, 6))]  # ~2 cells apart

    def success() -> float:
        return evaluate_goals(lambda o, g: learner.act(o, True, goal=g)["action"], "medium", 4, seed=1, tasks=tasks,
                              max_steps=40)["eval/success"]

    before = success()
    loop = OfflineLoop(learner, buffer, TrainerConfig(total_steps=600, eval_every=0, progress=False), cfg.batch_size,
                       transform=goal_transform(cfg), seed=0)
    loop.run()
    after = success()
    assert before <= 0.25 and after >= before + 0.4, (before, after)


@pytest.mark.parametrize("override,expected", [
    ("algo.phi=learned", "unknown algo.phi='learned'; choose one of hilbert, random"),
    ("algo.p_trajgoal=0.9", "must be >= 0 and sum to 1"),
    ("algo.extraction=bc", "unknown algo.extraction='bc'"),
    ("algo.feature=obs", "unknown algo.feature='obs'; choose one of auto, diff, state"),
])
def test_bad_config_is_one_line(tmp_path, monkeypatch, capsys, override, expected):
    from rlx.envs.datasets import OfflineDataset, save_dataset
    from rlx.envs.pointmaze import make_maze_dataset
    from rlx.train import main

    monkeypatch.setenv("RLX_DATA", str(tmp_path))
    save_dataset("pointmaze-medium", OfflineDataset(EpisodeStore.from_flat(make_maze_dataset("medium", 2, 20)),
                                                    {"maze": "medium"}))
    assert main(["algo=hilp", "env=pointmaze-medium", override, f"trainer.root={tmp_path}/runs",
                 "trainer.progress=false"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("rlx.train: error:") and expected in last


def test_zero_shot_run_reports_return_and_fit_per_task(tmp_path, monkeypatch):
    """`algo=hilp` on a locomotion dataset: z per task from labelled rows, rollouts in the task's
    reward env (evaluate_policy replaced by one checked step and a known return), and the
    held-out R^2 of each reward fit, all in summary.json."""
    import json
    from functools import partial

    from rlx.envs.datasets import generate, random_policy, save_dataset
    from rlx.train import main

    import rlx.core.loops
    from rlx.envs.state_rewards import task_reward

    prompts = []

    def evaluate_policy(act, task_env_fn, episodes, seed):
        """One real step in the task env (its reward is the task's), the prompt recorded; a fake return."""
        task = task_env_fn.args[-1]
        env = task_env_fn()
        obs, _ = env.reset(seed=0)
        action = act(torch.as_tensor(obs[None], dtype=torch.float32))
        next_obs, reward, *_ = env.step(action[0].numpy())
        assert reward == pytest.approx(float(task_reward(task, torch.as_tensor(next_obs[None], dtype=torch.float32))[0]),
                                       rel=1e-4, abs=1e-5)
        prompts.append((task, act.__defaults__[0]))
        return {"eval/return_mean": float(len(task))}

    monkeypatch.setattr(rlx.core.loops, "evaluate_policy", evaluate_policy)
    monkeypatch.setenv("RLX_DATA", str(tmp_path))
    env_fn = partial(gym.make, "HalfCheetah-v5")
    data = generate(env_fn, random_policy(env_fn().action_space, 0), 512, 0, num_envs=2)
    data.metadata["env_id"] = "HalfCheetah-v5"
    save_dataset("cheetah-explore", data)
    run = tmp_path / "run"
    assert main(["algo=hilp", "env=cheetah-explore", "trainer.total_steps=10", "trainer.eval_every=0",
                 "trainer.eval_episodes=1", f"trainer.run_dir={run}", "trainer.progress=false",
                 "trainer.tensorboard=false", "algo.hidden=[16,16]", "algo.batch_size=32", "algo.reward_samples=200",
                 "algo.reward_tasks=[forward,jump]"]) == 0
    out = json.loads((run / "summary.json").read_text())
    from rlx.core.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoints" / "last.pt")["loop"]["steps"] == 10  # weights_only=True loads it
    for task in ("forward", "jump"):
        assert out[f"eval/{task}/return_mean"] == float(len(task)) and out[f"eval/{task}/fit_r2"] <= 1.0
    assert out["eval/return_mean"] == pytest.approx((7 + 4) / 2)
    # each task is played in its own reward env with its own unit-norm prompt z
    assert [task for task, _ in prompts] == ["forward", "jump"]
    z_forward, z_jump = (z for _, z in prompts)
    assert float(z_forward.norm()) == pytest.approx(1.0, abs=1e-5) and float(z_jump.norm()) == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(z_forward, z_jump)
