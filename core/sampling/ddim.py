"""Deterministic DDIM (eta = 0): the Euler step of the probability-flow ODE in sigma.

Its inversion evaluates the noise estimate at the wrong point (the current
latent, at the next noise level) and is therefore only approximate; it is kept
as the baseline that EDICT's exact inversion is measured against.
"""
from __future__ import annotations

from typing import Any

import torch

from ..autograd import outside_inference_mode
from .edict import _sigma_list
from ..models.base import Denoiser


@outside_inference_mode
def sample(den: Denoiser, x: torch.Tensor, sigmas, cond: Any = None) -> torch.Tensor:
    """``x' = x + (sigma' - sigma) * eps(x, sigma)`` from ``sigmas[0]`` to ``sigmas[-1]``."""
    s = _sigma_list(sigmas)
    for k in range(len(s) - 1):
        x = x + (s[k + 1] - s[k]) * den.eps(x, s[k], cond)
    return x


@outside_inference_mode
def invert(den: Denoiser, x: torch.Tensor, sigmas, cond: Any = None) -> torch.Tensor:
    """Approximate DDIM inversion (as diffusers' ``DDIMInverseScheduler``): ``eps`` of the
    current latent at the next, higher noise level."""
    s = _sigma_list(sigmas)
    with torch.no_grad():
        for k in reversed(range(len(s) - 1)):
            x = x + (s[k] - s[k + 1]) * den.eps(x, s[k], cond)
    return x
