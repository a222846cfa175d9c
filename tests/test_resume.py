"""Kill a run mid-training, resume it, and it continues from its checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]
ARGS = ["algo=ppo", "env=CartPole-v1", "env.num_envs=2", "algo.num_steps=16", "trainer.total_steps=6400",
        "trainer.eval_every=0", "trainer.eval_episodes=2", "trainer.checkpoint_every=2", "trainer.progress=false",
        "trainer.tensorboard=false"]


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_kill_and_resume(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rlx.train", *ARGS, f"trainer.run_dir={run_dir}"], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["loop"]["steps"] >= 320:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "run finished before it could be killed; raise total_steps"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(ckpt, weights_only=True)["loop"]["steps"]
    assert 0 < saved < 6400
    out = subprocess.run([sys.executable, "-m", "rlx.train", *ARGS, f"trainer.resume={run_dir}"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    steps = _steps(run_dir)
    assert steps == sorted(steps), "metrics.jsonl must read as one run after resuming"
    assert steps[-1] == 6400 and len(set(steps)) == 6400 // 32
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 6400
