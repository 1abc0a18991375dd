"""Tiles: overlapping windows over an image and seamless blending of per-tile results.

MAP ascent keeps one step's activations of the denoiser, the prior's and the
fidelity's autograd graphs at full resolution: 2.4-3.0 KB per pixel above the
loaded built-in model (benchmarks/bench_tiles.py), so a 12-megapixel photo
would need about 30 GB. :func:`ascend_tiled` enhances overlapping tiles one at
a time (memory bounded by the tile, time linear in the area) and blends them with raised-cosine weights, so a tile's
border, where its denoiser and prior see no context, carries almost no weight.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from . import report as reports
from .ascent import MapResult, adaptive_weight, ascend, check_image, resolve_adaptive_prior
from ..autograd import usable
from ..models.codec import PixelCodec
from ..runtime import halving_retry
from ..tiles import Grid
from .settings import MapSettings, TileSettings

DEFAULT_TILE = TileSettings.tile            # 3-3.5 GiB peak on the CPU with the built-in model (bench_tiles.py)
DEFAULT_OVERLAP = TileSettings.tile_overlap
# The report scores the whole photo up to this many tiles' area; beyond, scoring it at once (no gradient, yet
# 0.4 KB per pixel for NIQE + BRISQUE: 5 GB at 12 megapixels) would outgrow a tile's ascent, so the report
# gives the area-weighted mean of the tiles' scores instead and says so (``scores_over``).
WHOLE_SCORE_TILES = 8


def tile_grid(denoiser, codec, height: int, width: int, tile: int, overlap: int) -> Optional[Grid]:
    """The tiles :func:`ascend_tiled` uses for an image, or None when it fits in one.

    The tile is rounded down to whole multiples of the codec's factor (times the
    denoiser's multiple, if it declares one), so no tile is padded, and tiles
    start on the grid the model computes on (that, times its network's own
    multiple: 8 pixels for the built-in model and for a VAE's latents).
    """
    if overlap < 0 or 2 * overlap > tile:
        raise ValueError(f"tile overlap must be between 0 and half the tile ({tile // 2} pixels); got {overlap}")
    if height <= tile and width <= tile:  # before rounding: an image within the asked size is never split
        return None
    multiple = int((codec or PixelCodec()).factor) * int(getattr(denoiser, "multiple", 1))
    tile = max(multiple, tile - tile % multiple)
    overlap = min(overlap, tile - 1)
    # The pixel grid the model computes on: the codec's factor times the network's own multiple.
    grid = multiple * int(getattr(getattr(denoiser, "network", None), "multiple", 1))
    return Grid(height, width, tile, overlap, align=grid if grid <= (tile - overlap) // 2 else 1)


def ascend_tiled(
    denoiser,
    image: torch.Tensor,
    prior,
    settings: Optional[MapSettings] = None,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    codec=None,
    monitors: Sequence = (),
    weight_map: Optional[torch.Tensor] = None,
    cond: Any = None,
    callback: Optional[Callable[[dict], None]] = None,
    adaptive_prior=None,
    **overrides,
) -> MapResult:
    """:func:`~iqa_map.core.map.ascend` on overlapping tiles of at most ``tile`` pixels a side, blended.

    An image that fits in one tile is passed to ``ascend`` unchanged. Each tile is
    inverted and climbed on its own with the same settings and seed; adaptive
    fidelity draws its quality map once, from the whole photo, so every tile
    weights its pixels on the same scale. The callback's ``info`` carries
    ``tile`` (0-based) and ``tiles``. The report's ``tiles`` holds each tile's
    box and report; ``history`` is every tile's history, each entry tagged with
    its ``tile``; PSNR and SSIM are of the whole blended image, and so are the
    scores up to ``WHOLE_SCORE_TILES`` tiles' area (``scores_over`` "image"),
    beyond which they are the area-weighted mean over the tiles ("tiles"). Out of memory, the run starts
    again with tiles half as large (:func:`..runtime.halving_retry`; an image in one tile is then split).
    """
    first = min(tile, max(image.shape[-2:]))  # the first attempt runs as asked; a retry halves what was used
    s = dataclasses.replace(settings or MapSettings(), **overrides)
    s.validate()
    check_image(image)
    adaptive_prior = resolve_adaptive_prior(prior, s, image.device, adaptive_prior)  # once, for every attempt
    return halving_retry(lambda t: _ascend_tiled(denoiser, image, prior, s, tile=tile if t == first else t,
                                                 overlap=overlap if t == first else min(overlap, t // 4), codec=codec,
                                                 monitors=monitors, weight_map=weight_map, cond=cond,
                                                 callback=callback, adaptive_prior=adaptive_prior),
                         first, what="MAP ascent")


def _ascend_tiled(denoiser, image, prior, s: MapSettings, *, tile, overlap, codec, monitors, weight_map, cond,
                  callback, adaptive_prior) -> MapResult:
    h, w = image.shape[-2:]
    grid = tile_grid(denoiser, codec, h, w, tile, overlap)
    if grid is None:
        return ascend(denoiser, image, prior, s, codec=codec, monitors=monitors, weight_map=weight_map, cond=cond,
                      callback=callback, adaptive_prior=adaptive_prior)
    t0 = time.perf_counter()
    with torch.inference_mode(False):
        image = usable(image).detach()
        if weight_map is not None:  # cropped with the image, so first brought to its size (as Fidelity would)
            weight_map = usable(weight_map).float()
            if weight_map.shape[-2:] != (h, w):
                weight_map = F.interpolate(weight_map, size=(h, w), mode="bilinear", align_corners=False)
        if adaptive_prior is not None:
            adaptive = adaptive_weight(adaptive_prior, s, image.float(), (h, w))
            weight_map = adaptive if weight_map is None else weight_map * adaptive
        per_tile = dataclasses.replace(s, adaptive_fidelity=None)
        outputs, tile_reports = [], []
        for k, (y, x, th, tw) in enumerate(grid.boxes()):
            def tile_callback(info, k=k):
                callback({**info, "tile": k, "tiles": len(grid)})

            res = ascend(denoiser, image[..., y:y + th, x:x + tw], prior, per_tile, codec=codec, monitors=monitors,
                         weight_map=None if weight_map is None else weight_map[..., y:y + th, x:x + tw],
                         cond=cond, callback=tile_callback if callback is not None else None)
            outputs.append(res.image.float())
            tile_reports.append(res.report)
        out = grid.blend(outputs).clamp(0, 1)
    return MapResult(image=out, report=_tiled_report(tile_reports, s, grid, out, image.float(), prior, monitors, t0))


def _tiled_report(tile_reports: list, s: MapSettings, grid: Grid, out, inp, prior, monitors, t0: float):
    """One report for the whole photo (:func:`.report.build`): the tiles' reports merged, the scores of the whole
    blended image up to ``WHOLE_SCORE_TILES`` tiles' area, else the area-weighted mean over the tiles."""
    whole = grid.height * grid.width <= WHOLE_SCORE_TILES * grid.tile ** 2
    settings = {**tile_reports[0].settings, **{k: getattr(s, k) for k in ("adaptive_fidelity", "adaptive_floor",
                                                                           "adaptive_normalise")},
                "tile": grid.tile, "tile_overlap": grid.overlap, "tile_align": grid.align}
    return reports.build(out, inp, prior, monitors, settings=settings, wall_seconds=time.perf_counter() - t0,
                         boxes=None if whole else grid.boxes(),
                         **reports.merge_tiles(tile_reports, [[y, x, th, tw] for y, x, th, tw in grid.boxes()]))
