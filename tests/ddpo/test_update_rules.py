"""DDPO's update loop and reward normalisation on small hand-checked cases: which (sample, step)
rows each optimizer step sees, the gradient-accumulation count behind the reported means, the
per-prompt statistics with their history and batch fallback, and the SF variant's KL metric."""

import math

import pytest
import torch

from rlx.algos.ddpo import PerPromptStatTracker
from tests.ddpo.test_ddpo import make_learner


def rollout(learner, n=8, seed=0):
    steps = learner.act(torch.arange(n) % 10, generator=torch.Generator().manual_seed(seed))
    steps["reward"] = torch.zeros(steps.shape)
    steps["reward"][-1] = torch.arange(float(n)) ** 2
    return steps


@pytest.mark.parametrize("epochs,fraction,minibatches", [(2, 0.5, 2), (1, 0.75, 3)])
def test_each_step_sees_k_distinct_timesteps_of_every_sample_once_per_epoch(tiny_model, monkeypatch, epochs, fraction,
                                                                            minibatches):
    learner = make_learner(tiny_model, inner_epochs=epochs, timestep_fraction=fraction, num_minibatches=minibatches)
    steps = rollout(learner)
    T, N = steps.shape
    k = math.ceil(fraction * T)
    seen, losses = [], []
    param = next(learner.model.parameters())
    calls = {"step": 0}
    real_step = learner.optimizer.step

    def step(*a, **kw):
        calls["step"] += 1
        return real_step(*a, **kw)

    def loss(rows):
        seen.append((calls["step"], rows["prompt"].clone(), rows["timestep"].clone()))
        value = 0.1 * len(seen)
        losses.append(value)
        return param.sum() * 0 + value, {"train/approx_kl": torch.tensor(2.0 * len(seen))}

    monkeypatch.setattr(learner, "loss", loss)
    monkeypatch.setattr(learner.optimizer, "step", step)
    metrics = learner.update(steps)
    mb = max(N // minibatches, 1)
    per_epoch = math.ceil(N / mb)
    assert calls["step"] == epochs * per_epoch and len(seen) == epochs * per_epoch * k
    grid = steps["timestep"][:, 0]
    for e in range(epochs):
        covered = torch.zeros(N, dtype=torch.long)
        for s in range(e * per_epoch, (e + 1) * per_epoch):
            rows = [(p, t) for st, p, t in seen if st == s]
            assert len(rows) == k
            samples = rows[0][0]
            assert all(torch.equal(p, samples) for p, _ in rows)  # the same samples at each of the k timesteps
            times = torch.stack([t for _, t in rows])  # [k, B]
            for b in range(len(samples)):  # k distinct timesteps of the sample's own trajectory
                assert len(set(times[:, b].tolist())) == k and set(times[:, b].tolist()) <= set(grid.tolist())
            covered[samples] += 1
        assert covered.tolist() == [1] * N  # every sample once per epoch
    count = len(seen)
    assert metrics["loss/policy"] == pytest.approx(sum(losses) / count)
    assert metrics["train/approx_kl"] == pytest.approx(sum(2.0 * i for i in range(1, count + 1)) / count)
    rewards = torch.arange(float(N)) ** 2
    assert metrics["train/reward_mean"] == pytest.approx(float(rewards.mean()))
    assert metrics["train/reward_std"] == pytest.approx(float(rewards.std()))
    z = ((rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-6)).clamp(-5, 5)  # 1 reward per prompt: batch stats
    assert metrics["train/adv_abs_mean"] == pytest.approx(float(z.abs().mean()), rel=1e-5)
    assert "train/grad_norm" in metrics


def test_gradients_accumulate_as_the_mean_over_the_chosen_timesteps(tiny_model, monkeypatch):
    learner = make_learner(tiny_model, timestep_fraction=0.5, num_minibatches=1, max_grad_norm=0.0)
    learner.optimizer = torch.optim.SGD(learner.model.parameters(), lr=1.0)  # the step is the gradient itself
    steps = rollout(learner)
    param = next(learner.model.parameters())
    before = param.detach().clone()
    n = {"calls": 0}

    def loss(rows):
        n["calls"] += 1
        return (param * n["calls"]).sum(), {}

    monkeypatch.setattr(learner, "loss", loss)
    metrics = learner.update(steps)
    assert n["calls"] == 2 and "train/grad_norm" not in metrics
    # k = 2 timesteps, losses 1 x sum and 2 x sum: the accumulated gradient is their mean, 1.5
    torch.testing.assert_close(param.detach(), before - 1.5)


def test_advantages_follow_the_reward_sign_with_per_prompt_tracking(tiny_model):
    learner = make_learner(tiny_model, stat_min_count=2, adv_clip_max=1.5)
    prompts = torch.tensor([3, 3, 3, 5, 5, 5, 5])
    rewards = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 0.0, 9.0])  # prompt 5's last z-score 1.73 is clipped
    adv = learner.advantages(prompts, rewards)
    for p in (3, 5):
        r = rewards[prompts == p]
        z = (r - r.mean()) / (r.std(unbiased=False) + 1e-6)
        torch.testing.assert_close(adv[prompts == p], z.clamp(-1.5, 1.5))
    assert adv[6] == 1.5 and adv[0] < 0 < adv[2]


