"""`trainer.loggers`: metrics.jsonl always, TensorBoard / W&B (offline) / MLflow (file store) on
request, each getting exactly the numbers of metrics.jsonl; bad choices refused before work."""

from __future__ import annotations

import json
import struct

import pytest

from rlx.core.logging import read_metrics
from rlx.train import main

TINY = ["algo=ppo", "env=CartPole-v1", "env.num_envs=2", "algo.num_steps=16", "trainer.total_steps=96",
        "trainer.eval_every=32", "trainer.eval_episodes=1", "trainer.progress=false"]


def _run(tmp_path, *extra):
    run = tmp_path / "run"
    assert main([*TINY, f"trainer.run_dir={run}", *extra]) == 0
    return run


def _jsonl_values(run) -> dict[tuple[int, str], float]:
    out = {}
    for row in read_metrics(run / "metrics.jsonl"):
        out.update({(row["step"], k): v for k, v in row.items()
                    if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)})
    assert len(out) > 20
    return out


def test_unknown_logger_is_one_line_listing_the_choices(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TINY, f"trainer.run_dir={run}", "trainer.loggers=[jsonl,wandbb]"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'wandbb' is not one of jsonl, tensorboard, wandb, mlflow (did you mean 'wandb'?)" in err
    assert not run.exists()


@pytest.mark.parametrize("name, pip", [("wandb", "pip install wandb"), ("mlflow", "pip install mlflow-skinny")])
def test_missing_package_is_one_line_with_the_pip_command(tmp_path, capsys, monkeypatch, name, pip):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == name else real(mod, *a))
    run = tmp_path / "run"
    assert main([*TINY, f"trainer.run_dir={run}", f"trainer.loggers=[jsonl,{name}]"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"trainer.loggers has {name} but the {name} package is not installed: {pip}" in err
    assert not run.exists()


def test_jsonl_is_always_written_and_tensorboard_only_when_asked(tmp_path):
    run = _run(tmp_path, "trainer.loggers=[]")
    assert read_metrics(run / "metrics.jsonl") and not (run / "tb").exists()
    run2 = _run(tmp_path / "b", "trainer.loggers=[jsonl,tensorboard]", "trainer.tensorboard=false")  # the old flag still turns it off
    assert not (run2 / "tb").exists()
    run3 = _run(tmp_path / "c")  # the default: jsonl + tensorboard
    assert any((run3 / "tb").iterdir())


def _wandb_history(path) -> list[dict[str, float]]:
    """The history rows of an offline `.wandb` file (LevelDB-log records of wandb's protobuf
    `Record`), once wandb's service has written the run's exit record (it writes the file
    asynchronously: `finish()` can return before the file is complete)."""
    import time

    deadline = time.monotonic() + 60
    while True:
        rows, done = _wandb_records(path)
        if done or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _wandb_records(path) -> tuple[list[dict[str, float]], bool]:
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, rows, block, done = path.read_bytes(), 7, b"", [], 32768, False
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            done = done or record.WhichOneof("record_type") == "exit"
    return rows, done


def test_wandb_offline_gets_the_jsonl_numbers(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = _run(tmp_path, "trainer.loggers=[jsonl,wandb]")
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    logged = {}
    for row in _wandb_history(files[0]):
        logged.update({(int(row["_step"]), k): v for k, v in row.items() if not k.startswith("_")})
    assert logged == pytest.approx(_jsonl_values(run), rel=1e-12)


def test_mlflow_file_store_gets_the_jsonl_numbers(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run = _run(tmp_path, "trainer.loggers=[jsonl,mlflow]", "algo.lr=0.0005")
    # a resumed run continues the same MLflow run
    assert main([*TINY, "trainer.total_steps=160", f"trainer.resume={run}", "trainer.loggers=[jsonl,mlflow]",
                 "algo.lr=0.0005"]) == 0
    client = MlflowClient(tracking_uri=uri)
    (found,) = client.search_runs([client.get_experiment_by_name("rlx").experiment_id])
    assert found.info.status == "FINISHED" and found.data.params["algo.lr"] == "0.0005"
    expected = _jsonl_values(run)
    assert max(step for step, _ in expected) == 160
    logged = {}
    for key in {k for _, k in expected}:
        logged.update({(m.step, key): m.value for m in client.get_metric_history(found.info.run_id, key)})
    assert logged == pytest.approx(expected, rel=1e-12)


def test_run_logger_from_python_refuses_unknown_loggers_before_writing(tmp_path):
    from rlx.core.errors import ConfigError
    from rlx.core.logging import RunLogger

    with pytest.raises(ConfigError, match="unknown logger 'foo' in trainer.loggers; choose from jsonl, tensorboard, wandb, mlflow"):
        RunLogger(tmp_path / "run", loggers=["jsonl", "foo"])
    assert not (tmp_path / "run").exists()
