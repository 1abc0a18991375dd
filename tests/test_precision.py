"""Apple MPS has no float64: the latent pair and tile blending fall back to float32 with one warning (the
decision tested directly, and its wiring on the CPU with the device's answer replaced)."""
import logging

import torch

from iqa_map.core import map as M
from iqa_map.core.sampling import precision
from iqa_map.core.map.tiling import Grid

from test_map import _img, _pixel_model


def test_mps_gets_float32_with_one_warning_others_float64(caplog, monkeypatch):
    monkeypatch.setattr(precision, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="iqa_map"):
        assert precision.wide_dtype(torch.device("mps"), "EDICT inversion") is torch.float32
        assert precision.wide_dtype("mps", "EDICT inversion") is torch.float32
        assert precision.wide_dtype(torch.device("cpu"), "EDICT inversion") is torch.float64
        assert precision.wide_dtype(torch.device("cuda", 0), "EDICT inversion") is torch.float64
    warnings = [r.getMessage() for r in caplog.records if "float32 on mps" in r.getMessage()]
    assert len(warnings) == 1 and "EDICT inversion" in warnings[0] and "exact only to float32" in warnings[0]


def test_without_float64_inversion_and_blending_run_in_float32_and_stay_close(monkeypatch, caplog):
    den, x = _pixel_model(), _img(size=16)
    exact = M.invert(den, x, steps=4, strength=0.5)
    assert exact.pair[0].dtype is torch.float64
    monkeypatch.setattr(precision, "has_float64", lambda device: False)  # what MPS answers
    monkeypatch.setattr(precision, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="iqa_map"):
        f32 = M.invert(den, x, steps=4, strength=0.5)
        ddim = M.invert(den, x, steps=4, strength=0.5, method="ddim")
    assert f32.pair[0].dtype is torch.float32 and ddim.pair[0].dtype is torch.float32
    assert sum("EDICT inversion" in r.getMessage() for r in caplog.records) == 1
    assert sum("DDIM inversion" in r.getMessage() for r in caplog.records) == 1
    # float32 state: the same inversion up to rounding
    assert torch.allclose(f32.pair[0], exact.pair[0].float(), atol=1e-4)
    g = Grid(40, 40, 24, 8)
    crops = [_img(size=40)[..., y:y + h, x0:x0 + w] for y, x0, h, w in g.boxes()]
    assert torch.allclose(g.blend(crops), _img(size=40), atol=1e-6)
