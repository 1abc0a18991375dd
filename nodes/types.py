"""Objects that travel through ComfyUI sockets besides ComfyUI's own.

Pixel-space models (the built-in model, a Gaussian denoiser) travel through the
MODEL and VAE sockets as :class:`CoreModel` and :class:`PassthroughVAE`, so one
graph shape serves Stable Diffusion and CPU-only enhancement alike. The
pass-through VAE speaks ComfyUI's VAE interface, so core VAE Encode / VAE
Decode nodes work with it too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.models.codec import PixelCodec

def to_bchw(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI's IMAGE (``[B,H,W,C]``, C >= 3) as core's ``[B,3,H,W]`` float32 (alpha dropped)."""
    return image[..., :3].movedim(-1, 1).float()


def to_image(bchw: torch.Tensor) -> torch.Tensor:
    """Core's ``[B,C,H,W]`` as ComfyUI's IMAGE ``[B,H,W,C]`` on the CPU."""
    return bchw.movedim(1, -1).cpu()


IQA_PRIOR = "IQA_PRIOR"
IQA_INVERSION = "IQA_INVERSION"
CATEGORY = "IQA-MAP"


class CoreModel:
    """A core :class:`~iqa_map.core.models.base.Denoiser` in a MODEL socket (pixel space, runs on CPU)."""

    def __init__(self, denoiser, name: str):
        self.denoiser, self.name = denoiser, name

    def __repr__(self) -> str:
        return f"CoreModel({self.name})"

    def __getattr__(self, item: str) -> Any:
        # Reached only for attributes CoreModel lacks: a ComfyUI node (KSampler...) is using it.
        if item.startswith("__"):
            raise AttributeError(item)
        raise TypeError(f"the MODEL '{self.name}' comes from an IQA-MAP loader and works only with IQA-MAP nodes "
                        "(DDIM Invert, Latent MAP Ascent); ComfyUI samplers need a checkpoint MODEL "
                        f"(missing attribute '{item}')")


class PassthroughVAE:
    """Identity 'VAE' of pixel-space models: LATENT samples are the image in [-1, 1], ``[B,3,H,W]``."""

    codec = PixelCodec()
    downscale_ratio = upscale_ratio = 1
    latent_channels = 3
    latent_dim = 2

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(to_bchw(pixels))

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        if samples.ndim != 4 or samples.shape[1] != 3:
            raise ValueError(f"the pass-through VAE decodes pixel LATENTs [B,3,H,W]; got {tuple(samples.shape)} "
                             "(a Stable Diffusion latent needs the checkpoint's VAE)")
        return self.codec.decode(samples.float()).clamp(0, 1).movedim(1, -1)

    def encode_tiled(self, pixels, *args, **kwargs):
        return self.encode(pixels)

    def decode_tiled(self, samples, *args, **kwargs):
        return self.decode(samples)

    def spacial_compression_encode(self) -> int:
        return 1

    def spacial_compression_decode(self) -> int:
        return 1

    def temporal_compression_decode(self):
        return None


@dataclass
class InversionState:
    """What DDIM Invert hands to Latent MAP Ascent (the IQA_INVERSION socket)."""

    inversion: Any                 # core.map.Inversion, sampler space
    model: Any                     # the MODEL it was made with
    positive: Any = None
    negative: Any = None
    cfg: float = 1.0
    scheduler: str = ""
