"""The four diffusers building blocks the built-in model uses, as the pack's own code.

Same module and parameter names as diffusers' ``Timesteps``, ``TimestepEmbedding``, ``Downsample2D``
(``use_conv``, ``kernel_size=2``, ``padding=0``, ``name="op"``) and ``Upsample2D`` (``use_conv_transpose``,
``kernel_size=2``, ``padding=0``) in the configurations used, so the shipped weights load unchanged, and the
same arithmetic, so the outputs are equal (tests/test_builtin.py compares with diffusers where installed).
Inside ComfyUI the pack then needs no diffusers, which only the command line's Stable Diffusion models use.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Timesteps(nn.Module):
    """Sinusoidal embedding, cos first (diffusers' ``flip_sin_to_cos=True``, ``downscale_freq_shift=0``);
    computed in float32 whatever the input's dtype, as diffusers does."""

    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = num_channels

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        exponent = -math.log(10000) * torch.arange(0, half, dtype=torch.float32, device=timesteps.device) / half
        emb = timesteps[:, None].float() * torch.exp(exponent)[None, :]
        emb = torch.cat([torch.cos(emb), torch.sin(emb)], dim=-1)
        return F.pad(emb, (0, 1, 0, 0)) if self.num_channels % 2 else emb


class TimestepEmbedding(nn.Module):
    """Linear -> SiLU -> Linear (diffusers' default ``act_fn="silu"``, no condition projection)."""

    def __init__(self, in_channels: int, time_embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(sample)))


class Downsample2D(nn.Module):
    """2x2 stride-2 convolution after padding right and bottom by one (diffusers' ``padding=0`` case)."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels, kernel_size=2, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample2D(nn.Module):
    """2x2 stride-2 transposed convolution."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, out_channels, kernel_size=2, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
