"""RLHF's (and so CPPO's) rollout, loss and update on small hand-checked cases: the adaptive KL
coefficient, the rollout's masks, next values and padding, the masked entropy and per-sample
weights in the loss, and the metrics of an update. CPPO's weight plumbing into the loss."""

import pytest
import torch

from rlx.algos.cppo import CPPO, CPPOConfig, heuristic_weights, learned_weights, retention_loss
from rlx.algos.ppo import clipped_surrogate, value_loss
from rlx.algos.rlhf import RLHF, RLHFConfig, masked_mean, masked_whiten
from rlx.models.transformer import LMConfig, TransformerLM, response_logprobs

VOCAB, EOS, PAD, T = 8, 1, 0, 4


def make(cls=RLHF, cfg_cls=RLHFConfig, **kw):
    torch.manual_seed(0)
    policy = TransformerLM(LMConfig(vocab_size=VOCAB, block_size=2 + T, n_layer=1, n_head=1, d_model=16))
    cfg = cfg_cls(**{"batch_size": 8, "num_minibatches": 2, "update_epochs": 2, "lr": 3e-3, **kw})
    return cls(cfg, policy, EOS, PAD, T)


def score(p, y, m):
    return (y == 5).float().sum(1)


def test_adaptive_kl_coefficient_follows_ziegler_with_a_clipped_error():
    learner = make(kl_coef=0.1, kl_target=2.0, kl_horizon=100)
    for kl, factor in ((3.0, 1 + 0.2 * 10 / 100), (2.2, 1 + 0.1 * 10 / 100), (0.0, 1 - 0.2 * 10 / 100),
                       (1.9, 1 - 0.05 * 10 / 100)):
        before = learner.kl_coef
        learner._adapt_kl(kl, 10)
        assert learner.kl_coef == pytest.approx(before * factor)
    fixed = make(kl_coef=0.1)
    fixed._adapt_kl(50.0, 10)
    assert fixed.kl_coef == 0.1


def test_rollout_masks_padding_bootstraps_from_the_next_token_and_adapts_kl():
    learner = make(kl_coef=0.3, kl_target=0.5, kl_horizon=50)
    with torch.no_grad():  # the policy differs from the reference: a nonzero KL
        for p in learner.policy.parameters():
            p.add_(0.2 * torch.randn_like(p))
    prompt = torch.randint(2, 8, (8, 2))
    coef = learner.kl_coef
    batch = learner.rollout(prompt, score, torch.Generator().manual_seed(1))
    assert batch.shape == (T, 8)
    seqs = batch.transpose(0, 1)
    m = seqs["mask"]
    assert (~m).any() and m[:, 0].all()  # some responses end early (<eos>), every one has a first token
    ref = response_logprobs(learner.ref, prompt, seqs["action"])[0]
    torch.testing.assert_close(seqs["ref_logp"], torch.where(m, ref, 0.0))
    assert (seqs["prev_logp"][~m] == 0).all()
    torch.testing.assert_close(seqs["next_value"][:, :-1], seqs["value"][:, 1:])
    assert (seqs["next_value"][:, -1] == 0).all() and not seqs["truncated"].any()
    last = m.sum(1) - 1
    steps = torch.arange(T)[None]
    torch.testing.assert_close(seqs["terminated"], ~m | (steps == last[:, None]))
    torch.testing.assert_close(seqs["score"], score(prompt, seqs["action"], m)[:, None].expand(8, T))
    torch.testing.assert_close(seqs["obs"], prompt[:, None, :].expand(8, T, 2))
    kl = float(((seqs["logp"] - seqs["ref_logp"]) * m).sum(1).mean())
    error = max(min(kl / 0.5 - 1, 0.2), -0.2)
    assert learner.kl_coef == pytest.approx(coef * (1 + error * 8 / 50))


