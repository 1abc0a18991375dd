"""A plain Gaussian denoiser network (DnCNN, DRUNet, FFDNet, a bias-free CNN) as a diffusion model.

By Tweedie/Miyasawa ``(D(x) - x) / sigma^2`` is the score of the noisy-image
density, so a good MMSE denoiser is a diffusion prior within the noise range it
was trained on.
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import torch

from .base import Denoiser, bcast, module_device_dtype


class NetworkDenoiser(Denoiser):
    """Wraps ``net`` so samplers see images in ``[-1, 1]`` and sigmas on that scale.

    ``sigma_input``: ``False`` for a blind network ``net(x)``; ``True`` to call
    ``net(x, sigma)`` with a ``[B]`` tensor of sigmas in the network's data range;
    ``"channel"`` to append a constant noise-level map as an extra input channel
    (the DRUNet convention).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        sigma_min: float,
        sigma_max: float,
        sigma_input: Union[bool, str] = False,
        residual: bool = False,
        data_range: Sequence[float] = (0.0, 1.0),
    ):
        lo, hi = (float(v) for v in data_range)
        if not hi > lo:
            raise ValueError(f"data_range must be (low, high) with high > low, got {data_range!r}")
        if sigma_input not in (False, True, "channel"):
            raise ValueError("sigma_input must be False, True or 'channel'")
        # [-1, 1] -> [lo, hi] is x_net = a * x + b; a noise std scales by a.
        self.a = (hi - lo) / 2.0
        self.b = lo + self.a
        super().__init__(sigma_min / self.a, sigma_max / self.a)
        self.net = self.network = net
        self.sigma_input = sigma_input
        self.residual = residual

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        dev, dt = module_device_dtype(self.net)
        x_net = (self.a * x + self.b).to(dt)
        s_net = (self.a * sigma).to(dt).expand(x.shape[0]) if sigma.ndim == 0 else (self.a * sigma).to(dt)
        if self.sigma_input is True:
            out = self.net(x_net, s_net)
        elif self.sigma_input == "channel":
            noise_map = bcast(s_net, x_net).expand(x.shape[0], 1, *x.shape[2:])
            out = self.net(torch.cat([x_net, noise_map], dim=1))
        else:
            out = self.net(x_net)
        den = x_net - out if self.residual else out
        return ((den - self.b) / self.a).to(x.dtype)


def from_denoiser(
    net: torch.nn.Module,
    sigma_min: float,
    sigma_max: float,
    sigma_input: Union[bool, str] = False,
    residual: bool = False,
    data_range: Sequence[float] = (0.0, 1.0),
) -> NetworkDenoiser:
    """A Gaussian denoiser network as a core denoiser.

    ``sigma_min``/``sigma_max`` are noise stds in the network's own data range
    (for a [0, 1] network trained on std 0..100 of 255: ``0, 100 / 255``);
    ``residual=True`` when the network returns the noise rather than the image.
    """
    return NetworkDenoiser(net, sigma_min, sigma_max, sigma_input, residual, data_range)
