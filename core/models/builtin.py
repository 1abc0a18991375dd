"""The built-in diffusion prior: a small pixel-space denoiser that runs on any laptop.

A fully-convolutional UNet with sigma conditioning and EDM preconditioning
(Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", table 1)::

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))

on images in ``[-1, 1]`` (``sigma_data = 0.5``). The preconditioning keeps the
network's input and training target at unit variance at every noise level, so
one small network serves both Gaussian denoising (sigma 0.1..0.4) and partial
EDICT inversions (sigma up to ``sigma_max``).

Why this shape (see docs/MODEL_CARD.md): the image is first folded 2x2 into
channels (pixel-unshuffle, as in FFDNet), so every convolution runs at half
resolution or less with 64+ channels. That is several times cheaper per pixel
than a full-resolution CNN such as BF-CNN, gives a large receptive field
through two further downsamplings, and keeps the CPU's matrix units busy.
Blocks carry no normalisation layers: statistics computed over a training
crop would differ from those over a full photo, and denoisers without
normalisation (DnCNN-style residual CNNs, DRUNet) generalise across image sizes.

Weights ship in ``weights/`` with a JSON config and a sha256 checksum file;
:func:`load_builtin` verifies the checksum before loading.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..io.files import sha256_file
from .base import Denoiser, bcast, module_device_dtype
from .blocks import Downsample2D, TimestepEmbedding, Timesteps, Upsample2D

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_NAME = "builtin_denoiser"

# Architecture and preconditioning defaults; the shipped JSON config overrides them.
DEFAULT_CONFIG = {
    "arch": "BuiltinUNet",
    "in_channels": 3,
    "unshuffle": 2,
    "channels": [64, 128, 256],
    "enc_blocks": [1, 1],
    "mid_blocks": 2,
    "dec_blocks": [1, 1],
    "emb_channels": 64,
    "emb_dim": 128,
    "sigma_data": 0.5,
    "sigma_min": 0.002,
    "sigma_max": 2.0,
}


class ResBlock(nn.Module):
    """``x + conv(act(film(conv(x))))``: a norm-free residual block modulated by the noise embedding.

    The scale/shift (FiLM) after the first convolution is how the noise level
    steers the block; its projection starts at zero so a fresh block is the
    plain conv-act-conv residual.
    """

    def __init__(self, channels: int, emb_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * channels)
        nn.init.zeros_(self.emb.weight)
        nn.init.zeros_(self.emb.bias)
        # Scale the residual branch down at init so a deep stack starts near identity.
        nn.init.zeros_(self.conv2.bias)
        with torch.no_grad():
            self.conv2.weight.mul_(0.1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv1(x)
        h = F.silu(h * (1 + scale) + shift)
        return x + self.conv2(h)


class BuiltinUNet(nn.Module):
    """The raw network ``F(x_in, c_noise)`` (no preconditioning; see :class:`BuiltinDenoiser`).

    pixel-unshuffle -> conv_in -> [ResBlocks -> Downsample2D] per level ->
    mid ResBlocks -> [Upsample2D (transposed) + skip add -> ResBlocks] ->
    conv_out -> pixel-shuffle. Skips are added (not concatenated) to keep the
    decoder as cheap as the encoder. The noise embedding is a sinusoidal
    ``Timesteps`` + ``TimestepEmbedding`` MLP (diffusers' blocks, as the pack's own code: blocks.py).
    """

    def __init__(
        self,
        in_channels: int = 3,
        unshuffle: int = 2,
        channels: Sequence[int] = (64, 128, 256),
        enc_blocks: Sequence[int] = (1, 1),
        mid_blocks: int = 2,
        dec_blocks: Sequence[int] = (1, 1),
        emb_channels: int = 64,
        emb_dim: int = 128,
        **_: Any,
    ):
        super().__init__()
        levels = len(channels)
        if len(enc_blocks) != levels - 1 or len(dec_blocks) != levels - 1:
            raise ValueError("enc_blocks and dec_blocks need one entry per level above the bottom one")
        self.unshuffle = int(unshuffle)
        self.multiple = self.unshuffle * 2 ** (levels - 1)
        self.time_proj = Timesteps(emb_channels)
        self.time_embed = TimestepEmbedding(emb_channels, emb_dim)
        c_img = in_channels * self.unshuffle ** 2
        self.conv_in = nn.Conv2d(c_img, channels[0], 3, padding=1)
        self.enc = nn.ModuleList(nn.ModuleList(ResBlock(channels[i], emb_dim) for _ in range(enc_blocks[i]))
                                 for i in range(levels - 1))
        self.down = nn.ModuleList(Downsample2D(channels[i], channels[i + 1]) for i in range(levels - 1))
        self.mid = nn.ModuleList(ResBlock(channels[-1], emb_dim) for _ in range(mid_blocks))
        self.up = nn.ModuleList(Upsample2D(channels[i + 1], channels[i]) for i in range(levels - 1))
        self.dec = nn.ModuleList(nn.ModuleList(ResBlock(channels[i], emb_dim) for _ in range(dec_blocks[i]))
                                 for i in range(levels - 1))
        self.conv_out = nn.Conv2d(channels[0], c_img, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        # Sinusoids of 1000 * c_noise: the DDPM timestep range, so all frequencies carry information.
        emb = self.time_embed(self.time_proj(1000.0 * c_noise).to(x.dtype))
        h = self.conv_in(F.pixel_unshuffle(x, self.unshuffle))
        skips = []
        for blocks, down in zip(self.enc, self.down):
            for blk in blocks:
                h = blk(h, emb)
            skips.append(h)
            h = down(h)
        for blk in self.mid:
            h = blk(h, emb)
        for i in reversed(range(len(self.dec))):
            h = self.up[i](h) + skips[i]
            for blk in self.dec[i]:
                h = blk(h, emb)
        return F.pixel_shuffle(self.conv_out(h), self.unshuffle)


def edm_coefficients(sigma: torch.Tensor, sigma_data: float):
    """EDM preconditioning ``(c_skip, c_out, c_in, c_noise)`` for VE noise level ``sigma``."""
    s2, d2 = sigma * sigma, sigma_data * sigma_data
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / (s2 + d2).sqrt()
    c_in = 1.0 / (s2 + d2).sqrt()
    # sigma = 0 is a valid request (the clean end of a schedule): c_out is 0 there,
    # and a floored log keeps the embedding finite so 0 * F stays 0.
    c_noise = sigma.clamp(min=1e-6).log() / 4
    return c_skip, c_out, c_in, c_noise


def padded_forward(net: BuiltinUNet, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
    """``net`` on any image size: reflect-pad to the network's multiple, run, crop back."""
    from ..map.padding import pad_to_multiple

    x, (h, w) = pad_to_multiple(x, net.multiple)
    return net(x, c_noise)[..., :h, :w]


