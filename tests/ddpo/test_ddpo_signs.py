"""DDPO's advantage and loss signs on hand-made numbers: a higher reward gives a larger advantage,
the update feeds each sample's advantage to all of its steps, and both losses raise the
log-probability of positive-advantage samples (gradient -A / B at ratio 1)."""

import pytest
import torch

from tests.ddpo.test_ddpo import make_learner


def test_advantages_are_standardized_rewards_with_their_sign_and_clip(tiny_model):
    learner = make_learner(tiny_model, per_prompt_stat_tracking=False, adv_clip_max=1.0)
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0])
    adv = learner.advantages(torch.zeros(4, dtype=torch.long), rewards)
    z = (rewards - rewards.mean()) / rewards.std(unbiased=False)
    torch.testing.assert_close(adv, z.clamp(-1.0, 1.0), atol=1e-5, rtol=0)
    assert adv[-1] == 1.0 and adv[0] < adv[1] < 0 < adv[3]


@pytest.mark.parametrize("variant", ["is", "sf"])
def test_loss_gradient_raises_the_log_prob_of_positive_advantages(tiny_model, variant, monkeypatch):
    learner = make_learner(tiny_model, variant=variant, **({"num_minibatches": 1} if variant == "sf" else {}))
    old = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    adv = torch.tensor([2.0, -1.0, 0.5, 0.0])
    logp = old.clone().requires_grad_(True)  # the current policy's log-probs, equal to the sampling ones
    monkeypatch.setattr(learner, "step_log_prob", lambda rows, model=None: logp)
    loss, _ = learner.loss({"logp": old, "adv": adv})
    (g,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(g, -adv / 4)  # descending the loss raises log pi where A > 0
    assert float(loss.detach()) == pytest.approx(float(-(adv * (1.0 if variant == "is" else old)).mean()))


def test_update_gives_every_step_its_sample_advantage(tiny_model, monkeypatch):
    learner = make_learner(tiny_model, num_minibatches=2)  # per-prompt tracking: 1 reward per prompt -> batch stats
    steps = learner.act(torch.arange(8) % 10, generator=torch.Generator().manual_seed(0))
    rewards = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    steps["reward"] = torch.zeros(steps.shape)
    steps["reward"][-1] = rewards
    expected = (rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-6)
    seen = []
    param = next(learner.model.parameters())

    def loss(rows):
        seen.append((rows["prompt"].clone(), rows["adv"].clone()))
        return param.sum() * 0, {}

    monkeypatch.setattr(learner, "loss", loss)
    learner.update(steps)
    assert len(seen) == 2 * 4  # 2 minibatches x 4 timesteps
    for prompt, adv in seen:  # prompt n is sample n here
        torch.testing.assert_close(adv, expected[prompt])
