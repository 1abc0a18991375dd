"""NIQE and BRISQUE made total: a finite score and a finite gradient for every image.

pyiqa's NIQE fits a Gaussian to per-block natural-scene-statistics (NSS) features and
drops the blocks whose features are undefined (NaN), as the MATLAB original does. On a
flat block (sky, a studio backdrop, a letterbox bar) the features are 0/0: when every
block is flat nothing is left and the SVD fails, and when only some are, the NaN of the
dropped rows still flows back through the gradient. pyiqa's BRISQUE asserts on a zero
variance and divides by zero when the coefficients have one sign only.

Here the same statistics are computed so that nothing undefined is ever evaluated:

* **NIQE** scores the blocks whose features are defined (the original rule) and whose luma
  varies by at least one grey level before the 8-bit rounding (a flat block can round to
  two tones and give defined but meaningless features), found in a first pass without gradient; the second pass computes features of those blocks only.
  One defined block gives a covariance of zero (no spread observed). No defined block
  at all: the image carries no texture NIQE can judge and gets ``flat_score``.
* **BRISQUE** keeps its global statistics (flat pixels count, as they should: JPEG
  blocking, blur and clipping make them), with one-sided or zero moments guarded. An
  image whose luma varies by less than one grey level (:func:`.base.textureless`) gets ``flat_score``.

Wherever pyiqa returns a finite score the value is pyiqa's (tests check it on photos).
"""
from __future__ import annotations

import torch

from .base import FLAT_RANGE, textureless

#: Moments below this count as zero (float64 luma on the 0-255 scale).
TINY = 1e-30


def _luma255(img: torch.Tensor, rounded: bool = True) -> torch.Tensor:
    """YIQ luma on the 0-255 scale; ``rounded`` as pyiqa does (straight-through 8-bit rounding)."""
    from pyiqa.utils.color_util import to_y_channel
    return to_y_channel(img, 255.0, "yiq") if rounded else to_y_channel(img, 1.0, "yiq") * 255.0


def _blocks(x: torch.Tensor, size: int, nh: int, nw: int) -> torch.Tensor:
    """[B,1,H,W] -> [B, nh*nw, 1, size, size] non-overlapping blocks (row-major)."""
    b = x.shape[0]
    x = x[..., : nh * size, : nw * size]
    return x.unfold(2, size, size).unfold(3, size, size).reshape(b, 1, nh * nw, size, size).transpose(1, 2)


