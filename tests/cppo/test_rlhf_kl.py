"""RLHF's per-token reward is -kl_coef * (log pi - log pi_ref) plus the score on the last token, and
PPO on that reward alone pulls a perturbed policy back towards the reference (a flipped KL sign
drives it away)."""

import pytest
import torch

from rlx.algos.rlhf import RLHF, RLHFConfig
from rlx.models.transformer import LMConfig, TransformerLM

VOCAB, EOS, PAD, T = 8, 1, 0, 4


def make(**kw) -> RLHF:
    torch.manual_seed(0)
    policy = TransformerLM(LMConfig(vocab_size=VOCAB, block_size=2 + T, n_layer=1, n_head=1, d_model=16))
    cfg = RLHFConfig(**{"batch_size": 32, "num_minibatches": 2, "update_epochs": 2, "lr": 3e-3, **kw})
    return RLHF(cfg, policy, EOS, PAD, T)


def test_token_rewards_penalize_the_log_ratio_and_add_the_score_on_the_last_token():
    learner = make(kl_coef=0.5)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    logp = torch.tensor([[-1.0, -0.5, -2.0, 0.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[-2.0, -0.5, -1.0, 0.0], [-1.0, -3.0, -1.0, -0.5]])
    r = learner.token_rewards(torch.tensor([10.0, -4.0]), {"mask": mask, "logp": logp, "ref_logp": ref})
    expected = torch.tensor([[-0.5, 0.0, 0.5 + 10.0, 0.0], [0.0, -1.0, 0.0, 0.25 - 4.0]])
    torch.testing.assert_close(r, expected)


def test_rollout_rewards_and_terminations():
    learner = make(kl_coef=0.2, gae_lambda=1.0)
    prompt = torch.full((6, 2), 3)
    batch = learner.rollout(prompt, lambda p, y, m: torch.arange(6.0), torch.Generator().manual_seed(0))
    seqs = batch.transpose(0, 1)
    m = seqs["mask"]
    last = m.sum(1) - 1
    kl = -(0.2 * (seqs["logp"] - seqs["ref_logp"])) * m
    score = torch.zeros_like(kl).index_put((torch.arange(6), last), torch.arange(6.0))
    torch.testing.assert_close(seqs["reward"], kl + score)
    assert seqs["terminated"][torch.arange(6), last].all()
    # gamma = lambda = 1: the return of the first token is the whole sequence's reward
    torch.testing.assert_close(seqs["ret"][:, 0], seqs["reward"].sum(1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kl_coef", [0.5])
def test_kl_penalty_alone_pulls_the_policy_back_to_the_reference(kl_coef):
    learner = make(kl_coef=kl_coef, ent_coef=0.0, gae_lambda=1.0)
    with torch.no_grad():  # move the policy away from the (frozen) reference
        for p in learner.policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    prompt = torch.full((32, 2), 3)
    gen = torch.Generator().manual_seed(0)
    zero = lambda p, y, m: torch.zeros(p.shape[0])  # noqa: E731  no task reward: only the KL term

    kls = []
    for _ in range(8):
        metrics = learner.update(learner.rollout(prompt, zero, gen))
        kls.append(metrics["train/kl_ref"])
    assert kls[0] > 0.1
    assert sum(kls[-2:]) / 2 < 0.6 * kls[0]


def test_masked_whiten_standardizes_the_valid_entries_only():
    from rlx.algos.rlhf import masked_mean, masked_whiten

    x = torch.tensor([[1.0, 3.0, 100.0], [5.0, 7.0, -100.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    out = masked_whiten(x, mask)
    valid = torch.tensor([1.0, 3.0, 5.0, 7.0])
    torch.testing.assert_close(out[mask], (valid - 4.0) / valid.var(unbiased=False).sqrt(), atol=1e-6, rtol=0)
    assert torch.all(out[~mask] == 0)
    assert float(masked_mean(x, mask)) == pytest.approx(4.0)
