"""An out-of-memory error on a tile retries with a smaller tile (simulated: a model that fails above a size)."""
from __future__ import annotations

import pytest
import torch

from iqa_map.core import oom
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
    with pytest.raises(RuntimeError, match="even with 64-pixel tiles: free GPU memory"):
        upscale((NeedsSmallTiles(limit=8), 2), torch.rand(1, 3, 80, 80), tile=128)