class BuiltinDenoiser(Denoiser):
    """:class:`BuiltinUNet` with EDM preconditioning, as a core :class:`Denoiser`.

    Images in ``[-1, 1]``, VE noise ``x = x0 + sigma * n``; valid for
    ``sigma_min <= sigma <= sigma_max`` (the training range) and at sigma 0.
    """

    def __init__(self, net: BuiltinUNet, config: dict):
        super().__init__(config["sigma_min"], config["sigma_max"])
        self.net = self.network = net
        self.config = dict(config)
        self.sigma_data = float(config["sigma_data"])

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        dev, dt = module_device_dtype(self.net)
        xn = x.to(device=dev, dtype=dt)
        s = torch.as_tensor(sigma, device=dev, dtype=dt)
        s = s.expand(x.shape[0]) if s.ndim == 0 else s.reshape(-1)
        c_skip, c_out, c_in, c_noise = edm_coefficients(s, self.sigma_data)
        out = padded_forward(self.net, bcast(c_in, xn) * xn, c_noise)
        den = bcast(c_skip, xn) * xn + bcast(c_out, xn) * out
        return den.to(device=x.device, dtype=x.dtype)



def build_model(config: Optional[dict] = None) -> BuiltinUNet:
    """A freshly initialised :class:`BuiltinUNet` for ``config`` (defaults filled in)."""
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    if cfg.get("arch") != "BuiltinUNet":
        raise ValueError(f"unknown built-in architecture {cfg.get('arch')!r}")
    return BuiltinUNet(**cfg)


