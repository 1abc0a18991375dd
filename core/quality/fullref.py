"""Full-reference distances of the MAP fidelity term: NLPD and SSIM, in IQA-MAP's own code.

* **NLPD** (Laparra, Ballé, Berardino and Simoncelli, "Perceptual image quality assessment using
  a normalized Laplacian pyramid", 2016): the luma is decomposed into a 6-level Laplacian pyramid
  (5x5 binomial-like filter, symmetric borders, zero-insertion upsampling), each band divided by
  a local amplitude estimate (a small filter over the absolute band plus a constant, fitted by the
  authors to perceptual data); the distance is the mean over bands of the root-mean-square
  difference of the normalised bands. The constants are the authors' published ones
  (``NLP_dist.m`` of the paper's code; see ``core/priors/data/PROVENANCE.md``).
* **SSIM** (Wang, Bovik, Sheikh and Simoncelli, IEEE TIP 2004): the reference settings (11x11
  Gaussian window of deviation 1.5, K1 = 0.01, K2 = 0.03, 8-bit luma, no downsampling), mean of the
  map; negative contrast-structure terms are clipped at 0.

Both take RGB [B,3,H,W] in [0, 1] and are differentiable. With pyiqa installed they give its values.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..priors.imgproc import filter2, gaussian_window, luma_yiq, symmetric_pad

#: The pyramid's low-pass filter (outer product of [0.05, 0.25, 0.4, 0.25, 0.05]), as published.
NLPD_FILTER = ((0.0025, 0.0125, 0.0200, 0.0125, 0.0025),
               (0.0125, 0.0625, 0.1000, 0.0625, 0.0125),
               (0.0200, 0.1000, 0.1600, 0.1000, 0.0200),
               (0.0125, 0.0625, 0.1000, 0.0625, 0.0125),
               (0.0025, 0.0125, 0.0200, 0.0125, 0.0025))
#: Divisive-normalisation filters per level (3x3, applied as a convolution) and their additive constants.
NLPD_DN_FILTERS = (((0, 0.1011, 0), (0.1493, 0, 0.1460), (0, 0.1015, 0)),
                   ((0, 0.0757, 0), (0.1986, 0, 0.1846), (0, 0.0837, 0)),
                   ((0, 0.0477, 0), (0.2138, 0, 0.2243), (0, 0.0467, 0)),
                   ((0, 0, 0), (0.2503, 0, 0.2616), (0, 0, 0)),
                   ((0, 0, 0), (0.2598, 0, 0.2552), (0, 0, 0)),
                   ((0, 0, 0), (0.2215, 0, 0.0717), (0, 0, 0)))
NLPD_SIGMAS = (0.0248, 0.0185, 0.0179, 0.0191, 0.0220, 0.2782)


def _f32(values) -> torch.Tensor:
    """Published constants in single precision (the precision they were published and used at)."""
    return torch.tensor(values, dtype=torch.float32)


class NLPD(torch.nn.Module):
    """Normalised Laplacian pyramid distance [B]; ``eps`` inside each band's square root keeps the
    gradient finite where a band's difference is exactly 0 (where MAP starts), moving the value <= 1e-6."""

    levels = 6

    def __init__(self, eps: float = 0.0) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("filt", _f32(NLPD_FILTER)[None, None], persistent=False)
        # MATLAB's conv2 is a correlation with the filter turned by 180 degrees
        self.register_buffer("dn", _f32(NLPD_DN_FILTERS).flip(-1, -2)[:, None, None], persistent=False)
        self.register_buffer("sigmas", _f32(NLPD_SIGMAS), persistent=False)

    def _normalise(self, band: torch.Tensor, level: int) -> torch.Tensor:
        amp = F.conv2d(F.pad(band.abs(), (1, 1, 1, 1)), self.dn[level].to(band))
        return band / (self.sigmas[level].to(band) + amp)

    def pyramid(self, y: torch.Tensor) -> list[torch.Tensor]:
        """Normalised bands of a [B,1,H,W] luma, finest first, the low-pass residual last."""
        f = self.filt.to(y)
        out = []
        for level in range(self.levels - 1):
            low = F.conv2d(symmetric_pad(y, 2, 2, 2, 2), f, stride=2)
            h, w = low.shape[-2:]
            odd_h, odd_w = 2 * h - y.shape[-2], 2 * w - y.shape[-1]
            # upsample: the edge-replicated low-pass on even samples (x4 for the zeros), then the same filter
            rep = F.pad(low, (1, 1, 1, 1), mode="replicate")
            up = rep.new_zeros(*rep.shape[:2], 2 * rep.shape[-2], 2 * rep.shape[-1])
            up[..., ::2, ::2] = 4 * rep
            up = F.conv2d(F.pad(up, (2, 2, 2, 2)), f)
            up = up[..., 2:up.shape[-2] - 2 - odd_h, 2:up.shape[-1] - 2 - odd_w]
            out.append(self._normalise(y - up, level))
            y = low
        out.append(self._normalise(y, self.levels - 1))
        return out

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        bands = [torch.sqrt(((a - b) ** 2).mean(dim=(1, 2, 3)) + self.eps)
                 for a, b in zip(self.pyramid(luma_yiq(x)), self.pyramid(luma_yiq(ref)))]
        return torch.stack(bands, dim=1).mean(dim=1)


def ssim(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean SSIM [B] of the 8-bit YIQ luma (rounded, straight-through), computed in float64."""
    a, b = luma_yiq(x, 255.0).double(), luma_yiq(ref, 255.0).double()
    win = gaussian_window(11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filter2(a, win, "valid"), filter2(b, win, "valid")
    var_a = filter2(a * a, win, "valid") - mu_a ** 2
    var_b = filter2(b * b, win, "valid") - mu_b ** 2
    cov = filter2(a * b, win, "valid") - mu_a * mu_b
    cs = F.relu((2 * cov + c2) / (var_a + var_b + c2))
    return (((2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)) * cs).mean(dim=(1, 2, 3))


class SSIMDistance(torch.nn.Module):
    """``1 - SSIM`` [B]: 0 for identical images."""

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return 1 - ssim(x, ref)