def test_loss_is_weighted_surrogate_plus_value_minus_masked_entropy():
    learner = make(vf_coef=0.7, ent_coef=0.05, clip_coef=0.2)
    batch = learner.rollout(torch.randint(2, 8, (8, 2)), score, torch.Generator().manual_seed(2))
    seqs = batch.transpose(0, 1).clone()
    m = seqs["mask"]
    seqs["adv"] = torch.linspace(-1, 1, 8 * T).reshape(8, T)
    logp, value, logits = response_logprobs(learner.policy, seqs["obs"][:, 0], seqs["action"])
    logp = logp + 0.05 * torch.arange(T)  # ratios away from 1
    value = value + 0.5
    lp = torch.log_softmax(logits, -1)
    entropy = -(lp.exp() * lp).sum(-1)[m].mean()
    for weight in (None, torch.rand(8, 1).expand(8, T)):
        if weight is not None:
            seqs["alpha"] = weight
        loss, info = learner.loss(seqs, logp, value, logits)
        pg, _ = clipped_surrogate(logp[m], seqs["logp"][m], seqs["adv"][m], 0.2, None if weight is None else weight[m])
        vl = value_loss(value[m], seqs["value"][m], seqs["ret"][m], 0.2)
        torch.testing.assert_close(info["loss/entropy"], entropy.detach())
        torch.testing.assert_close(loss, pg + 0.7 * vl - 0.05 * entropy)
    unclipped = make(clip_vloss=False, vf_coef=1.0, ent_coef=0.0)
    _, info = unclipped.loss(seqs, logp, value, logits)
    torch.testing.assert_close(info["loss/value"], (0.5 * (value[m] - seqs["ret"][m]).pow(2).mean()).detach())


def test_update_whitens_advantages_over_valid_tokens_and_reports_sequence_metrics():
    learner = make(kl_coef=0.2, num_minibatches=2, update_epochs=3, temperature=0.7)
    learner.start_task()
    with torch.no_grad():  # the policy moves away from the reference and pi_prev: nonzero KLs
        for p in learner.policy.parameters():
            p.add_(0.2 * torch.randn_like(p))
    batch = learner.rollout(torch.randint(2, 8, (8, 2)), score, torch.Generator().manual_seed(3))
    seqs = batch.transpose(0, 1).clone()
    m = seqs["mask"]
    seen = []
    real = learner.loss

    values, ratios = [], []

    def loss(mb, logp, *a):
        seen.append((mb.shape[0], mb["adv"].clone(), mb["mask"].clone()))
        ratios.append(float((logp.detach() - mb["logp"])[mb["mask"]].abs().max()))
        out = real(mb, logp, *a)
        values.append(float(out[1]["loss/policy"]))
        return out

    learner.loss = loss
    metrics = learner.update(batch)
    assert [s for s, _, _ in seen] == [4] * 6  # 8 sequences / 2 minibatches, 3 epochs
    assert ratios[0] < 1e-4  # before the first step the policy is the sampler, at the sampling temperature
    assert metrics["loss/policy"] == pytest.approx(sum(values) / 6)
    whitened = masked_whiten(seqs["adv"], m)
    adv = torch.cat([a[mm] for _, a, mm in seen[:2]])
    torch.testing.assert_close(adv.sort().values, whitened[m].sort().values)
    assert metrics["train/reward_mean"] == pytest.approx(float(seqs["score"][:, 0].mean()))
    assert metrics["train/kl_ref"] == pytest.approx(float(((seqs["logp"] - seqs["ref_logp"]) * m).sum(1).mean()))
    assert metrics["train/kl_prev"] == pytest.approx(float(((seqs["logp"] - seqs["prev_logp"]) * m).sum(1).mean()))
    assert abs(metrics["train/kl_ref"]) > 1e-3 and abs(metrics["train/kl_prev"]) > 1e-3
    assert metrics["train/kl_coef"] == 0.2
    assert metrics["train/response_length"] == pytest.approx(float(m.sum(1).float().mean()))
    assert {"loss/policy", "loss/value", "loss/entropy", "train/explained_variance"} <= set(metrics)