def test_tracker_uses_each_prompts_history_and_the_batch_for_rare_prompts():
    tracker = PerPromptStatTracker(buffer_size=4, min_count=3)
    tracker(torch.tensor([0, 0, 0]), torch.tensor([0.0, 2.0, 4.0]))
    adv = tracker(torch.tensor([0, 0, 1]), torch.tensor([6.0, 8.0, 100.0]))
    hist = torch.tensor([2.0, 4.0, 6.0, 8.0])  # prompt 0: its last 4 rewards (mean 5, population std sqrt 5)
    z0 = (torch.tensor([6.0, 8.0]) - 5.0) / (hist.std(unbiased=False) + 1e-6)
    batch = torch.tensor([6.0, 8.0, 100.0])  # prompt 1 has 1 reward < min_count: the batch statistics
    z1 = (100.0 - batch.mean()) / (batch.std(unbiased=False) + 1e-6)
    torch.testing.assert_close(adv, torch.cat([z0, z1[None]]))
    assert tracker.buffers[0].tolist() == hist.tolist() and tracker.buffers[1].tolist() == [100.0]
    # unsorted prompts map back to their own statistics
    again = tracker(torch.tensor([1, 0]), torch.tensor([100.0, 5.0]))
    assert float(again[1]) < 0  # 5 is below the mean of prompt 0's last 4 rewards (4, 6, 8, 5: 5.75)


def test_sf_variant_reports_the_k3_kl_of_the_stored_log_probs(tiny_model, monkeypatch):
    learner = make_learner(tiny_model, variant="sf", num_minibatches=1)
    old = torch.tensor([-1.0, -2.0])
    new = torch.tensor([-1.2, -1.5])
    monkeypatch.setattr(learner, "step_log_prob", lambda rows, model=None: new)
    _, info = learner.loss({"logp": old, "adv": torch.ones(2)})
    lr = new - old
    assert float(info["train/approx_kl"]) == pytest.approx(float(((lr.exp() - 1) - lr).mean()))


def test_step_log_prob_uses_the_configured_eta_guidance_reduction_and_clipping(tiny_model):
    from rlx.models.diffusion import ddim_step

    cfg = dict(eta=0.7, guidance_scale=2.0, logp_reduction="sum", clip_sample=True)
    learner = make_learner(tiny_model, **cfg)
    rows = rollout(learner, n=4).reshape(-1)
    got = learner.step_log_prob(rows)
    args = (learner.model, learner.schedule, rows["obs"], rows["timestep"], rows["prev_timestep"], rows["prompt"])
    _, want = ddim_step(*args, 0.7, 2.0, prev_sample=rows["action"], reduction="sum", clip_sample=True)
    torch.testing.assert_close(got, want)
    # each setting matters on these rows: dropping any one of them changes the log-density
    for change in (dict(eta=1.0), dict(guidance_scale=1.0), dict(reduction="mean"), dict(clip_sample=False)):
        kw = {"eta": 0.7, "guidance_scale": 2.0, "reduction": "sum", "clip_sample": True, **change}
        _, other = ddim_step(*args, kw.pop("eta"), kw.pop("guidance_scale"), prev_sample=rows["action"], **kw)
        assert not torch.allclose(got, other), change


def test_batch_advantages_keep_their_sign_at_a_tiny_spread_and_clip_on_both_sides(tiny_model):
    learner = make_learner(tiny_model, per_prompt_stat_tracking=False, adv_clip_max=2.0)
    tiny = learner.advantages(torch.zeros(2, dtype=torch.long), torch.tensor([0.0, 1e-7]))
    # std 5e-8: (r - mean) / (std + 1e-6) = -+0.0476, the sign of r - mean and below 1 in size
    torch.testing.assert_close(tiny, torch.tensor([-5e-8, 5e-8]) / (5e-8 + 1e-6))
    # -100, 8 zeros, 100: std sqrt(2000) = 44.7, so the ends are -+2.24 before the clip at 2
    wide = learner.advantages(torch.zeros(10, dtype=torch.long), torch.tensor([-100.0] + [0.0] * 8 + [100.0]))
    assert wide[0] == -2.0 and wide[-1] == 2.0 and wide[1:9].abs().max() < 1e-6
