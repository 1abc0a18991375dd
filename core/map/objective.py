"""The MAP objective ``Q(x) - lambda * D(x, x_init)``: fidelity terms, their weighting, and the objective itself.

Everything here is built from loaded objects (a prior, a reference image, a weight map): the
entry points (:mod:`.ascent`, :mod:`.pipeline`) load and validate, the math only computes.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from ..priors.base import comparable_score
from ..quality.fullref import NLPD, SSIMDistance

FIDELITIES = ("nlpd", "mse", "ssim", "none")
#: Default lambda per fidelity, for a prior on the calibrated 0-100 scale. NLPD's 20 is the public
#: recipe's; MSE's and SSIM's make a mild blur (sigma 1) or noise (std 10/255) cost about what it
#: costs under NLPD (measured on 8 CBSD68 crops: NLPD 0.167, MSE 0.0021/0.0014, 1-SSIM 0.148/0.164).
DEFAULT_WEIGHT = {"nlpd": 20.0, "mse": 2000.0, "ssim": 20.0, "none": 0.0}


class Fidelity(torch.nn.Module):
    """Distance ``D(x, ref) -> [B]`` (0 = identical), optionally weighted per pixel.

    ``weight_map`` ([B or 1, 1, H, W], >= 0) lowers the penalty where fidelity
    matters less (w < 1) and raises it where it matters more (w > 1). MSE weights
    the squared error exactly; NLPD and SSIM are split the same way,
    ``D(ref + min(w, 1) (x - ref), ref) + D(ref + (w - 1)+ (x - ref), ref)``: the
    metric untouched where ``w = 1``, blind where ``w = 0``, and an added hold where
    ``w > 1``.
    """

    def __init__(self, name: str = "nlpd", weight_map: torch.Tensor | None = None):
        super().__init__()
        if name not in FIDELITIES:
            raise ValueError(f"unknown fidelity '{name}'; choose from {', '.join(FIDELITIES)}")
        self.name = name
        self.weight_map = weight_map
        # Decided once: testing the map inside forward would sync a GPU on every iterate.
        self._holds = weight_map is not None and bool((weight_map > 1).any())
        self.metric = {"nlpd": SmoothNLPD, "ssim": SSIMDistance}.get(name, lambda: None)()

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if self.name == "none":
            return x.new_zeros(x.shape[0])
        w = self.weight_map
        if w is not None:
            w = w.to(x.device, x.dtype)
            if w.shape[-2:] != x.shape[-2:]:
                w = F.interpolate(w, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.name == "mse":
            err = (x - ref) ** 2
            return (err if w is None else err * w).mean(dim=(1, 2, 3))
        if w is None:
            return self.metric(x, ref).to(x.dtype)
        # Split like MSE's err * w = err * min(w, 1) + err * (w - 1)+: a weight above 1 adds a
        # penalty on the excess instead of magnifying the deviation inside the norm, which would
        # lower NLPD's marginal cost everywhere else (sqrt of the band mean) and let the regions
        # left at weight 1 drift further than under a uniform weight.
        d = self.metric(ref + w.clamp(max=1.0) * (x - ref), ref)
        if self._holds:
            d = d + self.metric(ref + (w - 1.0).clamp(min=0.0) * (x - ref), ref)
        return d.to(x.dtype)


class SmoothNLPD(torch.nn.Module):
    """NLPD (Laparra et al. 2016, :class:`.fullref.NLPD`) with ``sqrt(m + 1e-12)`` per pyramid band.

    The plain ``sqrt(mean(diff^2))`` per band has a NaN gradient wherever a band's difference is
    exactly zero, which is exactly where MAP starts (the exact inversion reproduces the input). The
    smoothing moves the value by at most 1e-6.
    """

    def __init__(self):
        super().__init__()
        self.net = NLPD(eps=1e-12)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return self.net(x, ref)


class Terms(NamedTuple):
    """One evaluation of the objective: the value to climb and what it is made of (all but ``total`` detached)."""
    total: torch.Tensor     # sum over the batch of Q - lambda * D, with its graph
    image: torch.Tensor     # the image scored
    score: torch.Tensor     # [B] Q, the prior's comparable score
    fidelity: torch.Tensor  # [B] D


class Objective:
    """``Q(img) - lambda * D(img, ref)`` summed over the batch, for a loaded prior and fidelity."""

    def __init__(self, prior, fidelity: Fidelity, weight: float, ref: torch.Tensor):
        self.prior, self.fidelity, self.weight, self.ref = prior, fidelity, weight, ref

    def __call__(self, img: torch.Tensor) -> Terms:
        if img.requires_grad:
            # The built-in priors are total (tests/test_priors_total.py); a third-party pyiqa model may
            # still give a NaN gradient on some pixels: those get no push instead of poisoning the
            # whole latent gradient through the decoder and sampler.
            img.register_hook(lambda g: torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0))
        q = comparable_score(self.prior, img)
        d = self.fidelity(img, self.ref)
        return Terms((q - self.weight * d).sum(), img.detach(), q.detach(), d.detach())


def objective(prior, name: str, weight: Optional[float], ref: torch.Tensor,
              weight_map: Optional[torch.Tensor] = None) -> Objective:
    """The objective of fidelity ``name`` with weight ``weight`` (None: :data:`DEFAULT_WEIGHT`)."""
    return Objective(prior, Fidelity(name, weight_map=weight_map), DEFAULT_WEIGHT[name] if weight is None else weight,
                     ref)
