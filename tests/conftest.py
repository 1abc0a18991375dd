import socket

import pytest
import torch

# The tests run small tensors, where one thread is fastest; with a busy second core, two
# OpenMP threads were measured 15x slower than one on the tiny UNets.
torch.set_num_threads(1)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, an empty pyiqa cache and torch hub under tmp_path (offline-weights tests)."""
    from iqa_map.core.priors import weights

    def refuse(self, *args, **kwargs):
        raise OSError("network disabled by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, *a, **k: 111)
    monkeypatch.setattr(weights, "pyiqa_cache_dir", lambda: tmp_path / "pyiqa_cache")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def piqe():
    """The built-in PIQE prior (no weights: total, fast)."""
    from iqa_map.core import priors

    return priors.load("piqe")


@pytest.fixture(scope="session")
def candidates():
    """Four candidates of one scene, best first by eye: a clean crop, light blur, noise, heavy blur."""
    from helpers import photo01

    from iqa_map.core.priors.distortions import gaussian_blur, gaussian_noise

    x = photo01()
    return torch.cat([x, gaussian_blur(x, 1.0), gaussian_noise(x, 10, seed=1), gaussian_blur(x, 2.5)])
