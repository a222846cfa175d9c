"""CPPO's pieces: the retention loss, the five-way classification, heuristic and learned weights."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlx.algos.cppo import (CPPO, Category, CPPOConfig, classify_samples, heuristic_weights, learned_weights,
                            retention_loss)
from rlx.algos.rlhf import masked_whiten
from rlx.core.transformer import LMConfig, TransformerLM, response_logprobs

# z-scores are taken over the batch; these hand-made batches put one sample in each corner
# and two at the centre: mean 0, and the corner samples sit far beyond k = 0.5 std.
REWARD = torch.tensor([3.0, -3.0, 3.0, -3.0, 0.0, 0.0, 0.1, -0.1])
GEN_LOGP = torch.tensor([3.0, 3.0, -3.0, -3.0, 0.0, 0.0, -0.1, 0.1])
EXPECTED = [Category.HIGH_PERFORMANCE, Category.OVERFITTING, Category.HIGH_VARIANCE, Category.NOISY,
            Category.NORMAL, Category.NORMAL, Category.NORMAL, Category.NORMAL]


def test_hand_made_samples_land_in_their_category():
    assert classify_samples(REWARD, GEN_LOGP, k=0.5).tolist() == EXPECTED


def test_only_reward_extreme_is_normal():
    # high reward but average probability: not one of the four corners
    cat = classify_samples(torch.tensor([5.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, -1.0, 0.0]), k=0.5)
    assert cat[0] == Category.NORMAL


@pytest.mark.parametrize("overfitting", ["learn", "ignore"])
def test_heuristic_weight_directions(overfitting):
    alpha, beta, cat = heuristic_weights(REWARD, GEN_LOGP, k=0.5, lb=0.5, ub=2.0, overfitting=overfitting)
    assert cat.tolist() == EXPECTED
    hp, of, hv, noisy = 0, 1, 2, 3
    assert alpha[hp] > 1 and beta[hp] > 1
    assert (alpha[of] > 1 if overfitting == "learn" else alpha[of] < 1) and beta[of] < 1
    assert alpha[hv] > 1 and beta[hv] < 1
    assert alpha[noisy] < 1 and beta[noisy] < 1
    assert torch.all(alpha[4:] == 1) and torch.all(beta[4:] == 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-50, 50), st.floats(-50, 50)), min_size=2, max_size=40),
       st.floats(0.0, 2.0), st.floats(0.05, 1.0), st.floats(1.0, 4.0))
def test_heuristic_weights_are_one_on_normal_samples_and_within_bounds(pairs, k, lb, ub):
    reward = torch.tensor([p[0] for p in pairs])
    logp = torch.tensor([p[1] for p in pairs])
    alpha, beta, cat = heuristic_weights(reward, logp, k, lb, ub)
    normal = cat == Category.NORMAL
    assert torch.all(alpha[normal] == 1) and torch.all(beta[normal] == 1)
    for w in (alpha, beta):
        assert torch.all(w >= lb - 1e-6) and torch.all(w <= ub + 1e-6)


def test_learned_weights_follow_the_table_and_respect_bounds_and_budget():
    g = torch.Generator().manual_seed(0)
    reward = torch.cat([REWARD[:4], torch.randn(60, generator=g) * 0.3])
    logp = torch.cat([GEN_LOGP[:4], torch.randn(60, generator=g) * 0.3])
    alpha, beta, lam = learned_weights(reward, logp, lb=0.5, ub=2.0, budget=0.1, multiplier=1.0, steps=200, lr=0.1)
    assert torch.all(alpha >= 0.5) and torch.all(alpha <= 2.0) and torch.all(beta >= 0.5) and torch.all(beta <= 2.0)
    assert alpha[0] > 1 and beta[0] > 1  # high-performance
    assert alpha[1] > 1 and beta[1] < 1  # overfitting (learn)
    assert alpha[2] > 1 and beta[2] < 1  # high-variance
    assert alpha[3] < 1 and beta[3] < 1  # noisy
    deviation = float(((alpha - 1) ** 2 + (beta - 1) ** 2).mean())
    assert deviation < 0.2 and lam >= 0  # the Lagrange multiplier holds the deviation near its budget


def test_retention_loss_is_zero_when_policies_match_and_positive_otherwise():
    logp = torch.randn(4, 6)
    mask = torch.rand(4, 6) > 0.3
    beta = torch.rand(4, 6) + 0.5
    assert retention_loss(logp, logp.clone(), mask, beta) == 0
    assert retention_loss(logp, logp + 0.1, mask, beta) > 0
    # padding does not count
    other = logp.clone()
    other[~mask] += 5
    assert retention_loss(logp, other, mask) == 0


def _learner(retention="heuristic", **kw):
    torch.manual_seed(0)
    policy = TransformerLM(LMConfig(vocab_size=12, block_size=12, d_model=32))
    return CPPO(CPPOConfig(retention=retention, batch_size=16, **kw), policy, eos_id=3, pad_id=0, response_len=6)


def test_retention_term_vanishes_for_an_unchanged_policy_in_the_learner():
    learner = _learner()
    assert not learner.retaining  # first task: the reference KL anchors to the SFT policy
    learner.start_task()  # second task: prev = the policy as it is now
    assert learner.retaining
    prompt = torch.randint(4, 12, (16, 3))
    batch = learner.rollout(prompt, lambda p, r, m: r.float().mean(1))
    m = batch["mask"]
    torch.testing.assert_close(batch["prev_logp"][m], batch["logp"][m], atol=1e-5, rtol=1e-5)
    seqs = batch.transpose(0, 1)
    learner.prepare(seqs)
    from rlx.core.transformer import response_logprobs

    logp, value, logits = response_logprobs(learner.policy, seqs["obs"][:, 0], seqs["action"])
    _, info = learner.loss(seqs, logp, value, logits)
    assert float(info["loss/retention"]) < 1e-9


def test_rollout_is_time_major_with_terminal_rewards_and_masked_padding():
    learner = _learner(retention="none", kl_coef=0.0)
    prompt = torch.randint(4, 12, (16, 3))
    batch = learner.rollout(prompt, lambda p, r, m: torch.arange(16.0))
    assert batch.batch_size == torch.Size([6, 16])  # [T, N]
    m = batch["mask"]
    last = m.sum(0) - 1
    # kl_coef = 0: the whole reward is the score on the last valid token
    torch.testing.assert_close(batch["reward"].sum(0), torch.arange(16.0))
    assert torch.all(batch["reward"][last, torch.arange(16)] == torch.arange(16.0))
    assert torch.all(batch["terminated"][last, torch.arange(16)])
    assert torch.all(batch["adv"][~m] == 0)
    # gamma = 1, lambda = 0.95: the return of the first token is the score when values were exact;
    # with any values, ret = adv + value holds
    torch.testing.assert_close(batch["ret"], batch["adv"] + batch["value"])


@pytest.mark.parametrize("bad,match", [({"retention": "ewc"}, "algo.retention='ewc'"),
                                       ({"lb": 1.5}, "0 < lb <= 1 <= ub"),
                                       ({"overfitting": "maybe"}, "algo.overfitting")])
def test_bad_settings_are_one_line_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        _learner(**bad)


@pytest.mark.parametrize("retention", ["none", "kl", "l2", "heuristic", "learned"])
def test_every_variant_updates_and_reports_namespaced_metrics(retention):
    learner = _learner(retention=retention)
    learner.start_task()
    batch = learner.rollout(torch.randint(4, 12, (16, 3)), lambda p, r, m: (r == 5).float().sum(1))
    seqs = batch.transpose(0, 1).clone()
    m = seqs["mask"]
    old_logp = response_logprobs(learner.policy, seqs["obs"][:, 0], seqs["action"])[0].detach()
    metrics = learner.update(batch)
    assert all("/" in k for k in metrics)
    # the update raised the log-probs of positive-advantage tokens relative to negative ones (the
    # first-order PPO improvement; every variant's alpha weights are positive)
    new_logp = response_logprobs(learner.policy, seqs["obs"][:, 0], seqs["action"])[0].detach()
    adv = masked_whiten(seqs["adv"], m)
    assert float(((new_logp - old_logp) * adv)[m].mean()) > 0
    expected = {"heuristic": "loss/retention", "learned": "train/lagrange_multiplier", "l2": "loss/l2_prev"}
    if retention in expected:
        assert expected[retention] in metrics
