"""A photo's latent inverted into a denoiser's noise space (EDICT, exact; DDIM, the approximate baseline)."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from . import ddim, edict
from ..autograd import usable
from ..models.base import Denoiser
from ..models.flow import schedule_for
from .precision import wide_dtype
from ..map.settings import MapSettings

INVERSION_METHODS = ("edict", "ddim")


@dataclasses.dataclass
class Inversion:
    """A photo inverted into a denoiser's noise space: everything needed to sample it back and to climb.

    ``pair`` is the EDICT latent pair at ``sigmas[0]`` (for ``method="ddim"`` both
    entries are the one DDIM latent); ``latent`` is the clean latent that was
    inverted, in the denoiser's own space.
    """
    pair: tuple
    sigmas: torch.Tensor
    latent: torch.Tensor
    method: str = "edict"
    mix: float = MapSettings.mix            # the defaults are MapSettings' (one source)
    steps: int = MapSettings.steps
    strength: float = MapSettings.strength
    cond: Any = None


class CountingDenoiser(Denoiser):
    """Counts network evaluations of a denoiser (for the report)."""

    def __init__(self, inner: Denoiser):
        self.inner, self.count, self.network = inner, 0, inner.network
        self.sigma_min, self.sigma_max = inner.sigma_min, inner.sigma_max
        self.shape_dependent_schedule = getattr(inner, "shape_dependent_schedule", False)

    def denoise(self, x, sigma, cond=None):
        self.count += 1
        return self.inner.denoise(x, sigma, cond)

    # The inner denoiser's own eps and VJP (a flow model's velocity as is; CUDA graphs if on), counted once per
    # network evaluation.
    def eps(self, x, sigma, cond=None):
        self.count += 1
        return self.inner.eps(x, sigma, cond)

    def eps_and_vjp(self, x, sigma, cond, g):
        self.count += 1
        return self.inner.eps_and_vjp(x, sigma, cond, g)

    def sigmas(self, steps, strength=1.0, **kw):
        return self.inner.sigmas(steps, strength, **kw)


def invert(denoiser: Denoiser, latent: torch.Tensor, steps: int = MapSettings.steps,
           strength: float = MapSettings.strength, *, mix: float = MapSettings.mix, method: str = "edict",
           cond: Any = None, sigmas: Optional[torch.Tensor] = None) -> Inversion:
    """Invert a clean latent (``codec.encode(image)``) at ``strength`` with ``steps`` steps.

    ``sigmas`` overrides the denoiser's own schedule (ComfyUI passes its scheduler's).
    EDICT inversion is exact; DDIM inversion is the approximate baseline.
    """
    if method not in INVERSION_METHODS:
        raise ValueError(f"unknown inversion method {method!r}; choose from {INVERSION_METHODS}")
    with torch.inference_mode(False):
        latent = usable(latent).detach()
        sigmas = (schedule_for(denoiser, latent, steps, strength) if sigmas is None
                  else sigmas.detach().to(torch.float64).cpu())
        state = wide_dtype(latent.device, f"{method.upper()} inversion")  # float32 on MPS, with a warning
        if method == "edict":
            pair = edict.invert(denoiser, latent, sigmas, mix=mix, cond=cond, state_dtype=state)
        else:
            z = ddim.invert(denoiser, latent.to(state), sigmas, cond=cond)
            pair = (z, z)
    return Inversion(pair=tuple(pair), sigmas=sigmas, latent=latent, method=method, mix=mix, steps=int(steps),
                     strength=float(strength), cond=cond)
