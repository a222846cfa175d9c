import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small pendulum-tiny dataset (scripted swing-up controller + noise), made once."""
    from rlx.envs.datasets import make_tiny

    return make_tiny(num_steps=4000, seed=0)


@pytest.fixture
def data_dir(tmp_path, monkeypatch, tiny_data):
    from rlx.envs.datasets import save_dataset

    monkeypatch.setenv("RLX_DATA", str(tmp_path / "data"))
    save_dataset("pendulum-tiny", tiny_data)
    return tmp_path / "data"
