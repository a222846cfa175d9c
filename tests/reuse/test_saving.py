"""`rlx.core.checkpoint.Saveable`: what a learner file holds and what loading it may construct.
(The round-trip over every registered algorithm is in tests/test_learner_protocol.py.)"""

from __future__ import annotations

import io

import gymnasium as gym
import pytest
import torch

from rlx.core.checkpoint import LEARNER_FORMAT, Saveable, decode_init, encode_init, save_checkpoint
from rlx.core.errors import UnsafeFileError


def _ppo(**kw):
    from rlx.algos.ppo import PPO, PPOConfig

    return PPO(PPOConfig(**kw), gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (2,)))


def test_the_file_holds_the_config_and_spaces_as_plain_data(tmp_path):
    learner = _ppo(lr=1e-4, hidden=[8])
    file = torch.load(learner.save(tmp_path / "l.pt"), weights_only=True)
    assert file["format"] == LEARNER_FORMAT
    init = file["object"]
    assert init["__rlx_object__"] == "rlx.algos.ppo:PPO"
    cfg, obs_space, act_space = init["args"]
    assert cfg["__rlx_dataclass__"] == "rlx.algos.ppo:PPOConfig" and cfg["fields"]["lr"] == 1e-4
    assert act_space["__rlx_space__"] == "Box" and torch.equal(act_space["high"], torch.full((2,), 2.0))
    from rlx.algos.ppo import PPO

    loaded = PPO.load(tmp_path / "l.pt")
    assert loaded.cfg.lr == 1e-4 and loaded.cfg.hidden == [8]


def test_shared_objects_stay_shared():
    from rlx.algos.gflownet import GFlowNet, GFlowNetConfig, MLPPolicy
    from rlx.envs.hypergrid import HyperGrid

    env = HyperGrid(ndim=2, height=3)
    learner = GFlowNet(GFlowNetConfig(hidden=8), env, MLPPolicy(env, hidden=8))
    rebuilt = decode_init(encode_init(learner))
    assert rebuilt.env is rebuilt.model.env and rebuilt.env.height == 3


def test_device_override_reaches_the_constructor(tmp_path):
    from rlx.algos.sac import SAC, SACConfig

    space = gym.spaces.Box(-1, 1, (2,))
    path = SAC(SACConfig(hidden=[8]), space, space, torch.device("cpu")).save(tmp_path / "l.pt")  # device by position
    assert torch.device("cpu:0") != torch.device("cpu")
    loaded = SAC.load(path, device="cpu:0")
    assert loaded.init_arguments()["device"] == torch.device("cpu:0") and "device" not in loaded._rlx_init[1]
    assert SAC.load(path).init_arguments()["device"] == torch.device("cpu")


def test_an_argument_that_is_not_plain_data_is_named(tmp_path):
    from rlx.algos.gflownet import GFlowNet, GFlowNetConfig
    from rlx.envs.hypergrid import HyperGrid

    class Model(torch.nn.Module):  # a user's module that does not record its arguments
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(1, 1)

    learner = GFlowNet(GFlowNetConfig(), HyperGrid(2, 3), Model())
    with pytest.raises(TypeError, match=r"cannot save GFlowNet\(GFlowNet argument 2\): it is a .*Model.*Saveable"):
        learner.save(tmp_path / "l.pt")
    assert not (tmp_path / "l.pt").exists()


def _file(tmp_path, obj):
    path = tmp_path / "crafted.pt"
    save_checkpoint(path, {"format": LEARNER_FORMAT, "object": obj, "state": None})
    return path


@pytest.mark.parametrize("obj, match", [
    ({"__rlx_object__": "os:system", "args": ["true"], "kwargs": {}, "id": 0}, "not an rlx.core.checkpoint.Saveable"),
    ({"__rlx_dataclass__": "subprocess:Popen", "fields": {}, "id": 0}, "is not a dataclass"),
    ({"__rlx_object__": "some_module_never_imported:Thing", "args": [], "kwargs": {}, "id": 0}, "is not imported"),
    ({"__rlx_object__": "rlx.algos.ppo:NoSuchClass", "args": [], "kwargs": {}, "id": 0}, "does not exist"),
])
def test_a_crafted_file_constructs_nothing_but_rlx_objects(tmp_path, obj, match):
    import sys

    with pytest.raises(UnsafeFileError, match=match):
        Saveable.load(_file(tmp_path, obj))
    assert "some_module_never_imported" not in sys.modules


def test_load_refuses_other_files_and_other_classes(tmp_path):
    from rlx.algos.ppo import PPO
    from rlx.algos.sac import SAC

    save_checkpoint(tmp_path / "last.pt", {"learner": {}, "loop": {}})
    with pytest.raises(UnsafeFileError, match=r"not a file written by learner.save\(\).*rlx.load\(run_dir\)"):
        PPO.load(tmp_path / "last.pt")
    with pytest.raises(TypeError, match="holds a PPO, not a SAC"):
        SAC.load(_ppo().save(tmp_path / "ppo.pt"))
    assert isinstance(Saveable.load(tmp_path / "ppo.pt"), PPO)  # the base class loads any learner file


def test_every_space_kind_round_trips():
    import numpy as np

    from rlx.core.checkpoint import _Encoder

    spaces = gym.spaces
    kinds = [spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 5.0], np.float32)),
             spaces.Box(0, 255, (2, 3), dtype=np.uint8), spaces.Discrete(5, start=2),
             spaces.MultiDiscrete([3, 4], start=[1, 0]), spaces.MultiBinary(4), spaces.MultiBinary([2, 3]),
             spaces.Dict({"observation": spaces.Box(-1, 1, (3,)), "desired_goal": spaces.Box(-1, 1, (3,))}),
             spaces.Tuple([spaces.Discrete(2), spaces.Box(-1, 1, (1,))])]
    for space in kinds:
        encoded = _Encoder().encode(space, "space")
        buffer = io.BytesIO()
        torch.save(encoded, buffer)
        buffer.seek(0)
        assert decode_init(torch.load(buffer, weights_only=True)) == space, space
    with pytest.raises(TypeError, match="gymnasium space Text is not one of"):
        _Encoder().encode(spaces.Text(5), "space")


def test_plain_values_round_trip_with_their_types():
    import numpy as np

    from rlx.core.checkpoint import _Encoder

    value = {"a": (1, 2.5, "x", None, True), 3: [torch.float16, torch.device("cpu")], "arr": np.arange(3, dtype=np.int16),
             "t": torch.ones(2)}
    buffer = io.BytesIO()
    torch.save(_Encoder().encode(value, "value"), buffer)
    buffer.seek(0)
    back = decode_init(torch.load(buffer, weights_only=True))
    assert back.keys() == value.keys() and back["a"] == (1, 2.5, "x", None, True)
    assert back[3] == [torch.float16, torch.device("cpu")] and torch.equal(back["t"], value["t"])
    assert back["arr"].dtype == np.int16 and back["arr"].tolist() == [0, 1, 2]