def write_weights(state_dict: dict, config: dict, out_dir: os.PathLike, name: str = WEIGHTS_NAME) -> Path:
    """Write ``name.safetensors``, ``name.json`` and ``name.sha256`` (``sha256sum -c`` format) into ``out_dir``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    st, cfg = out / f"{name}.safetensors", out / f"{name}.json"
    save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()}, str(st))
    cfg.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.chmod(st, 0o644)  # safetensors writes 0600; shipped files must be readable by every user
    (out / f"{name}.sha256").write_text("".join(f"{sha256_file(p)}  {p.name}\n" for p in (st, cfg)))
    return st


def verify_weights(weights_dir: os.PathLike = WEIGHTS_DIR, name: str = WEIGHTS_NAME) -> tuple[Path, Path]:
    """Paths of the safetensors and JSON files after checking them against ``name.sha256``.

    Raises ``FileNotFoundError`` when a file is missing and ``ValueError`` on a
    checksum mismatch (a truncated download or an edited file).
    """
    d = Path(weights_dir)
    st, cfg, sums = d / f"{name}.safetensors", d / f"{name}.json", d / f"{name}.sha256"
    for p in (st, cfg, sums):
        if not p.is_file():
            raise FileNotFoundError(
                f"built-in denoiser file missing: {p}. Reinstall iqa-map, or retrain and export with "
                f"`python -m iqa_map.training --data DIR --out RUNDIR` then `--export`.")
    expected = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, fname = line.split(maxsplit=1)
            expected[fname.strip().lstrip("*")] = digest.lower()
    for p in (st, cfg):
        if p.name not in expected:
            raise ValueError(f"{sums} records no checksum for {p.name}")
        actual = sha256_file(p)
        if actual != expected[p.name]:
            raise ValueError(f"checksum mismatch for {p}: expected sha256 {expected[p.name]}, got {actual}. "
                             "The file is corrupt or was modified; reinstall iqa-map or re-export the weights.")
    return st, cfg


def load_builtin(device=None, dtype: torch.dtype = torch.float32, weights_dir: Optional[os.PathLike] = None
                 ) -> BuiltinDenoiser:
    """The shipped built-in denoiser as a core :class:`Denoiser` (checksum verified, eval mode, no grad).

    ``weights_dir`` defaults to the package's ``weights/`` folder; point it at an
    export folder of your own training run to use your weights.
    """
    from safetensors.torch import load_file

    st, cfg_path = verify_weights(WEIGHTS_DIR if weights_dir is None else weights_dir)
    config = {**DEFAULT_CONFIG, **json.loads(cfg_path.read_text())}
    net = build_model(config)
    net.load_state_dict(load_file(str(st)))
    net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if next(net.parameters()).device.type == "cpu":
        # oneDNN's convolutions are faster on channels-last (NHWC) tensors: measured 1.5x per evaluation and
        # per evaluation with its VJP on this model (benchmarks/bench_cpu.py, docs/benchmarks.md).
        net = net.to(memory_format=torch.channels_last)
    return BuiltinDenoiser(net, config)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def macs_per_pixel(net: BuiltinUNet, size: int = 256) -> float:
    """Multiply-accumulates per input pixel of the convolutions (for the model card)."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = math.prod(mod.kernel_size) * mod.in_channels // mod.groups
        total += k * out.numel() if isinstance(mod, nn.Conv2d) else k * mod.out_channels * inp[0][0].numel() // mod.in_channels
    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size), torch.zeros(1))
    for h in hs:
        h.remove()
    return total / size ** 2
