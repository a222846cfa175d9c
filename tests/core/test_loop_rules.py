"""The shared `Loop` base and the loops' own rules on hand-counted cases: the budget, the
evaluation / logging / checkpoint cadences, the summary, resuming, the divergence guard's
keys and message, the RNG state, `finite_state`, `evaluate_policy`, `RewardScaler`, and
`OnPolicyLoop` / `OfflineLoop` / `SamplerLoop` data flow."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlx.core import loops
from rlx.core.buffers import ReplayBuffer
from rlx.core.checkpoint import load_checkpoint
from rlx.core.errors import DivergenceError, EnvFailure
from rlx.core.logging import RunLogger
from rlx.core.loops import (EVAL_MAX_STEPS, Loop, OfflineLoop, OnPolicyLoop, RewardScaler, SamplerLoop, TrainerConfig,
                            evaluate_policy, finite_state, rng_state, seed_everything, set_rng_state)
from tests.core.test_loop_more import fail_instead_of_hanging  # noqa: F401 (autouse: a loop that never ends fails)


def cfg(**kw):
    return TrainerConfig(**{"progress": False, "tensorboard": False, "eval_every": 0, **kw})


class Param:
    """A learner with one parameter that `update` sets to the iteration count."""

    def __init__(self):
        self.w = torch.zeros(1)
        self.calls = 0

    def update(self, batch=None):
        self.calls += 1
        self.w.fill_(float(self.calls))
        return {"loss/x": float(self.w), "train/other": float("nan")}

    def state_dict(self):
        return {"w": self.w.clone()}

    def load_state_dict(self, state):
        self.w = state["w"].clone()


class Counting(Loop):
    """Each iteration consumes `n` units."""

    unit = "grad_steps"

    def __init__(self, *args, n=3, **kw):
        super().__init__(*args, **kw)
        self.n = n

    def iteration(self):
        assert self.iterations < 100, "the budget never ran out"  # fail (not hang) on a broken step count
        return self.n, self.learner.update()


class FakeProgress:
    made: list = []

    def __init__(self, total, desc, enabled=True, initial=0):
        self.args, self.updates, self.closed = (total, desc, enabled, initial), [], False
        FakeProgress.made.append(self)

    def update(self, n, **postfix):
        self.updates.append((n, postfix))

    def close(self):
        self.closed = True


@pytest.fixture
def progress(monkeypatch):
    FakeProgress.made = []
    monkeypatch.setattr(loops, "Progress", FakeProgress)
    return FakeProgress.made


def evaluator(calls):
    def evaluate():
        calls.append(None)
        return {"eval/return_mean": float(len(calls))}

    return evaluate


# ---------------------------------------------------------------------- seeds and RNG state


def test_seed_everything_seeds_python_numpy_torch_and_numpy_takes_the_seed_mod_2_to_32():
    seed = 2**32 + 77
    seed_everything(seed)
    got = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(seed)
    np.random.seed(77)
    torch.manual_seed(seed)
    assert got == (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_rng_state_round_trips_through_a_weights_only_checkpoint_with_a_cached_gaussian(tmp_path):
    seed_everything(3)
    np.random.standard_normal()  # the legacy generator now holds the second normal of its pair
    state = rng_state()
    assert state["numpy"]["has_gauss"] == 1 and isinstance(state["numpy"]["key"], torch.Tensor)
    torch.save(state, tmp_path / "rng.pt")
    first = (random.random(), float(np.random.standard_normal()), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.standard_normal()), float(np.random.rand()), float(torch.rand(1))) == first


# ---------------------------------------------------------------------- budget and cadences


def test_budget_counts_units_and_stops_at_the_first_iteration_past_it(progress):
    loop = Counting(Param(), cfg(total_steps=10), n=3)
    loop.run()
    assert (loop.steps, loop.iterations, loop.learner.calls) == (12, 4, 4)
    assert progress[0].args == (10, "Counting", False, 0) and [n for n, _ in progress[0].updates] == [3, 3, 3, 3]
    assert progress[0].closed


def test_evaluation_cadence_catches_up_and_the_final_evaluation_is_not_doubled(progress):
    calls = []
    loop = Counting(Param(), cfg(total_steps=20, eval_every=4, log_every=100), n=3, evaluate=evaluator(calls))
    out = loop.run()
    # steps 3, 6, 9, 12, 15, 18, 21: evaluations at 6 (>= 4), 9 (>= 8), 12 (>= 12), 18 (>= 16); 21 is the end
    evals = [row["step"] for row in loop.logger.history if "eval/return_mean" in row]
    assert evals == [6, 9, 12, 18, 21] and len(calls) == 5
    assert loop.next_eval == 20 and out["eval/return_mean"] == 5.0
    # an iteration larger than eval_every evaluates once and moves past every missed multiple
    calls.clear()
    loop = Counting(Param(), cfg(total_steps=30, eval_every=3), n=10, evaluate=evaluator(calls))
    loop.run()
    assert [row["step"] for row in loop.logger.history if "eval/return_mean" in row] == [10, 20, 30]
    assert loop.next_eval == 21


def test_no_evaluation_without_eval_every_but_at_the_end(progress):
    calls = []
    loop = Counting(Param(), cfg(total_steps=9, eval_every=0), n=3, evaluate=evaluator(calls))
    assert loop.next_eval is None
    out = loop.run()
    assert len(calls) == 1 and out["eval/return_mean"] == 1.0
    assert Counting(Param(), cfg(total_steps=9, eval_every=5)).next_eval == 5


def test_logging_every_k_iterations_plus_evaluations(progress):
    calls = []
    loop = Counting(Param(), cfg(total_steps=21, log_every=3, eval_every=12), n=3, evaluate=evaluator(calls))
    loop.run()
    # iterations 1..7 at steps 3..21: every 3rd iteration (9, 18), the evaluation at step 12, the final one at 21
    assert [row["step"] for row in loop.logger.history] == [9, 12, 18, 21]
    assert loop.logger.history[0]["loss/x"] == 3.0
    loop = Counting(Param(), cfg(total_steps=6, log_every=1), n=3)
    loop.cfg.log_every = 0  # treated as every iteration, not a division by zero
    loop.run()
    assert [row["step"] for row in loop.logger.history] == [3, 6]


def test_throughput_is_units_over_the_iterations_wall_time(monkeypatch, progress):
    clock = iter([0.0, 0.5, 1.0, 1.0, 2.0, 2.25])
    monkeypatch.setattr(loops, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    loop = Counting(Param(), cfg(total_steps=9), n=3)
    out = loop.run()
    assert [row["time/grad_steps_per_s"] for row in loop.logger.history] == [6.0, 3.0 / 1e-9, 12.0]
    assert not any(k.startswith("time/") for k in out)  # the summary leaves the timings out
    assert out == {"step": 9, "loss/x": 3.0, "train/other": None}  # NaN outside loss/grad keys is logged as null


@pytest.mark.parametrize("every,default,expected", [(2, 50, [2, 4, 6, 7]), (0, 50, [7]), (None, 3, [3, 6, 7]),
                                                    (None, 50, [7])])
def test_checkpoint_cadence_in_iterations_then_the_final_save(monkeypatch, progress, every, default, expected):
    monkeypatch.setattr(Counting, "default_checkpoint_every", default)
    loop = Counting(Param(), cfg(total_steps=7, checkpoint_every=every), n=1)
    saved = []
    monkeypatch.setattr(loop, "save", lambda: saved.append(loop.iterations))
    loop.run()
    assert saved == expected
    assert loop.checkpoint_every == (default if every is None else every)


def test_summary_is_the_latest_metrics_and_the_final_evaluation_written_to_summary_json(tmp_path, progress):
    calls = []
    logger = RunLogger(tmp_path, tensorboard=False)
    loop = Counting(Param(), cfg(total_steps=6), n=3, logger=logger, evaluate=evaluator(calls))
    out = loop.run()
    logger.close()
    written = json.loads((tmp_path / "summary.json").read_text())
    assert out["step"] == 6 and out["loss/x"] == 2.0 and out["eval/return_mean"] == 1.0
    assert written["step"] == 6 and written["eval/return_mean"] == 1.0 and "time/grad_steps_per_s" not in written
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6, 6] and rows[-1] == {"step": 6, "eval/return_mean": 1.0}
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["loop"]["steps"] == 6 and float(state["learner"]["w"]) == 2.0


def test_ctrl_c_saves_and_reraises(monkeypatch, progress):
    class Interrupted(Counting):
        def iteration(self):
            if self.iterations == 2:
                raise KeyboardInterrupt
            return super().iteration()

    loop = Interrupted(Param(), cfg(total_steps=100, checkpoint_every=0), n=1)
    saved = []
    monkeypatch.setattr(loop, "save", lambda: saved.append(loop.steps))
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    assert saved == [2] and progress[0].closed


# ---------------------------------------------------------------------- state and resuming


def test_state_dict_round_trips_counters_evaluation_and_every_rng(tmp_path, progress):
    calls = []
    loop = Counting(Param(), cfg(total_steps=9, eval_every=4), n=3, evaluate=evaluator(calls), seed=5)
    loop.run()
    torch.rand(3, generator=loop.generator)
    state = loop.state_dict()
    assert state["loop"] == {"steps": 9, "iterations": 3, "next_eval": 8, "last_eval": {"eval/return_mean": 2.0}}
    after = (random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=loop.generator)))
    other = Counting(Param(), cfg(total_steps=9, eval_every=4), n=3, seed=9)
    other.load_state_dict(state)
    assert (other.steps, other.iterations, other.next_eval, other.last_eval) == (9, 3, 8, {"eval/return_mean": 2.0})
    assert float(other.learner.w) == 3.0
    assert (random.random(), float(np.random.rand()), float(torch.rand(1)),
            float(torch.rand(1, generator=other.generator))) == after


def test_resuming_a_one_iteration_finished_run_is_a_noop(tmp_path, capsys, progress):
    calls = []
    logger = RunLogger(tmp_path, tensorboard=False)
    loop = Counting(Param(), cfg(total_steps=3), n=3, logger=logger, evaluate=evaluator(calls))
    loop.run()
    logger.close()
    again = Counting(Param(), cfg(total_steps=3), n=3, logger=RunLogger(tmp_path, tensorboard=False),
                     evaluate=evaluator(calls))
    again.resume(tmp_path / "checkpoints" / "last.pt")
    assert again.finished
    out = again.run()
    assert again.learner.calls == 0 and len(calls) == 1
    assert out == json.loads((tmp_path / "summary.json").read_text())
    err = capsys.readouterr().err
    assert "run already finished (3 grad_steps >= trainer.total_steps=3)" in err and "raise trainer.total_steps" in err
    # without a run directory the summary is the step and the last evaluation
    bare = Counting(Param(), cfg(total_steps=3), n=3)
    bare.steps, bare.iterations, bare.last_eval = 3, 1, {"eval/return_mean": 7.0}
    assert bare.run() == {"step": 3, "eval/return_mean": 7.0} and bare.learner.calls == 0
    fresh = Counting(Param(), cfg(total_steps=3), n=3)
    fresh.steps = 3  # steps without iterations (a hand-set counter) is not a finished run
    assert not fresh.finished


def test_save_writes_last_pt_only_with_a_run_dir(tmp_path, progress):
    loop = Counting(Param(), cfg(total_steps=3), n=3)
    assert loop.checkpoint_dir is None and loop.save() is None
    loop = Counting(Param(), cfg(total_steps=3), n=3, logger=RunLogger(tmp_path, tensorboard=False))
    assert loop.checkpoint_dir == tmp_path / "checkpoints"
    path = loop.save()
    assert path == tmp_path / "checkpoints" / "last.pt" and path.is_file()


# ---------------------------------------------------------------------- divergence guard


def test_guard_reads_loss_and_grad_norm_keys_only():
    loop = Counting(Param(), cfg(total_steps=3))
    loop._check_finite({"train/other": float("nan"), "eval/x": float("inf"), "train/lossy": float("nan")})
    with pytest.raises(DivergenceError, match=r"non-finite loss/q \(inf\) at grad_step 0 \(iteration 0\)"):
        loop._check_finite({"train/ok": 1.0, "loss/q": float("inf")})
    with pytest.raises(DivergenceError, match=r"non-finite actor_grad_norm \(nan\)"):
        loop._check_finite({"actor_grad_norm": float("nan")})


@pytest.mark.parametrize("unit,where", [("grad_steps", "grad_step 4"), ("env_steps", "env_step 4"), ("data", "data 4")])
def test_guard_message_names_the_unit_and_the_kept_checkpoint(tmp_path, unit, where):
    loop = Counting(Param(), cfg(total_steps=3), logger=RunLogger(tmp_path, tensorboard=False))
    loop.unit, loop.steps, loop.iterations = unit, 4, 2
    with pytest.raises(DivergenceError) as e:
        loop._nonfinite("loss/q", float("nan"))
    assert str(e.value) == (f"non-finite loss/q (nan) at {where} (iteration 2); lower the learning rate or check the "
                            "data, or set trainer.on_nonfinite=warn to go on")
    loop.save()
    with pytest.raises(DivergenceError) as e:
        loop._nonfinite("loss/q", float("nan"))
    assert f"(iteration 2); the last good checkpoint {tmp_path / 'checkpoints' / 'last.pt'} is kept; lower" in str(e.value)


def test_warn_mode_warns_once_per_key(capsys):
    loop = Counting(Param(), cfg(total_steps=3, on_nonfinite="warn"))
    for _ in range(2):
        loop._nonfinite("loss/q", 1.5)
    loop._nonfinite("loss/v", 2.5, saving=True)
    err = capsys.readouterr().err.splitlines()
    assert err == ["rlx: warning: non-finite loss/q (1.5) at grad_step 0 (iteration 0); going on (trainer.on_nonfinite=warn)",
                   "rlx: warning: non-finite loss/v (2.5) at grad_step 0 (iteration 0); not saving this checkpoint"]


def test_finite_state_walks_dicts_lists_and_tuples_and_skips_integers_and_empty_tensors():
    ok = {"a": torch.ones(2), "b": [torch.zeros(0), (torch.tensor([2**62]), torch.ones(1, dtype=torch.float64))],
          "c": 3.0, "d": torch.tensor([1.0], dtype=torch.float16)}
    assert finite_state(ok) and finite_state({}) and finite_state({"n": torch.arange(3)})
    for bad in ({"b": [torch.ones(1), (torch.tensor([float("nan")]),)]}, {"a": {"b": torch.tensor([1.0, -math.inf])}},
                [torch.tensor([float("inf")], dtype=torch.float64)], (torch.ones(2), torch.tensor([math.nan]))):
        assert not finite_state(bad), bad


# ---------------------------------------------------------------------- progress postfix and labels


def test_progress_shows_the_key_metric_and_episode_return_from_metrics_or_the_last_evaluation():
    loop = Counting(Param(), cfg(total_steps=3))
    assert loop.progress_label == "Counting"
    assert loop._postfix({"train/episode_return": 2.0, "loss/x": 1.0}) == {"episode_return": 2.0}
    loop.last_eval = {"eval/return_mean": 5.0}
    assert loop._postfix({}) == {"return_mean": 5.0}
    assert loop._postfix({"eval/return_mean": 6.0}) == {"return_mean": 6.0}
    assert loop.run_evaluation() == {} and loop.last_eval == {"eval/return_mean": 5.0}  # no evaluate: nothing


def test_progress_bar_gets_the_postfix_and_the_resumed_position(progress):
    loop = Counting(Param(), cfg(total_steps=6, progress=True), n=3)
    loop.last_eval = {"eval/return_mean": 4.0}
    loop.steps = 3
    loop.run()
    assert progress[0].args[2:] == (True, 3) and progress[0].updates == [(3, {"return_mean": 4.0})]


# ---------------------------------------------------------------------- evaluate_policy


class Seeded(gym.Env):
    """An episode of length seed % 3 + 1 paying `seed` per step; obs = [seed, t]. An unseeded
    (auto)reset starts an episode paying 1000 per step, which evaluation must never count."""

    observation_space = gym.spaces.Box(-1e6, 1e6, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s, self.t = (1000 if seed is None else seed), 0
        return np.array([self.s, 0], np.float32), {}

    def step(self, action):
        self.t += 1
        assert action == 2
        end = self.t == self.s % 3 + 1
        return np.array([self.s, self.t], np.float32), float(self.s), end and self.s % 2 == 0, end and self.s % 2 == 1, {}


def test_evaluate_policy_plays_one_episode_per_seed_in_batches_of_num_envs():
    seen = []

    def act(obs):
        assert obs.dtype == torch.float32
        seen.append(obs[:, 0].tolist())
        return torch.full((obs.shape[0],), 2)

    out = evaluate_policy(act, Seeded, episodes=5, seed=10, num_envs=2)
    # seeds 10..14: lengths 2, 3, 1, 2, 3; returns 20, 33, 12, 26, 42 (nothing after an episode's end counts)
    returns = np.array([20.0, 33.0, 12.0, 26.0, 42.0])
    assert out == pytest.approx({"eval/return_mean": returns.mean(), "eval/return_std": returns.std(),
                                 "eval/length_mean": 11 / 5})
    assert seen[0] == [10, 11] and [10, 11] not in seen[3:] and [14] in seen
    one = evaluate_policy(act, Seeded, episodes=2, seed=3)  # num_envs None: all at once; returns 3 and 8
    assert one == pytest.approx({"eval/return_mean": 5.5, "eval/return_std": 2.5, "eval/length_mean": 1.5})


def test_evaluate_policy_cuts_an_endless_episode_at_max_steps(capsys):
    class Endless(Seeded):
        def step(self, action):
            obs, r, *_ = super().step(action)
            return obs, r, False, False, {}

    act = lambda obs: torch.full((obs.shape[0],), 2)  # noqa: E731
    out = evaluate_policy(act, Endless, episodes=1, seed=4, max_steps=5)
    assert out["eval/length_mean"] == 5 and out["eval/return_mean"] == 20.0
    assert "still running after 5 steps" in capsys.readouterr().err
    assert EVAL_MAX_STEPS == 10_000


# ---------------------------------------------------------------------- RewardScaler


def test_reward_scaler_divides_by_the_running_std_of_discounted_returns_reset_at_episode_ends():
    scaler = RewardScaler(2, gamma=0.5)
    seen = []
    rewards = [np.array([1.0, 2.0]), np.array([3.0, -1.0]), np.array([0.5, 4.0])]
    dones = [np.array([False, True]), np.array([False, False]), np.array([True, False])]
    ret = np.zeros(2)
    for r, d in zip(rewards, dones):
        ret = 0.5 * ret + r
        seen.extend(ret.tolist())
        out = scaler(r, d)
        # the prior (mean 0, var 1) has weight 1e-8: the variance is that of every return so far
        np.testing.assert_allclose(out, r / np.sqrt(np.var(seen)), rtol=1e-6)
        ret[d] = 0.0
    np.testing.assert_allclose(scaler.returns, [0.0, 4.0 + 0.5 * (-1.0)])  # env 1 restarted after step 0
    assert scaler.count == pytest.approx(6.0)
    state = scaler.state_dict()
    assert state["rms"]["var"].dtype == torch.float64
    again = RewardScaler(2, gamma=0.5)
    again.load_state_dict(state)
    np.testing.assert_array_equal(again(np.array([1.0, 1.0]), np.zeros(2, bool)), scaler(np.array([1.0, 1.0]), np.zeros(2, bool)))


def test_reward_scaler_clips_at_ten_and_starts_from_unit_variance():
    scaler = RewardScaler(1, gamma=0.0)
    assert (scaler.mean, scaler.var, scaler.count) == (0.0, 1.0, 1e-8)
    scaler.returns[:] = 0
    scaler.var, scaler.count = 1e-6, 1e12  # a near-constant history
    assert scaler(np.array([5.0]), np.array([False])).tolist() == [10.0]
    assert scaler(np.array([-5.0]), np.array([False])).tolist() == [-10.0]
    assert RewardScaler(1, gamma=0.9, clip=2.0)(np.array([100.0]), np.array([False])).tolist() == [2.0]


# ---------------------------------------------------------------------- OnPolicyLoop


class Clock(gym.Env):
    """obs = [t]; reward = 10 * episode + t after the step; ends after `length` steps. Records reset seeds."""

    observation_space = gym.spaces.Box(-1e6, 1e6, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length, seeds):
        self.length, self.seeds, self.episode, self.t = length, seeds, -1, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seeds.append(seed)
        self.episode, self.t = self.episode + 1, 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        end = self.t == self.length
        return np.array([float(self.t)], np.float32), 10.0 * self.episode + self.t, end, False, {}


class Stub:
    gamma, gae_lambda = 0.9, 0.8

    def __init__(self, with_obs=False):
        self.with_obs, self.batches = with_obs, []

    def act(self, obs, deterministic=False):
        n = obs.shape[0]
        out = {"action": torch.ones(n, dtype=torch.int64), "logp": torch.full((n,), -0.5), "value": obs[:, 0] * 2}
        if self.with_obs:
            out["obs"] = obs + 1000
        return TensorDict(out, batch_size=[n])

    def value(self, obs):
        return obs[:, 0] * 2

    def update(self, batch):
        self.batches.append(batch)
        return {"loss/x": 0.0}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def on_policy(T=5, lengths=(2, 3), seed=7, **kw):
    seeds = [[] for _ in lengths]
    envs = gym.vector.SyncVectorEnv([lambda i=i, n=n: Clock(n, seeds[i]) for i, n in enumerate(lengths)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return OnPolicyLoop(Stub(kw.pop("with_obs", False)), envs, cfg(total_steps=100), T, seed=seed, **kw), seeds


def test_collect_returns_each_finished_episode_and_carries_unfinished_ones_over():
    loop, seeds = on_policy()
    # env 0 (length 2): rewards 1, 2 | 11, 12 | 21; env 1 (length 3): 1, 2, 3 | 11, 12
    assert loop.collect() == [(3.0, 2), (6.0, 3), (23.0, 2)]
    assert loop.episode_return.tolist() == [21.0, 23.0] and loop.episode_length.tolist() == [1, 2]
    assert seeds == [[7, None, None], [8, None]]  # the first reset is seeded from the loop's seed (+ env index)
    d = loop.buffer.data
    assert d["reward"][:, 0].tolist() == [1, 2, 11, 12, 21] and d["terminated"][:, 1].tolist() == [0, 0, 1, 0, 0]
    assert d["logp"].eq(-0.5).all() and d["action"].eq(1).all() and d["value"][:, 1].tolist() == [0, 2, 4, 0, 2]
    assert d["next_value"][:, 1].tolist() == [2, 4, 6, 2, 4]  # V of the true next observation
    # the next rollout continues: env 0 ends its third episode after one step (21 + 22)
    assert loop.collect()[0] == (43.0, 2)


def test_iteration_reports_finished_episode_means_and_counts_t_times_n():
    loop, _ = on_policy()
    n, metrics = loop.iteration()
    assert n == 10 and metrics == {"loss/x": 0.0, "train/episode_return": pytest.approx(32 / 3),
                                   "train/episode_length": pytest.approx(7 / 3)}
    batch = loop.learner.batches[0]
    # GAE with the learner's gamma 0.9 and lambda 0.8 on env 1's terminated step t=2: A = r - V = 3 - 4
    assert float(batch["adv"][2, 1]) == pytest.approx(-1.0)
    loop, _ = on_policy(T=1, lengths=(3,))
    assert loop.iteration()[1] == {"loss/x": 0.0}  # no episode finished: no episode metrics


def test_reset_seed_moves_with_the_iteration_count():
    loop, seeds = on_policy(seed=5)
    loop.iterations = 3  # e.g. a resumed run whose env state is not in the checkpoint
    loop.collect()
    assert seeds == [[3005, None, None], [3006, None]]


def test_the_learners_processed_obs_is_stored():
    loop, _ = on_policy(with_obs=True)
    loop.collect()
    assert loop.buffer.data["obs"][:, 0, 0].tolist() == [1000, 1001, 1000, 1001, 1000]


def test_normalize_reward_stores_scaled_rewards_and_restarts_returns_at_episode_ends():
    loop, _ = on_policy(normalize_reward=True)
    reference = RewardScaler(2, 0.9)
    loop.collect()
    env_rewards = [[1, 1], [2, 2], [11, 3], [12, 11], [21, 12]]
    ends = [[0, 0], [1, 0], [0, 1], [1, 0], [0, 0]]
    expected = [reference(np.array(r, float), np.array(e, bool)) for r, e in zip(env_rewards, ends)]
    np.testing.assert_allclose(loop.buffer.data["reward"].numpy(), np.array(expected), rtol=1e-6)
    state = loop.extra_state()["reward_scaler"]
    other, _ = on_policy(normalize_reward=True)
    other.load_extra_state({"reward_scaler": state})
    assert other.reward_scaler.count == reference.count and other.reward_scaler.var == pytest.approx(reference.var)
    other.load_extra_state({"reward_scaler": None})  # a checkpoint without one leaves it as it is
    assert on_policy()[0].extra_state() == {"reward_scaler": None}


class Broken(Clock):
    def __init__(self, length, seeds, bad_obs_at=None, bad_rew_at=None, raise_at=None):
        super().__init__(length, seeds)
        self.bad_obs_at, self.bad_rew_at, self.raise_at, self.calls = bad_obs_at, bad_rew_at, raise_at, 0

    def step(self, action):
        self.calls += 1
        if self.calls == self.raise_at:
            raise ValueError("lost\n  contact")
        obs, r, term, trunc, info = super().step(action)
        if self.calls == self.bad_obs_at:
            obs[0] = np.nan
        if self.calls == self.bad_rew_at:
            r = np.inf
        return obs, r, term, trunc, info


def broken_loop(**kw):
    envs = gym.vector.SyncVectorEnv([lambda: Clock(9, []), lambda: Broken(9, [], **kw)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    loop = OnPolicyLoop(Stub(), envs, cfg(total_steps=100), 4)
    loop.steps = 16
    return loop


@pytest.mark.parametrize("kw,text", [
    ({"bad_rew_at": 2}, "returned a non-finite (NaN/inf) reward at global step 18"),  # step t=1 of 2 envs, after 16
    ({"bad_obs_at": 2}, "returned a non-finite (NaN/inf) observation at global step 20"),  # seen at t=2
    ({"bad_obs_at": 2, "bad_rew_at": 3}, "returned a non-finite (NaN/inf) observation at global step 20"),  # the same step: obs first
    ({"bad_obs_at": 3, "bad_rew_at": 2}, "returned a non-finite (NaN/inf) reward at global step 18"),
    ({"raise_at": 3}, "raised ValueError in step() at global step 20: lost contact"),
    ({"bad_obs_at": 1, "raise_at": 3}, "returned a non-finite (NaN/inf) observation at global step 18"),  # the NaN that reached the env
])
def test_env_failures_name_what_and_the_global_step(kw, text):
    with pytest.raises(EnvFailure) as e:
        broken_loop(**kw).collect()
    assert str(e.value) == text


def test_reset_failure_names_the_step():
    class NoReset(Clock):
        def reset(self, **kw):
            raise OSError("no display")

    envs = gym.vector.SyncVectorEnv([lambda: NoReset(2, [])], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    loop = OnPolicyLoop(Stub(), envs, cfg(total_steps=100), 4)
    loop.steps = 12
    with pytest.raises(EnvFailure, match=r"^raised OSError in reset\(\) at global step 12: no display$"):
        loop.collect()


# ---------------------------------------------------------------------- OfflineLoop and SamplerLoop


def _replay(n=16):
    buf = ReplayBuffer(n)
    buf.add(TensorDict({"obs": torch.arange(n, dtype=torch.float32)[:, None], "reward": torch.arange(n, dtype=torch.float32)},
                       batch_size=[n]))
    return buf


def test_offline_loop_samples_batch_size_rows_with_its_generator_or_through_the_transform():
    class Keep:
        def __init__(self):
            self.batches = []

        def update(self, batch):
            self.batches.append(batch)
            return {}

    loop = OfflineLoop(Keep(), _replay(), cfg(total_steps=2), batch_size=5, seed=3)
    assert loop.iteration() == (1, {})
    expected = _replay().sample(5, torch.Generator().manual_seed(3))
    assert loop.learner.batches[0]["reward"].tolist() == expected["reward"].tolist()
    calls = []

    def transform(buffer, idx, generator):
        calls.append((buffer, idx.tolist(), generator))
        return TensorDict({"reward": buffer.data["reward"][idx] * 10}, batch_size=[len(idx)])

    loop = OfflineLoop(Keep(), _replay(), cfg(total_steps=2), batch_size=4, seed=3, transform=transform)
    loop.iteration()
    idx = _replay().sample_indices(4, torch.Generator().manual_seed(3)).tolist()
    assert calls[0][0] is loop.buffer and calls[0][1] == idx and calls[0][2] is loop.generator
    assert loop.learner.batches[0]["reward"].tolist() == [10.0 * i for i in idx]


def test_sampler_loop_counts_samples_merges_sample_metrics_and_carries_its_extra_state(progress):
    class Extra:
        def __init__(self):
            self.value = 0

        def state_dict(self):
            return {"value": self.value}

        def load_state_dict(self, state):
            self.value = state["value"]

    draws = iter([("b1", 4), ("b2", 4, {"train/held_out": 0.5})])
    extra = Extra()
    loop = SamplerLoop(Param(), lambda: next(draws), cfg(total_steps=8), label="task 1", extra=extra,
                       postfix=lambda: {"task": 1})
    assert loop.progress_label == "task 1" and loop.key_metric == "train/reward_mean"
    out = loop.run()
    assert loop.steps == 8 and out["train/held_out"] == 0.5 and out["loss/x"] == 2.0
    assert progress[0].args[1] == "task 1" and progress[0].updates[0] == (4, {"task": 1})
    extra.value = 9
    state = loop.state_dict()
    assert state["loop"]["value"] == 9
    other_extra = Extra()
    other = SamplerLoop(Param(), lambda: None, cfg(total_steps=8), extra=other_extra)
    other.load_state_dict(state)
    assert other_extra.value == 9 and other.steps == 8 and other.progress_label == "SamplerLoop"
    plain = SamplerLoop(Param(), lambda: None, cfg(total_steps=8))
    assert plain.extra_state() == {} and plain._postfix({"train/reward_mean": 1.0}) == {"reward_mean": 1.0}
    plain.load_extra_state({"value": 3})  # no extra: nothing to load


def test_flush_denormal_sets_the_mode_inside_and_restores_the_previous_one():
    assert not loops.flushing_denormals()
    tiny = torch.tensor([1e-38])
    with loops.flush_denormal():
        assert loops.flushing_denormals() and float(tiny * 0.01) == 0.0  # a subnormal result is flushed
        with loops.flush_denormal():
            pass
        assert loops.flushing_denormals()  # an inner block restores the mode it found: on
        with loops.flush_denormal(False):  # disabled: leaves the mode as it is
            assert loops.flushing_denormals()
    assert not loops.flushing_denormals() and float(tiny * 0.01) > 0.0
    with pytest.raises(RuntimeError), loops.flush_denormal():
        raise RuntimeError("boom")
    assert not loops.flushing_denormals()  # restored on an exception too


@pytest.mark.parametrize("flush", [True, False])
def test_a_loop_runs_with_denormals_flushed_unless_told_not_to(progress, flush):
    seen = []

    class Probe(Param):
        def update(self, batch=None):
            seen.append(loops.flushing_denormals())
            return super().update(batch)

    Counting(Probe(), cfg(total_steps=6, flush_denormal=flush), n=3).run()
    assert seen == [flush, flush] and not loops.flushing_denormals()
