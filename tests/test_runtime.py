"""An out-of-memory error on a tile retries with a smaller tile (simulated: a model that fails above a size)."""
from __future__ import annotations

import pytest
import torch

from iqa_map.core import runtime as oom
from iqa_map.core.sr.model import upscale


class NeedsSmallTiles(torch.nn.Module):
    """A 2x upscaler that raises CUDA's OOM error for inputs larger than ``limit`` pixels a side."""

    def __init__(self, limit: int, error=torch.cuda.OutOfMemoryError):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.limit, self.error, self.sizes = limit, error, []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        if max(x.shape[-2:]) > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return torch.nn.functional.interpolate(self.conv(x).sigmoid(), scale_factor=2, mode="nearest")


def test_upscale_halves_the_tile_on_oom_and_gives_the_small_tile_result():
    img = torch.rand(1, 3, 150, 150, generator=torch.Generator().manual_seed(0))
    net = NeedsSmallTiles(limit=64)
    freed = []
    out = upscale((net, 2), img, tile=256, overlap=32, on_oom=lambda: freed.append(1))
    assert [max(s) for s in net.sizes[:2]] == [150, 128] and max(net.sizes[-1]) == 64, net.sizes
    assert len(freed) == 2, "the cache is freed before each retry"
    ref = upscale((NeedsSmallTiles(limit=10 ** 6).requires_grad_(False), 2), img, tile=64, overlap=16)
    net2 = NeedsSmallTiles(limit=10 ** 6)
    net2.load_state_dict(net.state_dict())
    assert torch.allclose(out, upscale((net2, 2), img, tile=64, overlap=16))
    assert out.shape == ref.shape == (1, 3, 300, 300)


def test_untiled_upscale_falls_back_to_tiles_on_oom_and_mps_style_errors_count():
    img = torch.rand(1, 3, 140, 120)
    net = NeedsSmallTiles(limit=80, error=RuntimeError)  # MPS: "MPS backend out of memory" is a RuntimeError
    out = upscale((net, 2), img, tile=0)
    assert out.shape == (1, 3, 280, 240) and max(net.sizes[0]) == 140 and max(net.sizes[-1]) == 70


def test_other_errors_are_not_retried_and_the_floor_says_what_to_do():
    calls = []

    def broken(tile):
        calls.append(tile)
        raise ValueError("bad input")
    with pytest.raises(ValueError, match="bad input"):
        oom.halving_retry(broken, 512, on_oom=lambda: None)
    assert calls == [512]
    floor = r"even with 64-pixel tiles \(CUDA out of memory\. Tried to allocate 2\.00 GiB \(simulated\)\): free GPU"
    with pytest.raises(RuntimeError, match=floor):  # the backend's own message kept
        upscale((NeedsSmallTiles(limit=8), 2), torch.rand(1, 3, 80, 80), tile=128)


class _OOMAbove:
    """Wraps a prior: raises CUDA's OOM error when asked for a gradient through an image over ``limit`` pixels
    a side (the ascent's graph is what outgrows the memory; the report's no-grad scoring does not)."""

    def __init__(self, prior, limit: int, grad_only: bool = True):
        self.prior, self.limit, self.grad_only, self.sizes = prior, limit, grad_only, []

    def __getattr__(self, name):
        return getattr(self.prior, name)

    def _check(self, img):
        self.sizes.append(max(img.shape[-2:]))
        if max(img.shape[-2:]) > self.limit and (torch.is_grad_enabled() or not self.grad_only):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    def __call__(self, img, *a, **k):
        self._check(img)
        return self.prior(img, *a, **k)

    def native(self, img, *a, **k):
        self._check(img)
        return self.prior.native(img, *a, **k)


@pytest.fixture
def small_floor(monkeypatch):
    """A 16-pixel floor, so the pixel test model's tiles stay cheap on the CPU."""
    import functools

    from iqa_map.core.map import tiling
    monkeypatch.setattr(tiling, "halving_retry", functools.partial(oom.halving_retry, min_tile=16))


def test_tiled_ascent_halves_the_tile_on_oom_and_equals_the_small_tile_run(small_floor):
    from test_map import FAST, Brightness, _pixel_model

    from iqa_map.core.map.tiling import ascend_tiled

    den = _pixel_model()
    x = torch.rand(1, 3, 40, 32, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    prior = _OOMAbove(Brightness(), limit=30)
    out = ascend_tiled(den, x, prior, tile=512, overlap=8, **FAST)  # fits one tile: plain ascend first, OOM
    assert max(prior.sizes) == 40 and 20 in prior.sizes  # then 40 // 2 = 20-pixel tiles, overlap <= 20 // 4
    ref = ascend_tiled(den, x, Brightness(), tile=20, overlap=5, **FAST)
    assert out.report["settings"]["tile"] == ref.report["settings"]["tile"] == 20
    assert torch.equal(out.image, ref.image)


def test_tiled_ascent_gives_up_at_the_floor_with_what_to_do(small_floor):
    from test_map import FAST, Brightness, _pixel_model

    from iqa_map.core.map.tiling import ascend_tiled

    with pytest.raises(RuntimeError, match=r"in MAP ascent even with 16-pixel tiles \(CUDA out of memory\. .*\): "
                                           "free GPU"):
        ascend_tiled(_pixel_model(), torch.rand(1, 3, 32, 32), _OOMAbove(Brightness(), limit=4), tile=32,
                     overlap=4, **FAST)


def test_quality_map_halves_the_batch_on_oom_and_keeps_the_map():
    from test_map import Brightness

    from iqa_map.core.quality.qmap import quality_map

    class OOMOverBatch(_OOMAbove):
        def _check(self, img):
            self.sizes.append(img.shape[0])
            if img.shape[0] > self.limit:
                raise RuntimeError("MPS backend out of memory (simulated)")

    img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    prior = OOMOverBatch(Brightness(), limit=5)
    qm = quality_map(prior, img, window=16, stride=8, batch=64)
    ref = quality_map(Brightness(), img, window=16, stride=8, batch=64)
    assert torch.allclose(qm.scores, ref.scores, atol=1e-6) and torch.equal(qm.badness, ref.badness)
    # 49 windows: 64 -> 32 -> 16 -> 8 -> 4 crops per call; the second image starts at 4
    assert prior.sizes[:4] == [49, 32, 16, 8] and set(prior.sizes[4:]) <= {4, 1} and prior.sizes[4] == 4
    with pytest.raises(RuntimeError, match=r"even with 1 crops per batch \(MPS backend out of memory "
                                           r"\(simulated\)\): .*smaller window"):
        quality_map(OOMOverBatch(Brightness(), limit=0), img, window=16, stride=8)


def test_one_interrupted_stops_map_ascent_and_sr_finetuning():
    """Callbacks raise one class whichever run they stop (nodes and the CLI catch it once)."""
    from iqa_map.core import map as M, sr

    assert M.Interrupted is sr.Interrupted is oom.Interrupted
    assert issubclass(oom.Interrupted, RuntimeError)