def test_masked_mean_counts_only_valid_entries_and_survives_an_empty_mask():
    x = torch.tensor([[2.0, 4.0, 9.0]])
    assert float(masked_mean(x, torch.tensor([[True, True, False]]))) == pytest.approx(3.0)
    assert float(masked_mean(x, torch.tensor([[False, False, True]]))) == pytest.approx(9.0)
    out = masked_whiten(torch.tensor([[0.0, 2e-4]]), torch.tensor([[True, True]]))  # var 1e-8: +-1e-4 / sqrt(2e-8)
    torch.testing.assert_close(out, torch.tensor([[-1.0, 1.0]]) / 2**0.5, rtol=1e-3, atol=0)
    assert float(masked_mean(x, torch.zeros(1, 3, dtype=torch.bool))) == 0.0


@pytest.mark.parametrize("retention", ["heuristic", "learned"])
def test_cppo_prepare_broadcasts_each_sequences_weights_from_its_score_and_mean_log_prob(retention):
    learner = make(CPPO, CPPOConfig, retention=retention, k=0.3, lb=0.5, ub=2.0)
    learner.start_task()  # the second task: retention is on
    assert learner.retaining
    batch = learner.rollout(torch.randint(2, 8, (8, 2)), score, torch.Generator().manual_seed(4))
    seqs = batch.transpose(0, 1).clone()
    m = seqs["mask"]
    seqs["score"] = torch.linspace(-2, 2, 8)[:, None].expand(8, T).clone()  # distinct rewards
    learner.prepare(seqs)
    gen_logp = (seqs["logp"] * m).sum(1) / m.sum(1)
    reward = seqs["score"][:, 0]
    if retention == "heuristic":
        alpha, beta, _ = heuristic_weights(reward, gen_logp, 0.3, 0.5, 2.0)
    else:
        alpha, beta = learned_weights(reward, gen_logp, 0.3, 0.5, 2.0, 1.0)
    torch.testing.assert_close(seqs["alpha"], alpha[:, None].expand(8, T))
    torch.testing.assert_close(seqs["beta"], beta[:, None].expand(8, T))
    assert (alpha != 1).any() and (beta != 1).any()
    # the loss weights PPO's per-token terms by alpha and the retention term by beta
    logp, value, logits = response_logprobs(learner.policy, seqs["obs"][:, 0], seqs["action"])
    logp = logp + 0.1
    loss, info = learner.loss(seqs, logp, value, logits)
    torch.testing.assert_close(info["loss/retention"], retention_loss(logp, seqs["prev_logp"], m, seqs["beta"]).detach())
    base, _ = RLHF.loss(learner, seqs, logp, value, logits)
    torch.testing.assert_close(loss, base + 0.1 * info["loss/retention"])
    metrics = learner.update(batch)
    assert {"train/alpha_mean", "train/beta_mean", "train/share_normal"} <= set(metrics)


def test_cppo_first_task_and_plain_ppo_leave_the_loss_alone():
    first = make(CPPO, CPPOConfig, retention="heuristic")
    assert first.task_index == 0 and not first.retaining
    none = make(CPPO, CPPOConfig, retention="none")
    none.start_task()
    assert not none.retaining
    batch = first.rollout(torch.randint(2, 8, (8, 2)), score, torch.Generator().manual_seed(5))
    seqs = batch.transpose(0, 1).clone()
    first.prepare(seqs)
    assert "alpha" not in seqs.keys() and "beta" not in seqs.keys()
    metrics = first.update(batch)
    assert not any(k.startswith("train/share_") or k == "loss/retention" for k in metrics)


def test_zscores_hand_computed():
    from rlx.algos.cppo import zscores

    assert zscores(torch.tensor([3.0])).tolist() == [0.0]  # one sample: no spread, no score
    torch.testing.assert_close(zscores(torch.tensor([1.0, 3.0])), torch.tensor([-1.0, 1.0]) / 2**0.5)
    tiny = zscores(torch.tensor([0.0, 1e-8]))  # std 7.1e-9: +-5e-9 / (std + 1e-8) = -+0.29
    torch.testing.assert_close(tiny, torch.tensor([-5e-9, 5e-9]) / (7.0710678e-9 + 1e-8), rtol=1e-4, atol=0)


