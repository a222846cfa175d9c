"""README.md's "Train, save, load, predict" block, extracted and run exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def _snippet() -> str:
    text = README.read_text()
    start = text.index("Train, save, load, predict")
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_train_save_load_predict_snippet_runs(tmp_path, monkeypatch):
    code = _snippet()
    assert "ppo.save(" in code and "rlx.load(" in code and "policy.predict(obs)" in code
    assert len([line for line in code.splitlines() if line and not line.startswith(("import", "from"))]) <= 10
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    env, action, ppo, policy, obs = (scope[k] for k in ("env", "action", "ppo", "policy", "obs"))
    assert (tmp_path / "ppo_cartpole.pt").is_file()
    assert isinstance(action, np.ndarray) and action.shape == () and env.action_space.contains(int(action))
    batch = np.stack([env.observation_space.sample() for _ in range(64)])
    expected = ppo.act(torch.as_tensor(batch), deterministic=True)["action"].numpy()
    np.testing.assert_array_equal(policy.predict(batch)[0], expected)  # the loaded file is the trained learner
