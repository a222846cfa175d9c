"""scripts/iql_reference.py (issue 17's standalone IQL, written from the paper, no rlx imports) and
its AWR-weight diagnostics, which scripts/iql_diagnose.py applies to rlx's learner; and
scripts/snapshot_dataset.py's refusal of a missing run."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

_path = Path(__file__).parents[2] / "scripts" / "iql_reference.py"
_spec = importlib.util.spec_from_file_location("iql_reference", _path)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


def test_weight_stats_ess_clipping_and_shares():
    n = 512
    flat = ref.weight_stats(torch.zeros(n), 3.0, 100.0, 256, torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool),
                            torch.zeros(n, 2), torch.zeros(n, 2), torch.zeros(2))
    assert flat["ess_frac_mean"] == 1.0 and flat["frac_clipped"] == 0.0 and flat["weight_share_start"] == 1.0
    # one row per 256-row batch carries A = 10 (w = 100, clipped), the rest A = 0 (w = 1):
    # ESS = (100 + 255)^2 / (100^2 + 255) = 12.4 rows of 256
    adv = torch.zeros(n)
    adv[::256] = 10.0
    fall = torch.zeros(n, dtype=torch.bool)
    fall[::256] = True
    s = ref.weight_stats(adv, 3.0, 100.0, 256, fall, ~fall, torch.full((n, 2), 0.995), torch.zeros(n, 2), torch.zeros(2))
    assert abs(s["ess_frac_mean"] - 355 ** 2 / 10_255 / 256) < 1e-6
    assert s["frac_clipped"] == 2 / n and s["frac_clipped_near_fall"] == 1.0
    assert abs(s["weight_share_near_fall"] - 100 / 355) < 1e-6 and s["rows_share_near_fall"] == 2 / n
    assert s["pi_frac_abs_gt_0.99"] == 1.0 and abs(s["pi_data_mse"] - 0.995 ** 2) < 1e-6 and s["std"] == [1.0, 1.0]


def test_episodes_ids_distances_and_termination():
    d = {"terminals": np.array([0, 0, 1, 0, 0, 0], bool), "timeouts": np.array([0, 0, 0, 0, 1, 0], bool)}
    ep, to_end, from_start, ends_in_term = ref.episodes(d)
    assert ep.tolist() == [0, 0, 0, 1, 1, 2]
    assert to_end.tolist() == [2, 1, 0, 1, 0, 0] and from_start.tolist() == [0, 1, 2, 0, 1, 0]
    assert ends_in_term.tolist() == [True, True, True, False, False, False]


def test_reference_trains_logs_and_evaluates(tmp_path, tiny_data, capsys):
    from rlx.envs.datasets import write_hdf5

    data = write_hdf5(tmp_path / "tiny.hdf5", tiny_data)
    out = tmp_path / "log.jsonl"
    assert ref.main(["--data", str(data), "--env", "Pendulum-v1", "--steps", "40", "--hidden", "16", "16", "--log-every", "20",
                     "--eval-every", "40", "--eval-episodes", "1", "--diag-rows", "1000", "--out", str(out),
                     "--save", str(tmp_path / "nets.safetensors")]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    head = recs[0]
    returns = tiny_data.episodes.episode_returns()
    assert abs(head["reward_scale"] - 1000 / float(returns.max() - returns.min())) < 1e-3 * head["reward_scale"]
    assert head["next_obs_continuity_err"] < 1e-5 and head["end_rows_next_obs_equal_next_first_obs"] == 0
    assert [r["step"] for r in recs[1:]] == [20, 40] and "eval_return" in recs[-1] and 0 <= recs[-1]["ess_frac_mean"] <= 1
    from safetensors.torch import load_file

    assert {"pi.log_std", "v.0.weight", "qt1.0.weight", "obs_mean"} <= set(load_file(tmp_path / "nets.safetensors"))
    imports = [line.split()[1] for line in _path.read_text().splitlines() if line.strip().startswith(("import ", "from "))]
    assert not [m for m in imports if m.split(".")[0] == "rlx"]  # independent of the code it checks


def test_snapshot_dataset_refuses_a_missing_run(tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("snapshot_dataset", _path.with_name("snapshot_dataset.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setenv("RLX_DATA", str(tmp_path / "data"))
    with pytest.raises(SystemExit) as e:
        script.main(["--work", str(tmp_path / "nothing"), "--env", "Hopper-v5", "--step", "50000", "--name", "x"])
    assert e.value.code == 2 and "run scripts/make_d4rl_family.py" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
