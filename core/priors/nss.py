"""NIQE (Mittal, Soundararajan and Bovik 2013) and BRISQUE (Mittal, Moorthy and Bovik 2012), total:
a finite score and a finite gradient for every image.

Both model natural-scene statistics (NSS) of the MSCN coefficients of the luma (:mod:`.imgproc`): a
generalised Gaussian (GGD) fit of the coefficients and asymmetric GGD (AGGD) fits of the products of
horizontally, vertically and diagonally adjacent coefficients, at two scales. NIQE measures the
Mahalanobis-like distance of the per-block features' Gaussian to a pristine model; BRISQUE feeds the
image's features to an RBF support-vector regressor. The moment-matching fits search the shape on a
grid of step 0.001 over [0.2, 10] as the MATLAB reference code does (the grid held in single precision,
as the implementation the shipped calibrations were fitted with had it).

The reference NIQE fits a Gaussian to per-block natural-scene-statistics (NSS) features and
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

BRISQUE runs in single precision (as the implementation its calibration was fitted with did): its value
moves by ~3e-5 relative with the number of CPU threads (the order of float32 sums), pyiqa's as well.

Wherever pyiqa (an optional package) returns a finite score the value is pyiqa's within 1e-6 relative
(tests check it on the dev photos and the calibration set when pyiqa is installed).
"""
from __future__ import annotations

import torch

from .base import FLAT_RANGE, textureless
from .imgproc import imresize, luma_yiq, mscn, st_round

#: Moments below this count as zero (float64 luma on the 0-255 scale).
TINY = 1e-30


def _luma255(img: torch.Tensor, rounded: bool = True) -> torch.Tensor:
    """YIQ luma on the 0-255 scale, ``rounded`` to 8-bit levels (straight-through) as MATLAB's uint8 grey."""
    return luma_yiq(img, 255.0) if rounded else luma_yiq(img, 1.0) * 255.0


def _blocks(x: torch.Tensor, size: int, nh: int, nw: int) -> torch.Tensor:
    """[B,1,H,W] -> [B, nh*nw, 1, size, size] non-overlapping blocks (row-major)."""
    b = x.shape[0]
    x = x[..., : nh * size, : nw * size]
    return x.unfold(2, size, size).unfold(3, size, size).reshape(b, 1, nh * nw, size, size).transpose(1, 2)


def _shape_grid(x: torch.Tensor) -> torch.Tensor:
    """The candidate shape parameters 0.2, 0.201, ..., 10 (single-precision grid, see the module docstring)."""
    return torch.arange(0.2, 10 + 0.001, 0.001).to(x)


def _ggd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GGD fit by moment matching (BRISQUE eq. 2): the shape whose ratio Gamma(1/a)Gamma(3/a)/Gamma(2/a)^2
    is nearest to E[x^2]/E|x|^2, and the deviation; zero input gives finite values."""
    gamma = _shape_grid(x)
    r_table = (torch.lgamma(1.0 / gamma) + torch.lgamma(3.0 / gamma) - 2 * torch.lgamma(2.0 / gamma)).exp()
    sigma_sq = x.pow(2).mean(dim=(-1, -2))
    e = x.abs().mean(dim=(-1, -2))
    rho = sigma_sq / e.pow(2).clamp_min(TINY)
    alpha = gamma[(rho - r_table.repeat(x.shape[0], 1)).abs().argmin(dim=-1)]
    return alpha, sigma_sq.clamp_min(TINY).sqrt().squeeze(-1)


def _aggd(x: torch.Tensor, guard: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AGGD fit by moment matching (BRISQUE eqs. 5-7, the MATLAB ``estimateaggdparam``): the shape, and the
    left and right deviations. ``guard``: empty sides and zero moments give finite values; without it
    they give NaN, which is how NIQE finds the blocks whose features are undefined."""
    gam = _shape_grid(x)
    r_gam = (2 * torch.lgamma(2.0 / gam) - (torch.lgamma(1.0 / gam) + torch.lgamma(3.0 / gam))).exp()
    left, right = x < 0, x > 0
    lo = 1 if guard else 0
    tiny = TINY if guard else 0.0
    n_left = left.sum(dim=(-1, -2), dtype=x.dtype).clamp_min(lo)
    n_right = right.sum(dim=(-1, -2), dtype=x.dtype).clamp_min(lo)
    left_std = ((x * left).pow(2).sum(dim=(-1, -2)) / n_left).clamp_min(tiny).sqrt()
    right_std = ((x * right).pow(2).sum(dim=(-1, -2)) / n_right).clamp_min(tiny).sqrt()
    g = left_std / right_std
    rhat = x.abs().mean(dim=(-1, -2)).pow(2) / x.pow(2).mean(dim=(-1, -2)).clamp_min(tiny)
    rhatnorm = rhat * (g.pow(3) + 1) * (g + 1) / (g.pow(2) + 1).pow(2)
    alpha = gam[(r_gam.repeat(x.shape[0], 1) - rhatnorm).abs().argmin(dim=-1)]
    if not guard:  # argmin of NaN picks an index: keep the NaN visible
        alpha = alpha + 0 * rhatnorm.squeeze(-1)
    return alpha, left_std.squeeze(-1), right_std.squeeze(-1)


#: Neighbours whose coefficient products are modelled: horizontal, vertical, main and secondary diagonal.
NIQE_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
BRISQUE_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))


