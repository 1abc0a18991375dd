"""Full-reference measures of a result against its input or a clean original: PSNR, SSIM, and the ROC AUC
a quality map is judged by (benchmarks/bench_qmap.py)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (inf when identical)."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor, rows: int = 512) -> float:
    """SSIM per RGB channel, averaged (Gaussian window 11, sigma 1.5; Wang et al. 2004).

    Computed ``rows`` rows of the SSIM map at a time (each strip reads 10 rows more): the same value,
    with memory bounded by a strip instead of a dozen full-size maps (1.6 GB at 12 megapixels)."""
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels; got {a.shape[-1]}x{a.shape[-2]}")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    k = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    k = (k / k.sum()).to(a.device)
    win = (k[:, None] * k[None, :]).expand(3, 1, 11, 11)
    f = lambda t: F.conv2d(t, win, groups=3)  # noqa: E731
    total, count = 0.0, 0
    for r in range(0, a.shape[-2] - 10, rows):
        sa, sb = a[..., r:r + rows + 10, :].float(), b[..., r:r + rows + 10, :].float()
        mu_a, mu_b = f(sa), f(sb)
        va, vb, cov = f(sa * sa) - mu_a ** 2, f(sb * sb) - mu_b ** 2, f(sa * sb) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
        total, count = total + float(s.double().sum()), count + s.numel()
    return total / count


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for binary ``label`` (Mann-Whitney U, ties averaged)."""
    score, label = np.asarray(score, dtype=np.float64).ravel(), np.asarray(label).ravel().astype(bool)
    pos, neg = int(label.sum()), int((~label).sum())
    if pos == 0 or neg == 0:
        raise ValueError("roc_auc needs both positive and negative labels")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))
