"""PIQE (Venkatanath et al., NCC 2015): perception-based, opinion-unaware quality, with a gradient.

The luma is stretched to the full 8-bit range and rounded, padded at the bottom and right, turned into
MSCN coefficients (:mod:`.imgproc`) and cut into 16x16 blocks. A block is *active* when its coefficient
variance exceeds 0.1. An active block is distorted by noise when its deviation exceeds twice the
dissimilarity of its centre and surround deviations, and by a noticeable artefact (blocking, a flat
patch) when some 6-sample segment of one of its four edges is nearly constant (deviation < 0.1). The
score is ``100 (sum of distortion + 1) / (active blocks + 1)``, lower = better.

Two details follow the implementation whose values the shipped calibration and the published
figures were computed with, not the MATLAB reference, so that scores stay the same: the padding adds
``size mod 16`` rows and columns (mirrored), and the surround of a block leaves out its columns 8 and
10 (1-based), not 8 and 9 (:data:`SURROUND_DROPS`).

The 8-bit rounding is straight-through, so the score has a gradient (through the block variances;
the block masks are hard thresholds).
"""
from __future__ import annotations

import torch

from .imgproc import luma_yiq, mscn, st_round, symmetric_pad

#: Columns (0-based, of the 16) left out of a block's surround; see the module docstring.
SURROUND_DROPS = (7, 9)


def _centre_surround_ratio(blocks: torch.Tensor) -> torch.Tensor:
    """Deviation of each block's two centre columns over that of the rest (0 where undefined)."""
    n = blocks.shape[-1]
    c = n // 2
    centre = torch.stack((blocks[..., c - 1], blocks[..., c]), dim=-1)  # contiguous: the same float sums as pyiqa's
    keep = [i for i in range(n) if i not in SURROUND_DROPS]
    surround = blocks[..., keep]
    ratio = torch.std(centre, dim=(-2, -1)) / torch.std(surround, dim=(-2, -1))
    return torch.nan_to_num(ratio)


def _edge_impaired(blocks: torch.Tensor, segment: int, threshold: float) -> torch.Tensor:
    """Whether some ``segment``-long run along one of a block's four edges has a deviation under ``threshold``."""
    edges = (blocks[..., 0, :], blocks[..., :, -1], blocks[..., -1, :], blocks[..., :, 0])
    low = [(torch.std(e.unfold(-1, segment, 1), dim=-1) < threshold).sum(-1) for e in edges]
    return sum(low) > 0


def piqe(img: torch.Tensor, block_size: int = 16, activity_threshold: float = 0.1,
         block_impaired_threshold: float = 0.1, window_size: int = 6) -> torch.Tensor:
    """PIQE score [B] of an RGB batch in [0, 1] (lower = better)."""
    y = luma_yiq(img, 1.0)
    # the brightest pixel maps to 255; clamped so that an all-black image does not divide by 0
    y = st_round(255 * (y / y.flatten(1).amax(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)))
    b, _, h, w = y.shape
    y = mscn(symmetric_pad(y, 0, w % block_size, 0, h % block_size), padding="replicate")
    blocks = y.unfold(2, block_size, block_size).unfold(3, block_size, block_size)
    blocks = blocks.contiguous().view(b, -1, block_size, block_size)
    var = torch.var(blocks, dim=(2, 3), unbiased=True)
    active = (var > activity_threshold).float()
    with torch.no_grad():
        sigma = var.detach().sqrt()
        ratio = _centre_surround_ratio(blocks.detach())
        beta = (sigma - ratio).abs() / torch.maximum(sigma, ratio)
        noisy = (sigma > 2 * beta).float()
        impaired = _edge_impaired(blocks.detach(), window_size, block_impaired_threshold).float()
    dist = (active * impaired * (1 - var) + active * noisy * var).sum(dim=1)
    return (dist + 1) / (active.sum(dim=1) + 1) * 100
