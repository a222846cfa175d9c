"""The sequence policy: KV-cached sampling equals uncached sampling, log-probs agree, top-k holds."""

import pytest
import torch

from rlx.models.transformer import HFCausalLM, LMConfig, TransformerLM, generate, response_logprobs


def _model(seed=0):
    torch.manual_seed(seed)
    model = TransformerLM(LMConfig(vocab_size=23, block_size=20, n_layer=2, n_head=2, d_model=32)).eval()
    with torch.no_grad():  # larger weights than the init so the distributions are far from uniform
        for p in model.parameters():
            p.mul_(8)
    return model


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 5)])
def test_kv_cached_generation_equals_uncached(temperature, top_k):
    model = _model()
    prompt = torch.randint(0, 23, (6, 4), generator=torch.Generator().manual_seed(1))
    runs = [generate(model, prompt, 12, eos_id=3, temperature=temperature, top_k=top_k,
                     generator=torch.Generator().manual_seed(7), use_cache=c) for c in (True, False)]
    cached, plain = runs
    assert torch.equal(cached.tokens, plain.tokens) and torch.equal(cached.mask, plain.mask)
    torch.testing.assert_close(cached.logp, plain.logp, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(cached.value, plain.value, atol=2e-4, rtol=1e-4)
    assert cached.tokens.shape == (6, 12)


def test_cache_prefill_matches_full_forward():
    model = _model(3)
    seq = torch.randint(0, 23, (3, 10))
    full_logits, full_values, _ = model(seq)
    _, _, kv = model(seq[:, :6])
    part_logits, part_values, _ = model(seq[:, 6:], kv)  # several new tokens at once on top of a cache
    torch.testing.assert_close(part_logits, full_logits[:, 6:], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(part_values, full_values[:, 6:], atol=2e-4, rtol=1e-4)


def test_generation_logp_matches_response_logprobs_and_eos_padding():
    model = _model(2)
    prompt = torch.randint(0, 23, (16, 3), generator=torch.Generator().manual_seed(4))
    gen = generate(model, prompt, 10, eos_id=3, pad_id=0, generator=torch.Generator().manual_seed(5))
    logp, values, _ = response_logprobs(model, prompt, gen.tokens)
    m = gen.mask
    torch.testing.assert_close(logp[m], gen.logp[m], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(values[m], gen.value[m], atol=2e-4, rtol=1e-4)
    ended = (gen.tokens == 3) & m
    assert ended.any(), "the test needs some responses that end"
    for i in range(16):  # after <eos> everything is padding and masked out
        hits = torch.nonzero(ended[i])
        if len(hits):
            e = int(hits[0])
            assert m[i, : e + 1].all() and not m[i, e + 1 :].any() and (gen.tokens[i, e + 1 :] == 0).all()


def test_top_k_only_samples_the_k_most_likely_tokens():
    model = _model(4)
    prompt = torch.randint(0, 23, (64, 3), generator=torch.Generator().manual_seed(6))
    gen = generate(model, prompt, 1, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(8))
    logits, _, _ = model(prompt)
    top2 = logits[:, -1].topk(2, -1).indices
    assert (gen.tokens[:, :1] == top2).any(-1).all()


def test_too_long_sequence_is_a_clear_error():
    with pytest.raises(ValueError, match="exceeds block_size=20"):
        _model()(torch.zeros(1, 21, dtype=torch.long))


def test_hugging_face_adapter_matches_its_own_cached_generation():
    pytest.importorskip("transformers", reason="transformers is optional (pip install 'rlx[text]')")
    torch.manual_seed(0)
    model = HFCausalLM.from_config({"vocab_size": 23, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 2}).eval()
    prompt = torch.randint(0, 23, (4, 3))
    cached, plain = (generate(model, prompt, 8, eos_id=3, generator=torch.Generator().manual_seed(1), use_cache=c)
                     for c in (True, False))
    assert torch.equal(cached.tokens, plain.tokens)
    torch.testing.assert_close(cached.logp, plain.logp, atol=1e-4, rtol=1e-4)
    logp, _, _ = response_logprobs(model, prompt, cached.tokens)
    torch.testing.assert_close(logp[cached.mask], cached.logp[cached.mask], atol=1e-4, rtol=1e-4)