@pytest.mark.parametrize("side", [1.0, -1.0])
@pytest.mark.parametrize("at_k", ["reward", "logp"])
def test_categories_need_a_z_score_strictly_beyond_k(side, at_k):
    from rlx.algos.cppo import Category, classify_samples, zscores

    steady, extreme = side * torch.tensor([0.0, 1.0, 2.0, 3.0]), side * torch.tensor([0.0, 0.0, 0.0, 10.0])
    reward, logp = (steady, extreme) if at_k == "reward" else (extreme, steady)
    k = abs(float(zscores(steady)[3]))  # sample 3 sits exactly at +-k on one axis, beyond it on the other
    cat = classify_samples(reward, logp, k)
    assert cat.dtype == torch.long and int(cat[3]) == Category.NORMAL
    corner = Category.HIGH_PERFORMANCE if side > 0 else Category.NOISY
    assert int(classify_samples(reward, logp, 0.99 * k)[3]) == corner


def test_a_reward_near_the_mean_is_not_low_reward():
    from rlx.algos.cppo import Category, classify_samples

    # z_r = (0, 1, -1); z_p = (1.15, -0.58, -0.58): sample 0 has a high probability but an average reward
    cat = classify_samples(torch.tensor([0.0, 1.0, -1.0]), torch.tensor([2.0, -1.0, -1.0]), 0.5)
    assert cat.tolist() == [Category.NORMAL, Category.HIGH_VARIANCE, Category.NOISY]


def test_weight_defaults_are_the_paper_mapping_and_tau_one():
    from rlx.algos.cppo import weight_scores, zscores

    reward, logp = torch.tensor([3.0, -3.0, 3.0, -3.0, 0.0, 0.1]), torch.tensor([3.0, 3.0, -3.0, -3.0, 0.0, -0.2])
    s_alpha, s_beta = weight_scores(reward, logp)
    torch.testing.assert_close(s_alpha, zscores(logp))
    torch.testing.assert_close(s_beta, zscores(reward))
    for a, b in zip(learned_weights(reward, logp, 0.5, 0.5, 2.0), learned_weights(reward, logp, 0.5, 0.5, 2.0, 1.0,
                                                                                    "learn", "paper")):
        torch.testing.assert_close(a, b)
    for a, b in zip(heuristic_weights(reward, logp, 0.5, 0.5, 2.0), heuristic_weights(reward, logp, 0.5, 0.5, 2.0,
                                                                                      "learn", "paper")):
        torch.testing.assert_close(a, b)


def test_kl_to_pi_prev_only_for_the_kl_baseline_and_l2_only_when_retaining():
    heur = make(CPPO, CPPOConfig, retention="heuristic", retention_coef=0.5)
    heur.start_task()
    with torch.no_grad():  # pi moves away from pi_prev: a KL-to-pi_prev term would not vanish
        for p in heur.policy.parameters():
            p.add_(0.2 * torch.randn_like(p))
    batch = heur.rollout(torch.randint(2, 8, (8, 2)), score, torch.Generator().manual_seed(6))
    seqs = batch.transpose(0, 1)
    assert (seqs["logp"] - seqs["prev_logp"])[seqs["mask"]].abs().max() > 1e-3
    torch.testing.assert_close(heur.token_rewards(seqs["score"][:, 0], seqs), RLHF.token_rewards(heur, seqs["score"][:, 0], seqs))
    l2 = make(CPPO, CPPOConfig, retention="l2", retention_coef=0.7)  # first task: nothing to retain yet
    with torch.no_grad():
        for p in l2.policy.parameters():
            p.add_(0.1)
    logp, value, logits = response_logprobs(l2.policy, seqs["obs"][:, 0], seqs["action"])
    loss, info = l2.loss(seqs, logp, value, logits)
    torch.testing.assert_close(loss, RLHF.loss(l2, seqs, logp, value, logits)[0])
    assert "loss/l2_prev" not in info


