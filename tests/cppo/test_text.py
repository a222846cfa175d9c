"""The built-in preference stream: tokenizer, gold scorers, reward models, cache."""

from pathlib import Path

import pytest
import torch

from rlx.envs.text import StreamConfig, TextStream, Tokenizer, bradley_terry_loss, load_stream


def _score(stream, task, prompt, text):
    tok = stream.tokenizer
    ids = tok.encode(text) + [tok.eos_id]
    resp = torch.tensor([ids + [0] * (stream.cfg.response_len - len(ids))])
    mask = torch.arange(stream.cfg.response_len)[None] < len(ids)
    return float(stream.gold(task, torch.tensor([tok.encode(prompt)]), resp, mask)[0])


def test_tokenizer_round_trip_and_clear_error():
    tok = Tokenizer()
    ids = tok.encode("<bos> movie film <sep> great plot")
    assert tok.decode(ids[4:] + [tok.eos_id, 7]) == "great plot"
    with pytest.raises(ValueError, match="unknown words \\['fantastic'\\]"):
        tok.encode("fantastic plot")


def test_gold_scorers_prefer_their_own_style_and_conflict():
    s = TextStream(StreamConfig())
    movie, tech, food = "<bos> movie film <sep>", "<bos> tech phone <sep>", "<bos> food pizza <sep>"
    # enthusiast: positive and casual beats negative
    assert _score(s, 0, movie, "great plot totally fun actors") > _score(s, 0, movie, "boring plot awful actors")
    # analyst: concise and formal beats long and casual
    assert _score(s, 1, tech, "indeed battery notably screen") > _score(s, 1, tech, "lol battery super screen kinda speed totally software")
    # critic: negative and detailed beats short praise; the same answer ranks the other way for the enthusiast
    critic_pick, fan_pick = "awful taste and bad service the price was dull", "great taste"
    assert _score(s, 2, food, critic_pick) > _score(s, 2, food, fan_pick)
    assert _score(s, 0, food, critic_pick) < _score(s, 0, food, fan_pick)
    # every task rewards on-topic over off-topic nouns
    assert _score(s, 0, movie, "great plot") > _score(s, 0, movie, "great battery")


def test_bradley_terry_loss():
    assert float(bradley_terry_loss(torch.tensor([10.0]), torch.tensor([-10.0]))) < 1e-6
    torch.testing.assert_close(bradley_terry_loss(torch.zeros(3), torch.zeros(3)), torch.tensor(0.6931), atol=1e-4, rtol=0)


def test_reward_models_are_clearly_above_chance_on_held_out_pairs(stream):
    for stats in stream.rm_stats:
        assert stats["accuracy"] > 0.62  # against noisy held-out labels (chance 0.5, ceiling about 0.85)
        assert stats["gold_accuracy"] > 0.7  # against the hidden scorer


def test_learned_reward_tracks_the_gold_reward(stream):
    g = torch.Generator().manual_seed(3)
    for task in range(stream.num_tasks):
        p, r, m = stream.corpus(400, g, stream.tasks[task]["domains"])
        gold, learned = stream.gold(task, p, r, m), stream.reward(task, p, r, m)
        assert torch.corrcoef(torch.stack([gold, learned]))[0, 1] > 0.5


def test_cache_is_reused(stream_cfg, lm_cfg, stream):
    again = load_stream(stream_cfg, lm_cfg)  # from the cache: no rebuild, same weights
    assert all(torch.equal(a, b) for a, b in zip(stream.sft_state.values(), again.sft_state.values()))
    assert again.rm_stats == stream.rm_stats
    assert not list(Path(stream_cfg.cache_dir).rglob("*.tmp"))  # atomic writes leave no temp files


def test_missing_cache_is_rebuilt_identically(tmp_path, lm_cfg):
    tiny = dict(corpus_size=64, sft_steps=3, pairs_per_task=40, rm_steps=3)
    a = load_stream(StreamConfig(**tiny, cache_dir=str(tmp_path / "a")), lm_cfg)
    b = load_stream(StreamConfig(**tiny, cache_dir=str(tmp_path / "b")), lm_cfg)
    assert all(torch.equal(x, y) for x, y in zip(a.sft_state.values(), b.sft_state.values()))
    assert all(torch.equal(x, y) for m, n in zip(a.reward_models, b.reward_models)
               for x, y in zip(m.state_dict().values(), n.state_dict().values()))
    assert a.rm_stats == b.rm_stats
    c = load_stream(StreamConfig(**{**tiny, "seed": 1}, cache_dir=str(tmp_path / "a")), lm_cfg)  # new key, new data
    assert not all(torch.equal(x, y) for x, y in zip(a.sft_state.values(), c.sft_state.values()))


def test_bad_stream_settings_fail_clearly():
    with pytest.raises(ValueError, match="num_tasks=5"):
        TextStream(StreamConfig(num_tasks=5))
