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
