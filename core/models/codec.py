"""Between images in [0, 1] and a denoiser's space: identity for pixel models, a VAE for latent ones."""
from __future__ import annotations

import torch

from .base import module_device_dtype


class PixelCodec:
    """Pixel-space diffusion models work on images scaled to [-1, 1]."""

    factor = 1

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        return img * 2 - 1

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) / 2


class VAECodec:
    """A diffusers ``AutoencoderKL`` with the SD latent scale (and shift, if any) applied.

    Encoding uses the posterior mean (deterministic); decoding is differentiable,
    so the MAP objective can be evaluated on pixels.
    """

    def __init__(self, vae: torch.nn.Module, scaling_factor: float | None = None, shift_factor: float | None = None):
        cfg = getattr(vae, "config", None)
        self.vae = vae
        self.scale = float(scaling_factor if scaling_factor is not None else getattr(cfg, "scaling_factor", 0.18215))
        self.shift = float(shift_factor if shift_factor is not None else (getattr(cfg, "shift_factor", None) or 0.0))
        self.factor = 2 ** (len(getattr(cfg, "block_out_channels", (0,) * 4)) - 1)

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        dev, dt = module_device_dtype(self.vae)
        post = self.vae.encode((img * 2 - 1).to(dev, dt)).latent_dist
        return ((post.mean - self.shift) * self.scale).to(img.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        dev, dt = module_device_dtype(self.vae)
        out = self.vae.decode((z / self.scale + self.shift).to(dev, dt)).sample
        return ((out + 1) / 2).to(z.dtype)
