"""Combining priors: weighted fusion of calibrated scores, and multi-scale averaging."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .base import Calibration, Prior

FUSION_MODES = ("mean", "geometric", "softmin")


class FusedPrior(Prior):
    """Weighted fusion of calibrated scores in [0, 100] (higher = better).

    * ``mean``: weighted arithmetic mean, the published "hybrid" prior.
    * ``geometric``: weighted geometric mean; one very low score drags the
      result down more than in the mean, so the optimiser cannot trade one
      metric away for another.
    * ``softmin``: ``-T log(sum w_i exp(-c_i / T) / sum w_i)``, a smooth
      minimum (T on the 0-100 scale; -> min as T -> 0, -> mean as T -> inf):
      the gradient concentrates on the currently worst metric.

    Weights are normalised; a weight of 0 removes that prior exactly.
    """

    lower_better = False
    native_range = (0.0, 100.0)
    native_is_calibrated = True

    def __init__(self, members: Sequence[tuple[Prior, float]], mode: str = "mean", temperature: float = 10.0,
                 name: str | None = None) -> None:
        super().__init__(calibration=None)
        if mode not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode '{mode}'; choose from {FUSION_MODES}")
        members = [(p, float(w)) for p, w in members if float(w) != 0.0]
        if not members:
            raise ValueError("fuse() needs at least one prior with a non-zero weight")
        if any(w < 0 for _, w in members):
            raise ValueError("fusion weights must be >= 0")
        missing = [p.name for p, _ in members if not p.is_calibrated]
        if missing:
            raise ValueError(f"priors {missing} have no calibration; fuse works on calibrated scores: "
                             f"fit them first with fit_calibration()")
        self.priors = torch.nn.ModuleList(p for p, _ in members)
        total = sum(w for _, w in members)
        self.weights = [w / total for _, w in members]
        self.mode, self.temperature = mode, float(temperature)
        self.name = name or f"{mode}(" + ", ".join(f"{p.name}*{w:g}" for p, w in members) + ")"
        self.min_size = max(p.min_size for p in self.priors)

    def _native(self, img: torch.Tensor) -> torch.Tensor:
        c = torch.stack([p.calibrated(img).to(img.device, torch.float32) for p in self.priors], dim=0)
        w = c.new_tensor(self.weights).view(-1, 1)
        if self.mode == "mean":
            return (w * c).sum(0)
        if self.mode == "geometric":
            return torch.exp((w * torch.log(c.clamp_min(1e-6))).sum(0))
        t = self.temperature
        return -t * torch.logsumexp(torch.log(w) - c / t, dim=0)


class MultiScalePrior(Prior):
    """Average of a prior's native score over rescaled copies of the input.

    Default scales 1 and 0.75 (the MS-LIQE idea): artefacts that a model only
    sees at one scale still count, and single-scale adversarial patterns are
    harder for the optimiser to exploit. Downscaling is antialiased bicubic, so
    it stays differentiable.
    """

    def __init__(self, prior: Prior, scales: Sequence[float] = (1.0, 0.75), calibration: Calibration | None = None,
                 name: str | None = None) -> None:
        super().__init__(calibration if calibration is not None else prior.calibration)
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"scales must be positive, got {scales}")
        self.prior, self.scales = prior, tuple(float(s) for s in scales)
        self.name = name or f"ms-{prior.name}"
        self.lower_better, self.native_range = prior.lower_better, prior.native_range
        self.native_is_calibrated = prior.native_is_calibrated and self.calibration is None
        self.min_size = prior.min_size

    def _native(self, img: torch.Tensor) -> torch.Tensor:
        scores = []
        for s in self.scales:
            x = img if s == 1.0 else F.interpolate(img, scale_factor=s, mode="bicubic", antialias=True,
                                                   align_corners=False)
            scores.append(self.prior.native(x))
        return torch.stack(scores, 0).mean(0)


def fuse(members: Sequence[tuple[Prior, float]], mode: str = "mean", temperature: float = 10.0,
         name: str | None = None) -> FusedPrior:
    """Fuse ``[(prior, weight), ...]`` into one prior on [0, 100]; see :class:`FusedPrior`."""
    return FusedPrior(members, mode=mode, temperature=temperature, name=name)