def _niqe_features(blocks: torch.Tensor, guard: bool = True) -> torch.Tensor:
    """The 18 NIQE features of MSCN blocks [n,1,s,s] (MATLAB ``computefeature``): AGGD shape and mean scale of
    the coefficients, then shape, mean, left and right scale of each neighbour product's AGGD."""
    def scale(a):  # deviation -> AGGD scale beta = sigma * sqrt(Gamma(1/a) / Gamma(3/a))
        return (torch.lgamma(1 / a) - torch.lgamma(3 / a)).exp().sqrt()

    a, sl, sr = _aggd(blocks, guard)
    feats = [a, (sl * scale(a) + sr * scale(a)) / 2]
    for shift in NIQE_SHIFTS:
        a, sl, sr = _aggd(blocks * torch.roll(blocks, shift, dims=(2, 3)), guard)
        bl, br = sl * scale(a), sr * scale(a)
        feats += [a, (br - bl) * (torch.lgamma(2 / a) - torch.lgamma(1 / a)).exp(), bl, br]
    return torch.stack([f.reshape(-1) for f in feats], dim=-1)


def niqe(img: torch.Tensor, mu_pris: torch.Tensor, cov_pris: torch.Tensor, flat_score: float,
         block: int = 96) -> torch.Tensor:
    """NIQE [B] of an RGB batch in [0, 1]: YIQ luma on the 8-bit scale, 96-pixel blocks, two scales."""
    luma = _luma255(img, rounded=False)
    y = st_round(luma).to(torch.float64)
    nh, nw = y.shape[-2] // block, y.shape[-1] // block
    # A block flat before rounding can round to two tones (a constant 127.5 or a resized constant with
    # float error): its features would be defined but meaningless, so it counts as flat as well.
    with torch.no_grad():
        lb = _blocks(luma.detach(), block, nh, nw).flatten(2)
        textured = (lb.amax(-1) - lb.amin(-1)).squeeze(-1) >= FLAT_RANGE  # [B, n]
    y = y[..., : nh * block, : nw * block]
    # the half scale is resized in single precision: the values the shipped calibration was fitted on
    half = imresize((y / 255.0).float(), 0.5).to(y) * 255.0
    scales = [_blocks(mscn(y, padding="replicate"), block, nh, nw),
              _blocks(mscn(half, padding="replicate"), block // 2, nh, nw)]
    with torch.no_grad():  # which blocks have defined features (computing them on all blocks is safe here)
        every = torch.cat([_niqe_features(bl.flatten(0, 1).detach(), guard=False).view(y.shape[0], nh * nw, -1)
                           for bl in scales], dim=-1)
        defined = torch.isfinite(every).all(-1) & textured
    graph = torch.is_grad_enabled() and y.requires_grad  # only then are the kept blocks' features recomputed
    mu_pris, cov_pris = mu_pris.to(y).reshape(-1), cov_pris.to(y)
    out = []
    for i in range(y.shape[0]):
        keep = defined[i].nonzero().flatten()
        if keep.numel() == 0:
            out.append(y.new_tensor(flat_score) + 0 * y[i].sum())  # keeps the graph, gradient 0
            continue
        feat = (torch.cat([_niqe_features(bl[i, keep]) for bl in scales], dim=-1) if graph
                else every[i, keep])  # [n, 36]
        mu = feat.mean(0)
        cov = torch.cov(feat.T) if feat.shape[0] > 1 else feat.new_zeros(feat.shape[1], feat.shape[1])
        diff = (mu_pris - mu)[None]
        q = diff @ torch.linalg.pinv((cov_pris + cov) / 2) @ diff.T
        out.append(q.reshape(()).clamp_min(1e-12).sqrt())
    return torch.stack(out)


def _brisque_features(luma: torch.Tensor) -> torch.Tensor:
    n = mscn(luma, padding="zeros")
    alpha, sigma = _ggd(n)
    feats = [alpha, sigma.pow(2)]
    for shift in BRISQUE_SHIFTS:
        a, sl, sr = _aggd(n * torch.roll(n, shifts=shift, dims=(-2, -1)))
        eta = (sr - sl) * torch.exp(torch.lgamma(2.0 / a) - (torch.lgamma(1.0 / a) + torch.lgamma(3.0 / a)) / 2)
        feats += [a, eta, sl.pow(2), sr.pow(2)]
    return torch.stack(feats, dim=-1)


def brisque(img: torch.Tensor, sv_coef: torch.Tensor, sv: torch.Tensor, gamma: float, rho: float,
            flat_score: float, ranges: torch.Tensor) -> torch.Tensor:
    """BRISQUE [B] of an RGB batch in [0, 1]: 36 features (18 at full and half scale), each scaled linearly
    from its training ``ranges`` ([36, 2]) to [-1, 1], then ``sum_i coef_i exp(-gamma |f - sv_i|^2) - rho``."""
    flat = textureless(img)
    x = _luma255(img)
    feats = []
    for _ in range(2):
        feats.append(_brisque_features(x))
        x = imresize(x, 0.5)
    f = torch.cat(feats, dim=-1)  # [B, 36]
    r = ranges.to(f)
    f = -1 + 2 * (f - r[:, 0]) / (r[:, 1] - r[:, 0])
    kernel = torch.exp(-gamma * (f[:, :, None] - sv.to(f).t()[None]).pow(2).sum(1))  # [B, n_sv]
    score = (kernel @ sv_coef.to(f) - rho).reshape(-1)
    return torch.where(flat, score.new_tensor(flat_score), score)
