"""Conformance of rlx's non-gym sources to `rlx.envs.batched` (BatchedEnv, PromptStream), and the
one-line refusal of an `env.entry_point` class that is not a BatchedEnv."""

import pytest
import torch
from tensordict import TensorDict

from rlx.envs.batched import (FLAG_MEMBERS, INPUT_MEMBERS, BatchedEnv, PromptStream, check_batched_env,
                              missing_members)


def _hypergrid():
    from rlx.envs.hypergrid import HyperGrid

    return HyperGrid(ndim=2, height=4)


def _atoms():
    from rlx.envs.molecules import AtomMoleculeEnv

    return AtomMoleculeEnv(max_atoms=4)


def _fragments():
    from rlx.envs.fragments import FragmentMoleculeEnv

    return FragmentMoleculeEnv(max_blocks=3)


def _drive(env, n: int, generator: torch.Generator):
    """Random allowed actions from s_0 until every trajectory stopped; checks shapes on the way."""
    states, steps = env.reset(n), 0
    assert isinstance(states, TensorDict) and states.batch_size == torch.Size([n])
    while True:
        B = states.shape[0]
        ptr, mask = env.action_ptr(states), env.forward_mask(states)
        assert ptr.dtype == torch.int64 and ptr.shape == (B + 1,) and int(ptr[0]) == 0
        assert mask.dtype == torch.bool and mask.shape == (int(ptr[-1]),)
        if env.action_width is not None:
            assert torch.equal(ptr[1:] - ptr[:-1], torch.full((B,), env.action_width))
        allowed = [torch.nonzero(mask[a:b]).squeeze(-1) for a, b in zip(ptr[:-1].tolist(), ptr[1:].tolist())]
        assert all(len(x) for x in allowed), "a state with no allowed action"
        actions = torch.stack([x[torch.randint(len(x), (1,), generator=generator)][0] for x in allowed])
        nxt, stop = env.step(states, actions), env.is_stop(actions)
        assert nxt.batch_size == torch.Size([B]) and stop.dtype == torch.bool and stop.shape == (B,)
        parents = env.num_parents(nxt)
        assert parents.shape == (B,) and bool((parents[~stop] >= 1).all())  # a moved-into state has a parent
        steps += 1
        assert steps <= env.max_steps + 1
        if bool(stop.all()):
            return nxt
        states = nxt[torch.nonzero(~stop).squeeze(-1)] if bool(stop.any()) else nxt


@pytest.mark.parametrize("make", [_hypergrid, _atoms, _fragments], ids=["hypergrid", "atoms", "fragments"])
def test_batched_envs_follow_the_protocol(make):
    env = make()
    assert isinstance(env, BatchedEnv) and missing_members(env) == [] and missing_members(type(env)) == []
    for flag, names in FLAG_MEMBERS.items():  # a flag that is off promises nothing, one that is on is kept
        assert isinstance(getattr(env, flag), bool)
        assert all(hasattr(env, n) for n in names) or not getattr(env, flag)
    assert all(hasattr(env, n) for n in INPUT_MEMBERS[env.policy_input])
    terminal = _drive(env, 5, torch.Generator().manual_seed(0))
    log_r = env.log_reward(terminal)
    assert log_r.shape == (terminal.shape[0],) and log_r.dtype == torch.float32
    # one number per state: the same state scores the same in any batch, alone or reordered
    order = torch.arange(terminal.shape[0] - 1, -1, -1)
    torch.testing.assert_close(env.log_reward(terminal[order]), log_r[order])
    torch.testing.assert_close(torch.cat([env.log_reward(terminal[i:i + 1]) for i in range(terminal.shape[0])]), log_r)
    s = env.reset(3)
    if env.policy_input == "onehot":
        assert env.encode(s).shape == (3, env.obs_dim)
    else:
        assert isinstance(env.graph_batch(s), dict)
    if env.has_parents:
        parents, action, valid = env.parents(terminal)
        assert parents.shape[0] == action.shape[0] == valid.shape[0]


def test_text_stream_is_a_prompt_stream():
    from rlx.envs.text import StreamConfig, TextStream

    stream = TextStream(StreamConfig(num_tasks=2))
    assert isinstance(stream, PromptStream) and missing_members(stream, PromptStream) == []
    prompt = stream.prompts(1, 6, torch.Generator().manual_seed(0))
    assert prompt.shape[0] == 6 and prompt.dtype == torch.int64
    response, mask = torch.zeros(6, 5, dtype=torch.int64), torch.ones(6, 5, dtype=torch.bool)
    assert stream.gold(1, prompt, response, mask).shape == (6,)


class HalfAnEnv:
    """Has states and rewards but no way to move."""

    max_steps = 1

    def reset(self, n):
        return TensorDict({}, batch_size=[n])

    def log_reward(self, states):
        return torch.zeros(states.shape[0])


class NoParents(HalfAnEnv):
    """Claims flow matching support without parents()."""

    action_width, policy_input, has_parents, has_backward_actions, key_metric = 1, "onehot", True, False, "eval/x"
    encode = obs_dim = num_actions = action_ptr = forward_mask = step = is_stop = num_parents = evaluate_sampler = None


def test_missing_members_are_named_in_one_line():
    with pytest.raises(Exception, match=r"HalfAnEnv is not a BatchedEnv \(missing action_ptr, forward_mask, step"):
        check_batched_env(HalfAnEnv, "env.entry_point=x:HalfAnEnv")
    assert missing_members(NoParents()) == ["parents"]


def test_entry_point_that_is_not_a_batched_env_exits_2_before_work(tmp_path, capsys):
    from rlx.train import main

    code = main(["algo=gflownet", "env.entry_point=tests.envs.test_batched:HalfAnEnv", "env.kwargs={}",
                 f"trainer.root={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "HalfAnEnv is not a BatchedEnv (missing action_ptr" in err[0] and "step" in err[0]
    assert list(tmp_path.iterdir()) == []  # nothing on disk
