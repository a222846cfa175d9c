"""CPPO's pieces: the retention loss, the five-way classification, heuristic and learned weights."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlx.algos.cppo import (CPPO, Category, CPPOConfig, classify_samples, heuristic_weights, learned_weights,
                            retention_loss)
from rlx.algos.rlhf import RLHF, masked_whiten
from rlx.models.transformer import LMConfig, TransformerLM, response_logprobs

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


# |z_r| != |z_p| on every corner sample, so the two mappings give different weights
REWARD2 = torch.tensor([2.5, -1.2, 1.2, -2.5, 0.3, -0.3, 0.0, 0.0])  # z_r = +-1.68 or +-0.80 on the corners
GEN_LOGP2 = torch.tensor([1.2, 2.5, -2.5, -1.2, 0.0, 0.0, 0.3, -0.3])  # z_p = +-0.80 where z_r is +-1.68 and vice versa


def _z(x):
    return (x - x.mean()) / x.std()


def test_paper_weighting_drives_alpha_by_probability_and_beta_by_reward():
    k, lb, ub = 0.5, 0.1, 4.0
    zr, zp = _z(REWARD2), _z(GEN_LOGP2)
    assert torch.all((zr[:4].abs() - zp[:4].abs()).abs() > 0.5)
    alpha, beta, cat = heuristic_weights(REWARD2, GEN_LOGP2, k, lb, ub)  # default: weighting="paper"
    assert cat[:4].tolist() == EXPECTED[:4]
    up = lambda z: float((1 + z.abs() - k).clamp(1, ub))  # noqa: E731
    down = lambda z: float((1 - (z.abs() - k)).clamp(lb, 1))  # noqa: E731
    hp, of, hv, noisy = 0, 1, 2, 3
    expected_alpha = [up(zp[hp]), up(zp[of]), up(zp[hv]), down(zp[noisy])]
    expected_beta = [up(zr[hp]), down(zr[of]), down(zr[hv]), down(zr[noisy])]
    torch.testing.assert_close(alpha[:4], torch.tensor(expected_alpha))
    torch.testing.assert_close(beta[:4], torch.tensor(expected_beta))
    swapped_alpha, swapped_beta, _ = heuristic_weights(REWARD2, GEN_LOGP2, k, lb, ub, weighting="swapped")
    torch.testing.assert_close(swapped_alpha[:4], torch.tensor([up(zr[hp]), up(zr[of]), up(zr[hv]), down(zr[noisy])]))
    assert torch.all((swapped_alpha[:4] - alpha[:4]).abs() > 0.3) and torch.all((swapped_beta[:4] - beta[:4]).abs() > 0.3)


def test_the_learner_uses_the_paper_mapping_by_default():
    assert CPPOConfig().weighting == "paper" and CPPOConfig().anchor == "prev_task"


def _brute_force(s, lo, hi, tau):
    grid = torch.linspace(lo, hi, 20001)
    return float(grid[(grid * s - tau * (grid - 1) ** 2).argmax()])


@pytest.mark.parametrize("weighting", ["paper", "swapped"])
def test_learned_weights_solve_the_per_batch_coefficient_problem(weighting):
    g = torch.Generator().manual_seed(0)
    reward = torch.cat([REWARD2[:4], torch.randn(40, generator=g)])
    logp = torch.cat([GEN_LOGP2[:4], torch.randn(40, generator=g)])
    k, lb, ub, tau = 0.5, 0.5, 2.0, 0.8
    alpha, beta = learned_weights(reward, logp, k, lb, ub, tau, weighting=weighting)
    zr, zp = _z(reward), _z(logp)
    s_alpha, s_beta = (zp, zr) if weighting == "paper" else (zr, zp)
    cat = classify_samples(reward, logp, k)
    signs = {Category.HIGH_PERFORMANCE: (1, 1), Category.OVERFITTING: (1, -1), Category.HIGH_VARIANCE: (1, -1),
             Category.NOISY: (-1, -1), Category.NORMAL: (0, 0)}
    for i in range(len(reward)):
        da, db = signs[int(cat[i])]
        for w, s, d in ((alpha[i], s_alpha[i], da), (beta[i], s_beta[i], db)):
            lo, hi = (1.0 if d > 0 else lb), (1.0 if d < 0 else ub)  # Table 1 ordering as an interval
            assert abs(float(w) - _brute_force(float(s), lo, hi, tau)) < 1e-3
    # the corners follow Table 1 (a weight whose score points against its category's direction stays
    # at 1); normal samples move only as far as the regulariser lets them
    assert alpha[0] > 1 and beta[0] > 1 and alpha[1] >= 1 and beta[1] <= 1 and alpha[2] >= 1 and beta[2] <= 1
    assert alpha[3] < 1 and beta[3] < 1
    assert torch.any((alpha[cat == Category.NORMAL] - 1).abs() > 0.05)
    other, _ = learned_weights(reward, logp, k, lb, ub, tau, weighting="swapped" if weighting == "paper" else "paper")
    assert not torch.allclose(alpha, other)


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
    from rlx.models.transformer import response_logprobs

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
                                       ({"overfitting": "maybe"}, "algo.overfitting"),
                                       ({"weighting": "reward"}, "algo.weighting='reward'"),
                                       ({"anchor": "sft"}, "algo.anchor='sft'")])
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
    expected = {"heuristic": "loss/retention", "learned": "train/alpha_mean", "l2": "loss/l2_prev"}
    if retention in expected:
        assert expected[retention] in metrics


def _retaining_learner(perturb=0.2, **kw):
    """A learner on its second task whose policy has moved away from pi_{t-1}, and a rollout of it."""
    learner = _learner(**kw)
    learner.start_task()
    with torch.no_grad():
        for p in learner.policy.parameters():
            p.add_(perturb * torch.randn_like(p))
    batch = learner.rollout(torch.randint(4, 12, (16, 3)), lambda p, r, m: (r == 5).float().sum(1))
    seqs = batch.transpose(0, 1)
    seqs["adv"] = torch.zeros_like(seqs["adv"])
    learner.prepare(seqs)
    from rlx.models.transformer import response_logprobs

    logp, value, logits = response_logprobs(learner.policy, seqs["obs"][:, 0], seqs["action"])
    return learner, seqs, logp, value, logits


@pytest.mark.parametrize("anchor", ["prev_task", "rollout"])
def test_retention_anchor(anchor):
    learner, seqs, logp, value, logits = _retaining_learner(anchor=anchor)
    m = seqs["mask"]
    assert (seqs["logp"][m] - seqs["prev_logp"][m]).abs().max() > 0.05  # pi_{t-1} differs from the sampling policy
    _, info = learner.loss(seqs, logp, value, logits)
    target = seqs["prev_logp"] if anchor == "prev_task" else seqs["logp"]
    torch.testing.assert_close(info["loss/retention"], retention_loss(logp, target, m, seqs["beta"]))
    if anchor == "rollout":  # at the rollout-time policy there is nothing to retain yet
        assert float(info["loss/retention"]) < 1e-8
    else:
        assert float(info["loss/retention"]) > 1e-3


def test_retention_term_is_weighted_by_beta():
    learner, seqs, logp, value, logits = _retaining_learner(retention_coef=5.0)
    loss, info = learner.loss(seqs, logp, value, logits)
    assert float(info["loss/retention"]) > 1e-3
    seqs["beta"] = torch.zeros_like(seqs["beta"])
    loss0, info0 = learner.loss(seqs, logp, value, logits)
    assert float(info0["loss/retention"]) == 0
    base, _ = RLHF.loss(learner, seqs, logp, value, logits)  # beta = 0: exactly the weighted PPO loss
    torch.testing.assert_close(loss0, base)
    torch.testing.assert_close(loss - loss0, 5.0 * info["loss/retention"])


def test_kl_baseline_adds_the_per_token_penalty_to_pi_prev():
    kl, seqs, *_ = _retaining_learner(retention="kl", retention_coef=0.3, kl_coef=0.0)
    m = seqs["mask"]
    plain = RLHF.token_rewards(kl, seqs["score"][:, 0], seqs)
    torch.testing.assert_close(seqs["reward"], plain - 0.3 * (seqs["logp"] - seqs["prev_logp"]) * m)
    assert (seqs["reward"] - plain)[m].abs().max() > 1e-3


def test_l2_baseline_penalises_the_distance_to_theta_prev():
    learner, seqs, logp, value, logits = _retaining_learner(retention="l2", retention_coef=0.7)
    loss, info = learner.loss(seqs, logp, value, logits)
    dist = sum(((p - q) ** 2).sum() for p, q in zip(learner.policy.parameters(), learner.prev_params))
    assert float(dist.detach()) > 1.0
    base, _ = RLHF.loss(learner, seqs, logp, value, logits)
    torch.testing.assert_close(loss - base, 0.7 * dist)
    torch.testing.assert_close(info["loss/l2_prev"], dist.detach())
