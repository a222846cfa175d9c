"""No file rlx reads can run code: every kind of file rlx loads, crafted to run code when
unpickled (it would create a marker file), is refused with one line naming the file."""

import pickle

import numpy as np
import pytest
import torch

from rlx.core.errors import UnsafeFileError


class _Payload:
    """Unpickling this calls open(marker, "w"): the marker file exists iff the code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _craft(path, marker, wrap=lambda p: {"learner": p}):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrap(_Payload(marker)), path)
    return path


def _assert_refused(excinfo, path, marker):
    msg = str(excinfo.value)
    assert "\n" not in msg and str(path) in msg and "refusing to load" in msg
    assert not marker.exists(), "the crafted file's code ran"


def test_payload_runs_code_when_unpickled_unsafely(tmp_path):
    """The payload is real: loaded without weights_only it creates the marker."""
    path = _craft(tmp_path / "x.pt", tmp_path / "marker")
    torch.load(path, weights_only=False)
    assert (tmp_path / "marker").exists()


def test_resume_from_crafted_checkpoint_exits_2_and_leaves_run_untouched(tmp_path, capsys):
    from rlx.train import main

    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    ckpt = _craft(run_dir / "checkpoints" / "last.pt", marker)
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code = main(["algo=ppo", "env=CartPole-v1", f"trainer.resume={run_dir}", "trainer.progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(ckpt) in err[0]
    assert not marker.exists()
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_load_checkpoint_and_safe_load(tmp_path):
    from rlx.core.checkpoint import load_checkpoint, safe_load

    marker = tmp_path / "marker"
    for wrap in (lambda p: p, lambda p: {"rng": {"numpy": p}}, lambda p: [torch.zeros(2), p]):
        path = _craft(tmp_path / "c.pt", marker, wrap)
        for load in (load_checkpoint, safe_load):
            with pytest.raises(UnsafeFileError) as e:
                load(path)
            _assert_refused(e, path, marker)
    # a pickle that is not a torch file at all is refused the same way
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(UnsafeFileError) as e:
        load_checkpoint(raw)
    _assert_refused(e, raw, marker)


def test_saved_learner(tmp_path):
    from rlx.runs import load_learner
    from rlx.train import compose_config, to_yaml

    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    ckpt = _craft(run_dir / "checkpoints" / "last.pt", marker)
    (run_dir / "config.yaml").write_text(to_yaml(compose_config(["algo=ppo", "env=CartPole-v1"])))
    with pytest.raises(UnsafeFileError) as e:
        load_learner(run_dir)
    _assert_refused(e, ckpt, marker)


def test_classifier_cache(tmp_path, monkeypatch):
    from rlx.envs import image_rewards

    monkeypatch.setenv("RLX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(image_rewards, "_CLASSIFIERS", {})
    marker = tmp_path / "marker"
    path = _craft(tmp_path / "cache" / "classifier" / "digits-mlp-32.pt", marker, lambda p: {"model": p})
    with pytest.raises(UnsafeFileError) as e:
        image_rewards.load_classifier(32)
    _assert_refused(e, path, marker)


def test_diffusion_base_model_cache(tmp_path, monkeypatch):
    from rlx.envs.diffusion import DigitsDiffusionConfig, checkpoint_path, load_base_model

    monkeypatch.setenv("RLX_CACHE", str(tmp_path / "cache"))
    cfg, marker = DigitsDiffusionConfig(), tmp_path / "marker"
    path = _craft(checkpoint_path(cfg), marker, lambda p: {"config": p})
    with pytest.raises(UnsafeFileError) as e:
        load_base_model(cfg)
    _assert_refused(e, path, marker)


@pytest.mark.parametrize("which", ["reward_models", "sft"])
def test_text_stream_caches(tmp_path, which):
    from rlx.models.transformer import LMConfig
    from rlx.envs.text import StreamConfig, TextStream, cache_paths, load_stream

    cfg, marker = StreamConfig(cache_dir=str(tmp_path / "cache")), tmp_path / "marker"
    lm_cfg = LMConfig(vocab_size=len(TextStream(cfg).tokenizer))
    rm_path, sft_path = cache_paths(cfg, lm_cfg)
    if which == "sft":  # a valid reward-model file, so the SFT file is the one read next
        rm_path.parent.mkdir(parents=True)
        torch.save({"states": [], "stats": []}, rm_path)
    path = _craft(rm_path if which == "reward_models" else sft_path, marker, lambda p: {"states": p})
    with pytest.raises(UnsafeFileError) as e:
        load_stream(cfg, lm_cfg)
    _assert_refused(e, path, marker)


def test_seh_proxy_weights_refuse_object_arrays(tmp_path):
    from rlx.envs.seh_proxy import SEHProxy

    marker, path = tmp_path / "marker", tmp_path / "seh.npz"
    arrays = {f"p{i:02d}": np.zeros(1) for i in range(22)}
    np.savez(path, **{**arrays, "p00": np.array([_Payload(marker)], dtype=object)})
    with pytest.raises(UnsafeFileError) as e:
        SEHProxy.load(path)
    _assert_refused(e, path, marker)


def test_yaml_configs_are_read_safely(tmp_path):
    """config.yaml is read by rlx.report and load_learner: YAML tags that construct Python
    objects are refused, never executed."""
    from rlx.runs import load_learner
    from rlx.report import main as report_main

    marker = tmp_path / "marker"
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"algo: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    (run_dir / "summary.json").write_text("{}")
    with pytest.raises(Exception):
        load_learner(run_dir)
    assert report_main([str(tmp_path / "runs"), "--no-plots"]) == 2
    assert not marker.exists()
