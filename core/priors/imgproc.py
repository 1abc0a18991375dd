"""Colour, filtering and resizing helpers of the classical IQA metrics, in MATLAB's conventions.

The published NIQE, BRISQUE, PIQE and SSIM reference code is MATLAB: luma of the NTSC YIQ
transform on the 8-bit scale, ``fspecial('gaussian')`` windows, ``imresize`` (bicubic with
antialiasing, symmetric borders) and local mean/contrast normalisation (MSCN, Mittal et al.
2012, eq. 1). These are written here from those definitions (MATLAB's documentation and the
papers), so the built-in priors need no third-party IQA package. Everything is differentiable
with respect to the image; the roundings are straight-through.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: Luma row of the NTSC YIQ transform (= ITU-R BT.601 luma weights).
YIQ_LUMA = (0.299, 0.587, 0.114)


def luma_yiq(img: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """[B,3,H,W] RGB in [0, 1] -> [B,1,H,W] YIQ luma times ``scale``; on the 8-bit scale (``scale`` >= 255)
    rounded to integers as MATLAB's ``rgb2gray`` of a uint8 image is, with a straight-through gradient.

    The weights are held in single precision and applied as one matrix product over the colour axis:
    the scores the shipped calibrations were fitted on were computed that way."""
    w = torch.tensor([YIQ_LUMA], dtype=torch.float32).t().to(img)  # [3, 1]
    y = torch.matmul(img.permute(0, 2, 3, 1), w).permute(0, 3, 1, 2) * scale
    return st_round(y) if scale >= 255 else y


def st_round(x: torch.Tensor) -> torch.Tensor:
    """Round to integers in the forward pass, identity in the backward pass (straight-through)."""
    return x + (x.round() - x).detach()


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """MATLAB's ``fspecial('gaussian', size, sigma)``: [size, size], entries below eps * max set to 0,
    normalised to sum 1; stored in single precision like the reference implementations' float windows."""
    r = (size - 1) / 2.0
    t = np.arange(-r, r + 1)
    h = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2.0 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return torch.from_numpy(h / h.sum()).float()


def filter2(x: torch.Tensor, window: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Correlate each channel of [B,C,H,W] with a symmetric 2-D window. ``padding``: 'zeros' or 'replicate'
    (output the size of ``x``, MATLAB's ``imfilter(..., 'same')`` / ``'replicate'``) or 'valid'."""
    k = window.to(x)
    kh, kw = k.shape
    if padding != "valid":
        ph, pw = kh - 1, kw - 1
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        x = F.pad(x, pad, mode="constant" if padding == "zeros" else padding)
    c = x.shape[1]
    return F.conv2d(x, k.expand(c, 1, kh, kw), groups=c)


def mscn(x: torch.Tensor, size: int = 7, sigma: float = 7.0 / 6, c: float = 1.0,
         padding: str = "zeros") -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients (Mittal et al. 2012, eq. 1):
    ``(I - mu) / (sigma + C)`` with Gaussian-weighted local mean and deviation. The local variance is kept
    non-negative and offset by the dtype's epsilon, so the deviation has a finite gradient on flat areas."""
    w = gaussian_window(size, sigma)
    mu = filter2(x, w, padding)
    var = filter2(x * x, w, padding) - mu * mu
    sd = torch.sqrt(var.abs() + torch.finfo(x.dtype).eps)
    return (x - mu) / (sd + c)


def symmetric_pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """MATLAB's ``padarray(..., 'symmetric')``: mirror including the edge sample (a b c -> b a | a b c | c b)."""
    def index(n: int, before: int, after: int) -> torch.Tensor:
        i = np.arange(-before, n + after)
        period = 2 * n
        i = np.mod(i, period)
        return torch.from_numpy(np.where(i >= n, period - 1 - i, i)).to(x.device)

    h, w = x.shape[-2:]
    return x.index_select(-2, index(h, top, bottom)).index_select(-1, index(w, left, right))


def _cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, MATLAB's 'bicubic'."""
    a = np.abs(t)
    return np.where(a <= 1, 1.5 * a ** 3 - 2.5 * a ** 2 + 1,
                    np.where(a <= 2, -0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2, 0.0))


def _contributions(n_in: int, n_out: int, scale: float, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``imresize``'s ``contributions``: per output sample, the input indices (0-based, mirrored at the
    borders) and the normalised weights of the bicubic kernel, stretched by 1/scale when shrinking."""
    shrink = antialias and scale < 1
    width = 4.0 / scale if shrink else 4.0
    x = np.arange(1, n_out + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output sample x in input coordinates (1-based)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - idx
    wgt = scale * _cubic(scale * dist) if shrink else _cubic(dist)
    wgt = wgt / wgt.sum(1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in - 1, -1, -1)])
    idx = mirror[np.mod(idx.astype(np.int64) - 1, 2 * n_in)]
    keep = np.any(wgt != 0, axis=0)
    return idx[:, keep], wgt[:, keep]


def _resize_axis(x: torch.Tensor, dim: int, n_out: int, scale: float, antialias: bool) -> torch.Tensor:
    idx, wgt = _contributions(x.shape[dim], n_out, scale, antialias)
    taps = idx.shape[1]
    g = x.index_select(dim, torch.from_numpy(idx.reshape(-1)).to(x.device))
    shape = list(x.shape)
    shape[dim:dim + 1] = [n_out, taps]
    g = g.reshape(shape)
    wshape = [1] * len(shape)
    wshape[dim:dim + 2] = [n_out, taps]
    return (g * torch.from_numpy(wgt).to(x).reshape(wshape)).sum(dim + 1)


def imresize(x: torch.Tensor, scale: float, antialias: bool = True) -> torch.Tensor:
    """MATLAB's ``imresize(x, scale)`` (bicubic, antialiased when shrinking) of [B,C,H,W]: output size
    ``ceil(scale * size)``, rows first, then columns, in the input's dtype."""
    h, w = x.shape[-2:]
    x = _resize_axis(x, x.ndim - 2, math.ceil(h * scale), scale, antialias)
    return _resize_axis(x, x.ndim - 1, math.ceil(w * scale), scale, antialias)