@pytest.mark.parametrize("retention", ["heuristic", "learned"])
@pytest.mark.parametrize("weighting", ["paper", "swapped"])
def test_cppo_prepare_passes_the_weighting_and_reports_category_shares(weighting, retention):
    from rlx.algos.cppo import Category, classify_samples

    learner = make(CPPO, CPPOConfig, retention=retention, weighting=weighting, k=0.3)
    learner.start_task()
    batch = learner.rollout(torch.randint(2, 8, (8, 2)), score, torch.Generator().manual_seed(7))
    seqs = batch.transpose(0, 1).clone()
    m = seqs["mask"]
    seqs["score"] = torch.linspace(-2, 2, 8)[:, None].expand(8, T).clone()
    learner.prepare(seqs)
    gen_logp = (seqs["logp"] * m).sum(1) / m.sum(1)
    if retention == "heuristic":
        alpha, beta, cat = heuristic_weights(seqs["score"][:, 0], gen_logp, 0.3, 0.5, 2.0, "learn", weighting)
    else:
        alpha, beta = learned_weights(seqs["score"][:, 0], gen_logp, 0.3, 0.5, 2.0, 1.0, "learn", weighting)
        cat = classify_samples(seqs["score"][:, 0], gen_logp, 0.3)
    torch.testing.assert_close(seqs["alpha"][:, 0], alpha)
    torch.testing.assert_close(seqs["beta"][:, 0], beta)
    shares = learner._category_share
    assert sum(shares.values()) == pytest.approx(1.0)
    for c, name in enumerate(Category.NAMES):
        assert shares[name] == pytest.approx(float((cat == c).float().mean()))
    assert torch.equal(cat, classify_samples(seqs["score"][:, 0], gen_logp, 0.3))


def test_cppo_weights_with_one_token_responses():
    torch.manual_seed(0)
    policy = TransformerLM(LMConfig(vocab_size=VOCAB, block_size=3, n_layer=1, n_head=1, d_model=16))
    learner = CPPO(CPPOConfig(batch_size=8, num_minibatches=2, retention="learned", k=0.3), policy, EOS, PAD, 1)
    learner.start_task()
    batch = learner.rollout(torch.randint(2, 8, (8, 2)), score, torch.Generator().manual_seed(8))
    seqs = batch.transpose(0, 1).clone()
    learner.prepare(seqs)  # the reward is read from the first (here the only) token
    alpha, _ = learned_weights(seqs["score"][:, 0], seqs["logp"][:, 0], 0.3, 0.5, 2.0)
    torch.testing.assert_close(seqs["alpha"][:, 0], alpha)
    metrics = learner.update(batch)  # one token per response: scores and prompts are read at position 0
    assert metrics["train/reward_mean"] == pytest.approx(float(seqs["score"][:, 0].mean()))


def test_rlhf_update_minibatches_of_one_sequence_and_gradient_clipping():
    learner = make(num_minibatches=4, update_epochs=1)
    batch = learner.rollout(torch.randint(2, 8, (3, 2)), score, torch.Generator().manual_seed(9))
    sizes = []
    real = learner.loss
    learner.loss = lambda mb, *a: (sizes.append(mb.shape[0]), real(mb, *a))[1]
    learner.update(batch)
    assert sizes == [1, 1, 1]  # 3 sequences, 4 minibatches: 3 // 4 = 0 -> one sequence each
    moved = {}
    for clip in (0.0, 1e-9):
        learner = make(num_minibatches=1, update_epochs=1, max_grad_norm=clip, lr=0.01)
        b = learner.rollout(torch.randint(2, 8, (8, 2)), score, torch.Generator().manual_seed(9))
        before = [p.detach().clone() for p in learner.policy.parameters()]
        learner.update(b)
        moved[clip] = max(float((p.detach() - q).abs().max()) for p, q in zip(learner.policy.parameters(), before))
    assert moved[0.0] > 5e-3 and moved[1e-9] < 1e-5  # a gradient clipped to norm 1e-9 is far below Adam's eps
