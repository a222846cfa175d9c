"""env=prompts pieces: reading prompt files, the prompt stream, the policy and reward specs, and
the Hugging Face adapter (left padding, no deprecated arguments); every bad value is one line."""

import csv
import warnings

import pytest
import torch

from rlx.core.errors import ConfigError, EnvError
from rlx.envs.batched import PromptStream
from rlx.envs.prompts import HFRewardModel, PromptFileStream, load_policy, load_reward, load_rewards, read_prompts
from rlx.models.transformer import HFCausalLM, generate, response_logprobs
from rlx.train import main

from .conftest import prompts, transformers, write_jsonl
from .rewards import count_yes


def test_jsonl_and_csv_give_the_prompt_column(tmp_path):
    rows = prompts(5)
    assert read_prompts(write_jsonl(tmp_path / "p.jsonl", rows)) == rows
    assert read_prompts(write_jsonl(tmp_path / "q.jsonl", rows, key="text"), key="text") == rows
    with (tmp_path / "p.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt"])
        w.writerows([[i, r] for i, r in enumerate(rows)])
    assert read_prompts(tmp_path / "p.csv") == rows


def test_parquet_gives_the_prompt_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = prompts(5)
    pq.write_table(pa.table({"id": list(range(5)), "question": rows}), tmp_path / "p.parquet")
    assert read_prompts(tmp_path / "p.parquet", key="question") == rows
    with pytest.raises(EnvError, match="has no column 'prompt' \\(columns: id, question\\)"):
        read_prompts(tmp_path / "p.parquet")


@pytest.mark.parametrize("content, suffix, message", [
    (None, ".jsonl", "not found"),
    ("", ".jsonl", "holds no prompts"),
    ("id\n", ".csv", "has no column 'prompt'"),
    ('{"text": "hi"}\n', ".jsonl", "line 1 has no 'prompt'"),
    ('{"prompt": 3}\n', ".jsonl", "row 1: 'prompt' is 3, not a non-empty string"),
    ("not json\n", ".jsonl", "line 1 is not JSON"),
    ("x", ".txt", "is not a .jsonl, .csv, .parquet file"),
])
def test_bad_prompt_files_are_one_line(tmp_path, content, suffix, message):
    path = tmp_path / f"p{suffix}"
    if content is not None:
        path.write_text(content)
    with pytest.raises(EnvError, match=message) as e:
        read_prompts(path)
    assert "\n" not in str(e.value)


class _WordTokenizer:
    """The smallest tokenizer of the interface: words of a fixed list (id 0 pad, 1 eos)."""

    def __init__(self, words):
        self.words = ["<pad>", "<eos>", *words]
        self.ids = {w: i for i, w in enumerate(self.words)}
        self.pad_id, self.eos_id = 0, 1

    def encode(self, text):
        return [self.ids[w] for w in text.split()]

    def decode(self, ids):
        out = []
        for i in ids:
            if int(i) == self.eos_id:
                break
            out.append(self.words[int(i)])
        return " ".join(w for w in out if w != "<pad>")


