"""DDPO's update replayed exactly: the (sample, timestep) row of every loss call from the global
RNG's permutation and timestep draw (one timestep, one-sample minibatches), the clipping and the
mean pre-clip gradient norm, the per-prompt tracker at exactly `min_count` rewards and a tiny
spread, and `loss` through the real step log-probabilities."""

import math

import pytest
import torch

from rlx.algos.ddpo import PerPromptStatTracker, score_function_loss
from tests.ddpo.test_ddpo import make_learner
from tests.ddpo.test_update_rules import rollout


def test_update_rows_replay_the_permutation_and_timestep_draw(tiny_model, monkeypatch):
    # T = 4, fraction 1/4: k = ceil(1) = 1 timestep per sample; 8 minibatches of N // 8 = 1 sample
    learner = make_learner(tiny_model, inner_epochs=1, timestep_fraction=0.25, num_minibatches=8)
    steps = rollout(learner)
    T, N = steps.shape
    seen = []
    param = next(learner.model.parameters())

    def loss(rows):
        seen.append((rows["prompt"].tolist(), rows["timestep"].tolist()))
        return param.sum() * 0, {}

    monkeypatch.setattr(learner, "loss", loss)
    torch.manual_seed(5)
    learner.update(steps)
    torch.manual_seed(5)
    order = torch.randperm(N)
    chosen = torch.argsort(torch.rand(N, T), dim=1)[:, :1]
    grid = steps["timestep"][:, 0]
    expected = [([int(n)], [int(grid[chosen[n, 0]])]) for n in order]  # prompt n is sample n here (n < 10)
    assert seen == expected


def test_clipping_uses_max_grad_norm_and_reports_the_mean_pre_clip_norm(tiny_model, monkeypatch):
    learner = make_learner(tiny_model, inner_epochs=1, timestep_fraction=0.5, num_minibatches=2, max_grad_norm=1e-3)
    params = list(learner.model.parameters())
    learner.optimizer = torch.optim.SGD(params, lr=1.0)  # the step is the (clipped) gradient itself
    size = sum(p.numel() for p in params)

    def loss(rows):  # gradient 1 for every parameter: each minibatch accumulates k pieces of 1 / k
        return sum(p.sum() for p in params), {}

    monkeypatch.setattr(learner, "loss", loss)
    before = torch.cat([p.detach().flatten().clone() for p in params])
    metrics = learner.update(rollout(learner))
    after = torch.cat([p.detach().flatten() for p in params])
    assert metrics["train/grad_norm"] == pytest.approx(math.sqrt(size), rel=1e-5)  # mean over the 2 steps
    # two steps of the all-ones gradient scaled to norm 1e-3: the parameters moved by 2e-3 in total, all alike
    # (float32 parameters round each tiny step, hence the loose tolerances)
    moved = (before - after).double()
    assert float(moved.norm()) == pytest.approx(2e-3, rel=1e-2)
    assert float(moved.mean()) == pytest.approx(2e-3 / math.sqrt(size), rel=1e-2)


def test_tracker_at_exactly_min_count_uses_the_prompts_own_tiny_spread():
    tracker = PerPromptStatTracker(buffer_size=8, min_count=2)
    adv = tracker(torch.tensor([0, 0, 1]), torch.tensor([0.0, 1e-6, 5.0]))
    # prompt 0 has min_count rewards: its own mean 5e-7 and std 5e-7, (r - mean) / (std + 1e-6) = -+1/3
    assert adv[:2].tolist() == pytest.approx([-1 / 3, 1 / 3], rel=1e-3)
    # prompt 1 has one reward: the batch statistics
    r = torch.tensor([0.0, 1e-6, 5.0])
    assert float(adv[2]) == pytest.approx(float((5.0 - r.mean()) / (r.std(unbiased=False) + 1e-6)), rel=1e-5)


@pytest.mark.parametrize("variant", ["is", "sf"])
def test_loss_reads_the_rows_log_probs_under_the_current_model(tiny_model, variant):
    learner = make_learner(tiny_model, variant=variant)
    steps = learner.act(torch.arange(8) % 10, generator=torch.Generator().manual_seed(0))
    rows = steps[2].clone()
    rows["adv"] = torch.linspace(-1.0, 1.0, 8)
    with torch.no_grad():
        next(learner.model.parameters()).mul_(1.01)  # the model moved since sampling: the ratio is not 1
    loss, info = learner.loss(rows)
    logp = learner.step_log_prob(rows)
    if variant == "is":
        ratio = (logp - rows["logp"]).exp()
        expected = torch.max(-rows["adv"] * ratio, -rows["adv"] * ratio.clamp(1 - learner.clip, 1 + learner.clip)).mean()
    else:
        expected = score_function_loss(logp, rows["adv"])
        log_ratio = logp - rows["logp"]
        assert float(info["train/approx_kl"]) == pytest.approx(float(((log_ratio.exp() - 1) - log_ratio).mean()), abs=1e-7)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5, abs=1e-7)
    assert not torch.allclose(logp, rows["logp"])