def niqe(img: torch.Tensor, mu_pris: torch.Tensor, cov_pris: torch.Tensor, flat_score: float,
         block: int = 96) -> torch.Tensor:
    """NIQE [B] of an RGB batch in [0, 1] (pyiqa's ``calculate_niqe`` defaults: YIQ luma, 96-pixel blocks)."""
    from pyiqa.archs.func_util import diff_round, normalize_img_with_gauss
    from pyiqa.archs.niqe_arch import compute_feature
    from pyiqa.matlab_utils import imresize

    luma = _luma255(img, rounded=False)
    y = diff_round(luma).to(torch.float64)
    nh, nw = y.shape[-2] // block, y.shape[-1] // block
    # A block flat before rounding can round to two tones (a constant 127.5 or a resized constant with
    # float error): its features would be defined but meaningless, so it counts as flat as well.
    with torch.no_grad():
        lb = _blocks(luma.detach(), block, nh, nw).flatten(2)
        textured = (lb.amax(-1) - lb.amin(-1)).squeeze(-1) >= FLAT_RANGE  # [B, n]
    y = y[..., : nh * block, : nw * block]
    half = imresize(y / 255.0, scale=0.5, antialiasing=True) * 255.0
    scales = [_blocks(normalize_img_with_gauss(y, padding="replicate"), block, nh, nw),
              _blocks(normalize_img_with_gauss(half, padding="replicate"), block // 2, nh, nw)]
    with torch.no_grad():  # which blocks have defined features (computing them on all blocks is safe here)
        every = torch.cat([compute_feature(bl.flatten(0, 1).detach()).view(y.shape[0], nh * nw, -1)
                           for bl in scales], dim=-1)
        defined = torch.isfinite(every).all(-1) & textured
    graph = torch.is_grad_enabled() and y.requires_grad  # only then are the kept blocks' features recomputed
    mu_pris, cov_pris = mu_pris.to(y), cov_pris.to(y)
    out = []
    for i in range(y.shape[0]):
        keep = defined[i].nonzero().flatten()
        if keep.numel() == 0:
            out.append(y.new_tensor(flat_score) + 0 * y[i].sum())  # keeps the graph, gradient 0
            continue
        feat = (torch.cat([compute_feature(bl[i, keep]) for bl in scales], dim=-1) if graph
                else every[i, keep])  # [n, 36]
        mu = feat.mean(0)
        cov = torch.cov(feat.T) if feat.shape[0] > 1 else feat.new_zeros(feat.shape[1], feat.shape[1])
        diff = (mu_pris - mu)[None]
        q = diff @ torch.linalg.pinv((cov_pris + cov) / 2) @ diff.T
        out.append(q.reshape(()).clamp_min(1e-12).sqrt())
    return torch.stack(out)


def _ggd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pyiqa's ``estimate_ggd_param`` (shape by table look-up, scale) without 0/0 on zero input."""
    gamma = torch.arange(0.2, 10 + 0.001, 0.001).to(x)
    r_table = (torch.lgamma(1.0 / gamma) + torch.lgamma(3.0 / gamma) - 2 * torch.lgamma(2.0 / gamma)).exp()
    sigma_sq = x.pow(2).mean(dim=(-1, -2))
    e = x.abs().mean(dim=(-1, -2))
    rho = sigma_sq / e.pow(2).clamp_min(TINY)
    alpha = gamma[(rho - r_table.repeat(x.shape[0], 1)).abs().argmin(dim=-1)]
    return alpha, sigma_sq.clamp_min(TINY).sqrt().squeeze(-1)


def _aggd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pyiqa's ``estimate_aggd_param(..., return_sigma=True)`` with empty sides and zero moments guarded."""
    gam = torch.arange(0.2, 10 + 0.001, 0.001).to(x)
    r_gam = (2 * torch.lgamma(2.0 / gam) - (torch.lgamma(1.0 / gam) + torch.lgamma(3.0 / gam))).exp()
    left, right = x < 0, x > 0
    n_left = left.sum(dim=(-1, -2), dtype=x.dtype).clamp_min(1)
    n_right = right.sum(dim=(-1, -2), dtype=x.dtype).clamp_min(1)
    left_std = ((x * left).pow(2).sum(dim=(-1, -2)) / n_left).clamp_min(TINY).sqrt()
    right_std = ((x * right).pow(2).sum(dim=(-1, -2)) / n_right).clamp_min(TINY).sqrt()
    g = left_std / right_std
    rhat = x.abs().mean(dim=(-1, -2)).pow(2) / x.pow(2).mean(dim=(-1, -2)).clamp_min(TINY)
    rhatnorm = rhat * (g.pow(3) + 1) * (g + 1) / (g.pow(2) + 1).pow(2)
    alpha = gam[(r_gam.repeat(x.shape[0], 1) - rhatnorm).abs().argmin(dim=-1)]
    return alpha, left_std.squeeze(-1), right_std.squeeze(-1)


def _brisque_features(luma: torch.Tensor) -> torch.Tensor:
    from pyiqa.archs.func_util import normalize_img_with_gauss

    n = normalize_img_with_gauss(luma, 7, 7.0 / 6, padding="same")
    alpha, sigma = _ggd(n)
    feats = [alpha, sigma.pow(2)]
    for shift in ((0, 1), (1, 0), (1, 1), (-1, 1)):
        a, sl, sr = _aggd(n * torch.roll(n, shifts=shift, dims=(-2, -1)))
        eta = (sr - sl) * torch.exp(torch.lgamma(2.0 / a) - (torch.lgamma(1.0 / a) + torch.lgamma(3.0 / a)) / 2)
        feats += [a, eta, sl.pow(2), sr.pow(2)]
    return torch.stack(feats, dim=-1)


def brisque(img: torch.Tensor, sv_coef: torch.Tensor, sv: torch.Tensor, gamma: float, rho: float,
            flat_score: float) -> torch.Tensor:
    """BRISQUE [B] of an RGB batch in [0, 1] (pyiqa's 'original' version: SVR on two-scale NSS features)."""
    from pyiqa.archs.brisque_arch import rbf_kernel, scale_features
    from pyiqa.matlab_utils import imresize

    flat = textureless(img)
    x = _luma255(img)
    feats = []
    for _ in range(2):
        feats.append(_brisque_features(x))
        x = imresize(x, scale=0.5, antialiasing=True)
    f = scale_features(torch.cat(feats, dim=-1))
    score = (rbf_kernel(features=f, sv=sv.to(f).t(), gamma=gamma) @ sv_coef.to(f) - rho).reshape(-1)
    return torch.where(flat, score.new_tensor(flat_score), score)

