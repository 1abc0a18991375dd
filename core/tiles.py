"""Tile windows over an image and the blending of per-tile results: one place for both.

Three kinds of work cut a photo into windows and put results back together:

* MAP ascent on a large photo and per-tile selection (:class:`Grid`): as few tiles as cover the
  photo with a given overlap, spread evenly, blended with raised-cosine weights (:func:`cosine_ramp`);
* the quality map's sliding windows and tiled upscaling (:func:`starts`): a window every ``stride``
  pixels, the last flush with the border;
* tiled upscaling's blend (:func:`linear_ramp`): the outer quarter of each overlap, which the
  tile's zero padding reaches, gets no weight.

:class:`Canvas` accumulates weighted patches and normalises by the summed weight, so where
neighbours agree the result is their value exactly and where they differ it fades over the overlap.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch

from .sampling.precision import wide_dtype


def starts(size: int, tile: int, stride: int) -> list:
    """Window starts along one axis: every ``stride``, the last one flush with the end so every pixel is
    covered (the quality map's windows, tiled upscaling; :class:`Grid` spreads tiles evenly instead)."""
    if size <= tile:
        return [0]
    pos = list(range(0, size - tile + 1, stride))
    if pos[-1] != size - tile:
        pos.append(size - tile)
    return pos


def cosine_ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D blending weight of one tile (float64): flat in the middle, raised-cosine ramps over the overlaps
    (none at the image border), so neighbouring weights sum smoothly."""
    w = torch.ones(length, dtype=torch.float64)
    n = min(overlap, length // 2)
    if n > 0:
        t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        up = 0.5 - 0.5 * torch.cos(torch.pi * t)
        if not at_start:
            w[:n] = up
        if not at_end:
            w[-n:] = up.flip(0)
    return w


def linear_ramp(n: int, overlap: int, first: bool, last: bool, device=None) -> torch.Tensor:
    """Blend weights along one side: the outer quarter of an overlap (where the tile's zero padding
    reaches) gets 0, the middle half a linear ramp; a side on the image border keeps 1."""
    w = torch.ones(n, device=device)
    if overlap > 0:
        q = overlap // 4
        r = torch.cat([torch.zeros(q, device=device),
                       torch.linspace(0, 1, overlap - 2 * q + 2, device=device)[1:-1],
                       torch.ones(q, device=device)])
        if not first:
            w[:overlap] = r
        if not last:
            w[-overlap:] = r.flip(0)
    return w


class Canvas:
    """A weighted sum of patches over a ``height`` x ``width`` image, divided by the summed weight at the end."""

    def __init__(self, batch: int, channels: int, height: int, width: int, dtype, device):
        self.dtype = dtype
        self.acc = torch.zeros(batch, channels, height, width, dtype=dtype, device=device)
        self.wsum = torch.zeros(1, 1, height, width, dtype=dtype, device=device)

    def add(self, y: int, x: int, patch: torch.Tensor, weight: torch.Tensor) -> None:
        """``patch`` [B,C,h,w] at ``(y, x)`` with ``weight`` [1,1,h,w] (already in the canvas' dtype)."""
        h, w = patch.shape[-2:]
        self.acc[..., y:y + h, x:x + w] += weight * patch.to(self.dtype)
        self.wsum[..., y:y + h, x:x + w] += weight

    def result(self, floor: Optional[float] = None) -> torch.Tensor:
        """The blend; ``floor`` bounds the summed weight below where a window layout can leave it at 0."""
        return self.acc / (self.wsum if floor is None else self.wsum.clamp_min(floor))


@dataclasses.dataclass(frozen=True)
class Grid:
    """Overlapping tiles of at most ``tile`` x ``tile`` pixels covering a ``height`` x ``width`` image.

    Tiles start at multiples of ``align``: a network that works on a pixel grid
    (the built-in model's 2x2 unshuffle and two downsamplings, a VAE's 8x8
    patches) then sees every tile on the same grid as the whole photo, so tiles
    agree with each other where they overlap. A last tile that cannot start
    aligned and end flush with the border is cut short instead (by less than
    ``align`` pixels).
    """
    height: int
    width: int
    tile: int
    overlap: int
    align: int = 1

    def __post_init__(self):
        if self.tile < 1 or not 0 <= self.overlap < self.tile or not 1 <= self.align <= self.tile - self.overlap:
            raise ValueError(f"tiles need tile >= 1, 0 <= overlap < tile and 1 <= align <= tile - overlap; got "
                             f"tile {self.tile}, overlap {self.overlap}, align {self.align}")

    @property
    def shape(self) -> tuple:
        """The largest tile's ``(h, w)`` (every tile's, with ``align`` 1)."""
        return min(self.tile, self.height), min(self.tile, self.width)

    def _starts(self, size: int) -> list:
        """As few tiles as cover ``size`` with at least ``overlap`` between neighbours, spread evenly (a last
        tile flush with the border would otherwise overlap its neighbour almost entirely); rounding a start
        up to ``align`` moves it by less than ``align``, which the spacing leaves room for."""
        if size <= self.tile:
            return [0]
        n = 1 + math.ceil((size - self.tile) / (self.tile - self.overlap - self.align + 1))
        return [math.ceil(round(i * (size - self.tile) / (n - 1), 6) / self.align) * self.align for i in range(n)]

    @property
    def rows(self) -> list:
        return self._starts(self.height)

    @property
    def cols(self) -> list:
        return self._starts(self.width)

    def boxes(self) -> list:
        """``(y, x, h, w)`` of every tile, row by row."""
        return [(y, x, min(self.tile, self.height - y), min(self.tile, self.width - x))
                for y in self.rows for x in self.cols]

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def blend(self, patches: Sequence[torch.Tensor]) -> torch.Tensor:
        """One image from one ``[B,C,h,w]`` patch per box (in :meth:`boxes` order), raised-cosine weights
        normalised by their sum (in float64 where the device has it)."""
        first = patches[0]
        dt = wide_dtype(first.device, "tile blending")  # float32 on MPS
        canvas = Canvas(first.shape[0], first.shape[1], self.height, self.width, dt, first.device)
        for (y, x, th, tw), patch in zip(self.boxes(), patches, strict=True):
            wy = cosine_ramp(th, self.overlap, y == 0, y + th >= self.height)
            wx = cosine_ramp(tw, self.overlap, x == 0, x + tw >= self.width)
            canvas.add(y, x, patch, (wy[:, None] * wx[None, :])[None, None].to(first.device, dt))
        return canvas.result().to(first.dtype)
