"""Synthetic degradations (Gaussian blur, Gaussian noise, JPEG) at graded levels.

Used to fit the built-in calibration constants, by the benchmark
(``benchmarks/bench_priors.py``) and by the tests: a prior worth optimising
must rank these in the right order. Deterministic (the noise is seeded).
"""
from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F

#: Level 1..4 of each kind (level 0 = the clean image).
LEVELS = {
    "blur": (0.5, 1.0, 2.0, 3.0),    # Gaussian sigma, pixels
    "noise": (5, 10, 20, 30),        # std on the 0..255 scale
    "jpeg": (50, 30, 15, 5),         # JPEG quality
}


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(3 * sigma + 0.5))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=img.dtype) ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(img.device)
    c = img.shape[1]
    x = F.pad(img, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def gaussian_noise(img: torch.Tensor, std255: float, seed: int = 0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``generator`` (CPU) draws the noise instead of a fresh one seeded with ``seed``."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    n = torch.randn(img.shape, generator=g, dtype=img.dtype).to(img.device)
    return (img + n * std255 / 255).clamp(0, 1)


def jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image
    out = []
    for im in img:
        arr = (im.permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
        dec = np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32) / 255
        out.append(torch.from_numpy(dec).permute(2, 0, 1))
    return torch.stack(out).to(img)


def distort(img: torch.Tensor, kind: str, level: int) -> torch.Tensor:
    """``img`` [B,3,H,W] in [0,1] degraded by ``kind`` at ``level`` (0 = unchanged, 1..4)."""
    if level == 0:
        return img
    value = LEVELS[kind][level - 1]
    if kind == "blur":
        return gaussian_blur(img, value)
    if kind == "noise":
        return gaussian_noise(img, value)
    return jpeg(img, value)
