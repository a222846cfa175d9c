import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def _tiny_dataset():
    from rlx.envs.datasets import make_tiny

    return make_tiny(num_steps=2000, seed=0)


@pytest.fixture
def offline_data(tmp_path, monkeypatch, _tiny_dataset):
    """$RLX_DATA holding pendulum-tiny (2,000 rows)."""
    from rlx.envs.datasets import save_dataset

    monkeypatch.setenv("RLX_DATA", str(tmp_path / "data"))
    save_dataset("pendulum-tiny", _tiny_dataset)
    return tmp_path / "data"
