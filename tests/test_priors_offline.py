"""Offline weights: a missing pyiqa checkpoint fails fast and clearly; a dropped-in file loads.

Uses pyiqa's CNNIQA (KonIQ) model: its only download is one small checkpoint
fetched through ``load_file_from_url``, so the test can build that file itself
from the architecture's random initialisation and never touch the network.
"""
from __future__ import annotations

import time

import pytest
import torch

from iqa_map.core import priors
from iqa_map.core.priors import WeightsMissingError, weights

CKPT = "CNNIQA_koniq10k-e6f14c91.pth"


def test_missing_weights_fail_fast_with_clear_error(offline):
    folder = offline / "weights"
    t0 = time.monotonic()
    with pytest.raises(WeightsMissingError) as err:
        priors.load("cnniqa", weights_dir=folder)
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert CKPT in msg and str(folder) in msg and "huggingface.co" in msg and "unreachable" in msg
    assert not folder.exists(), "a failed load must not create files"


def test_weights_from_env_folder_are_used(offline, monkeypatch):
    from pyiqa.archs.cnniqa_arch import CNNIQA

    folder = offline / "weights"
    folder.mkdir()
    net = CNNIQA(pretrained=None)
    torch.save({"params": net.state_dict()}, folder / CKPT)
    monkeypatch.setenv(weights.ENV_VAR, str(folder))
    p = priors.load("cnniqa")
    loaded = p.metric.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
    assert p.name == "cnniqa" and not p.lower_better and p.calibration is None
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    p(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="fit_calibration"):
        p.calibrated(x)


def test_hooks_are_removed_after_load(offline):
    """No global state leaks: download functions and Hugging Face offline mode are restored."""
    import os

    import huggingface_hub.constants as hfc
    import pyiqa.archs.arch_util as au
    import pyiqa.utils.download_util as du

    before = (au.load_file_from_url, torch.hub.load_state_dict_from_url, os.environ.get("HF_HUB_OFFLINE"),
              hfc.HF_HUB_OFFLINE)
    with pytest.raises(WeightsMissingError):
        priors.load("cnniqa", weights_dir=offline / "w")
    after = (au.load_file_from_url, torch.hub.load_state_dict_from_url, os.environ.get("HF_HUB_OFFLINE"),
             hfc.HF_HUB_OFFLINE)
    assert after == before and du.load_file_from_url is before[0]