def test_prompt_stream_left_pads_and_scores_the_original_prompts():
    tok = _WordTokenizer(["a", "b", "c", "yes"])
    seen = {}

    def reward(ps, cs):
        seen["prompts"], seen["completions"] = ps, cs
        return [float(c.count("yes")) for c in cs]

    stream = PromptFileStream([["a", "a b c"]], tok, [reward], ["t"], response_len=3)
    assert isinstance(stream, PromptStream) and stream.num_tasks == 1 and stream.gold_is_reward
    batch = stream.prompts(0, 64, torch.Generator().manual_seed(0))
    assert batch.shape == (64, 3)
    short = batch[batch[:, 1] == 0]  # "a" left-padded to [pad, pad, a]
    assert len(short) and (short == torch.tensor([0, 0, 2])).all()
    resp = torch.tensor([[5, 5, 1], [5, 1, 0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    score = stream.reward(0, batch[:2], resp, mask)
    assert score.tolist() == [2.0, 1.0]
    assert seen["completions"] == ["yes yes", "yes"] and set(seen["prompts"]) <= {"a", "a b c"}
    assert torch.equal(stream.gold(0, batch[:2], resp, mask), score)
    # two tasks whose prompts encode alike: each task's reward sees its own strings
    two = PromptFileStream([["a b"], ["a  b"]], tok, [reward, reward], ["t0", "t1"])
    two.reward(1, two.prompts(1, 2), resp, mask)
    assert seen["prompts"] == ["a  b", "a  b"]
    # a batch of short prompts only is trimmed to its own longest prompt
    only_short = PromptFileStream([["a", "b"]], tok, [reward], ["t"]).prompts(0, 4)
    assert only_short.shape == (4, 1)


def test_a_reward_with_the_wrong_number_of_scores_is_one_line():
    tok = _WordTokenizer(["a", "yes"])
    stream = PromptFileStream([["a"]], tok, [lambda p, c: [1.0]], ["t"], reward_names=["mod:f"])
    with pytest.raises(ValueError, match="reward mod:f returned 1 scores for 2 completions"):
        stream.reward(0, torch.tensor([[2], [2]]), torch.tensor([[3], [3]]), torch.ones(2, 1, dtype=torch.bool))


def test_left_padded_prompts_give_the_unpadded_logits_and_cached_generation_matches(tiny_gpt2):
    policy, tok = load_policy(f"hf:{tiny_gpt2}")
    policy.eval()
    long, short = tok.encode("tell me about the movie"), tok.encode("rate the song")
    batch = torch.tensor([long, [tok.pad_id] * (len(long) - len(short)) + short])
    with torch.no_grad():
        logits, values, _ = policy(batch)
        alone, alone_values, _ = policy(torch.tensor([short]))
    torch.testing.assert_close(logits[1, -1], alone[0, -1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values[1, -1], alone_values[0, -1])
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    cached = generate(policy, batch, 6, tok.eos_id, tok.pad_id, generator=g())
    plain = generate(policy, batch, 6, tok.eos_id, tok.pad_id, generator=g(), use_cache=False)
    assert torch.equal(cached.tokens, plain.tokens)
    torch.testing.assert_close(cached.logp, plain.logp, atol=1e-5, rtol=1e-5)
    logp = response_logprobs(policy, batch, cached.tokens)[0]
    torch.testing.assert_close(torch.where(cached.mask, logp, 0.0), cached.logp, atol=1e-5, rtol=1e-5)


def test_the_adapter_passes_no_deprecated_argument(tiny_gpt2):
    policy, tok = load_policy(f"hf:{tiny_gpt2}")
    prompt = torch.tensor([tok.encode("rate the song")] * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        gen = generate(policy, prompt, 4, tok.eos_id, tok.pad_id)
        logp, values, _ = response_logprobs(policy, prompt, gen.tokens)
        (logp.sum() + values.sum()).backward()  # the training forward pass (with gradients, no cache)
    assert policy.value_head.weight.grad is not None and policy.model.lm_head.weight.grad is not None


def test_a_factory_returning_transformers_objects_is_wrapped(tiny_gpt2, monkeypatch):
    monkeypatch.setenv("RLX_TEST_TINY_GPT2", str(tiny_gpt2))
    policy, tok = load_policy("tests.rlhf.rewards:tiny_policy")
    assert isinstance(policy, HFCausalLM) and policy.pad_id == tok.pad_id == 0 and tok.decode(tok.encode("yes no")) == "yes no"


def _save_reward_model(tiny_gpt2, path):
    cfg = transformers.AutoConfig.from_pretrained(tiny_gpt2)
    cfg.num_labels = 1
    torch.manual_seed(1)
    model = transformers.GPT2ForSequenceClassification(cfg)
    model.save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(tiny_gpt2).save_pretrained(path)
    return model, cfg


def test_hf_reward_model_scores_prompt_and_completion(tiny_gpt2, tmp_path):
    model, cfg = _save_reward_model(tiny_gpt2, tmp_path / "rm")
    scorer, name = load_reward(f"hf:{tmp_path / 'rm'}")
    assert isinstance(scorer, HFRewardModel) and name == f"hf:{tmp_path / 'rm'}"
    tok = transformers.AutoTokenizer.from_pretrained(tiny_gpt2)
    scores = scorer(["rate the song", "tell me about the movie"], ["yes", "no no"])
    for text, s in zip(["rate the song yes", "tell me about the movie no no"], scores):
        with torch.no_grad():
            expected = model.eval()(**tok([text], return_tensors="pt")).logits[0, 0]
        assert abs(s - float(expected)) < 1e-5
    cfg.num_labels = 2
    transformers.GPT2ForSequenceClassification(cfg).save_pretrained(tmp_path / "rm2")
    tok.save_pretrained(tmp_path / "rm2")
    with pytest.raises(ConfigError, match="num_labels=2; a reward model has one output"):
        load_reward(f"hf:{tmp_path / 'rm2'}")


def test_reward_spec_callable_and_bad_values(tiny_gpt2, tmp_path):
    assert load_reward(count_yes) == (count_yes, "count_yes")
    _save_reward_model(tiny_gpt2, tmp_path / "rm")
    funcs, names = load_rewards([f"hf:{tmp_path / 'rm'}", "tests.rlhf.rewards:count_yes", f"hf:{tmp_path / 'rm'}"])
    assert funcs[0] is funcs[2] and funcs[1] is count_yes and names[1] == "tests.rlhf.rewards:count_yes"  # loaded once
    assert load_reward("tests.rlhf.rewards:count_yes")[0] is count_yes
    for bad, message in [("count_yes", "use pkg.module:function"), ("tests.rlhf.rewards:nope", "has no attribute"),
                         ("hf:/nonexistent", "is not a saved Hugging Face model")]:
        with pytest.raises(ConfigError, match=message):
            load_reward(bad)


def _cli(tmp_path, *overrides):
    return main(["env=prompts", f"trainer.run_dir={tmp_path / 'run'}", "trainer.progress=false", *overrides])


@pytest.mark.parametrize("overrides, message", [
    (["algo=rlhf", "env.prompts={missing}", "algo.policy=hf:{model}", "algo.reward=tests.rlhf.rewards:count_yes"],
     "missing.jsonl not found"),
    (["algo=rlhf", "env.prompts={a}", "env.prompt_key=question", "algo.policy=hf:{model}",
      "algo.reward=tests.rlhf.rewards:count_yes"], "line 1 has no 'question'"),
    (["algo=rlhf", "env.prompts={empty}", "algo.policy=hf:{model}", "algo.reward=tests.rlhf.rewards:count_yes"],
     "holds no prompts"),
    (["algo=rlhf", "env.prompts={a}", "algo.reward=tests.rlhf.rewards:count_yes"], "env=prompts needs your policy"),
    (["algo=rlhf", "env.prompts={a}", "algo.policy=gpt2", "algo.reward=tests.rlhf.rewards:count_yes"],
     "algo.policy='gpt2'; use hf:<dir>"),
    (["algo=rlhf", "env.prompts={a}", "algo.policy=hf:{model}"], "algo.reward='learned' is a reward of env=text_stream"),
    (["algo=cppo", "env.prompts=[{a},{b}]", "algo.policy=hf:{model}",
      "algo.reward=[tests.rlhf.rewards:count_yes,tests.rlhf.rewards:count_no,tests.rlhf.rewards:count_no]"],
     "algo.reward lists 3 rewards for 2 prompt files"),
    (["algo=rlhf", "env.prompts={a}", "algo.policy=hf:{model}", "algo.reward=tests.rlhf.rewards:count_yes",
      "env.kwargs.length=3"], "unknown env.kwargs ['length'] for env=prompts"),
    (["algo=rlhf", "env.prompts={a}", "algo.policy=hf:{model}", "algo.reward=tests.rlhf.rewards:count_yes",
      "env.kwargs.response_len=0"], "env.kwargs.response_len=0 is out of range"),
    (["algo=rlhf", "env.prompts={a}", "algo.policy=hf:{model}", "algo.reward=tests.rlhf.rewards:count_yes",
      "env.kwargs.response_len=30"], "exceed the policy's 32 positions"),
])
def test_bad_prompt_runs_exit_2_with_one_line_and_nothing_on_disk(tmp_path, capsys, prompt_files, tiny_gpt2,
                                                                  overrides, message):
    a, b = prompt_files
    (tmp_path / "empty.jsonl").write_text("")
    fill = {"a": a, "b": b, "model": tiny_gpt2, "missing": tmp_path / "missing.jsonl", "empty": tmp_path / "empty.jsonl"}
    code = _cli(tmp_path, *[o.format(**fill) for o in overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("rlx.train: error:") and message in err[-1], err
    assert not (tmp_path / "run").exists()


def test_text_stream_refuses_a_user_policy_or_reward(tmp_path, capsys, tiny_gpt2):
    assert main(["algo=rlhf", f"algo.policy=hf:{tiny_gpt2}", f"trainer.run_dir={tmp_path / 'run'}"]) == 2
    assert "is for your prompts (env=prompts env.prompts=<file>)" in capsys.readouterr().err
    assert main(["algo=rlhf", "env=prompts", "trainer.progress=false"]) == 2
    assert "env=prompts needs env.prompts=" in capsys.readouterr().err


def test_a_reward_returning_the_wrong_number_of_scores_stops_the_run_with_one_line(tmp_path, capsys, prompt_files,
                                                                                    tiny_gpt2):
    code = _cli(tmp_path, "algo=rlhf", f"env.prompts={prompt_files[0]}", f"algo.policy=hf:{tiny_gpt2}",
                "algo.reward=tests.rlhf.rewards:wrong_length", "env.kwargs.response_len=4", "algo.eval_samples=8")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("rlx.train: failed:"), last
    assert "reward tests.rlhf.rewards:wrong_length returned 1 scores for 8 completions" in last


def test_cli_takes_a_factory_policy_and_a_reward_model(tmp_path, capsys, prompt_files, tiny_gpt2, monkeypatch):
    monkeypatch.setenv("RLX_TEST_TINY_GPT2", str(tiny_gpt2))
    _save_reward_model(tiny_gpt2, tmp_path / "rm")
    code = _cli(tmp_path, "algo=rlhf", f"env.prompts={prompt_files[0]}", "algo.policy=tests.rlhf.rewards:tiny_policy",
                f"algo.reward=hf:{tmp_path / 'rm'}", "env.kwargs.response_len=4", "algo.samples_per_task=16",
                "algo.batch_size=8", "algo.num_minibatches=2", "algo.eval_samples=8", "trainer.tensorboard=false")
    out = capsys.readouterr().out
    assert code == 0 and f"sequential PPO [reward hf:{tmp_path / 'rm'}]: R[i, j] = reward on task j" in out
    assert "policy: tests.rlhf.rewards:tiny_policy" in (tmp_path / "run" / "config.yaml").read_text()


def test_a_learner_on_a_user_policy_saves_and_loads_from_its_spec(tiny_gpt2, tmp_path):
    from rlx.algos.rlhf import RLHF, RLHFConfig
    from rlx.core.errors import UnsafeFileError

    policy, tok = load_policy(f"hf:{tiny_gpt2}")
    learner = RLHF(RLHFConfig(), policy, tok.eos_id, tok.pad_id, 8)
    with torch.no_grad():
        for p in learner.policy.parameters():
            p.add_(0.01)  # "trained" weights differ from the folder's
    loaded = RLHF.load(learner.save(tmp_path / "rlhf.pt"))
    for (name, a), b in zip(learner.policy.state_dict().items(), loaded.policy.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # a factory spec whose module is not imported is refused: a learner file never imports user code
    learner.policy.rlx_rebuild = ("rlx.envs.prompts:policy_from_spec", ("not_imported_pkg.models:factory",))
    with pytest.raises(UnsafeFileError, match="module not_imported_pkg.models is not imported"):
        RLHF.load(learner.save(tmp_path / "user.pt"))
    # only registered rebuild functions run
    learner.policy.rlx_rebuild = ("rlx.envs.prompts:read_prompts", ("x.jsonl",))
    with pytest.raises(TypeError, match="not registered"):
        learner.save(tmp_path / "bad.pt")
