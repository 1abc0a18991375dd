"""A Gaussian denoiser that spandrel loads (DnCNN, FDnCNN, DRUNet, SCUNet, FFDNet) as a pixel-space diffusion model.

By Tweedie's formula a good MMSE denoiser is the score of the noisy image
distribution, so within the noise range it was trained on it is a diffusion
prior. Used by the Denoiser as Diffusion Model node (the model from Load Upscale
Model) and by ``load_model("denoiser:<file>")`` (the command line's ``--model``).
"""
from __future__ import annotations

import torch

from ..map.padding import pad_to_multiple
from .network import from_denoiser

#: spandrel architecture id -> (how the noise level is given, trained noise range in /255)
DENOISERS = {
    "DnCNN": ("blind", 55.0),
    "DRUNet": ("channel", 50.0),
    "SCUNet": ("blind", 50.0),
    "FFDNet": ("argument", 75.0),
}


class _Padded(torch.nn.Module):
    """Pads inputs to the network's size multiple (reflect) and crops the output back."""

    def __init__(self, net: torch.nn.Module, multiple: int):
        super().__init__()
        self.net, self.multiple = net, max(int(multiple), 1)

    def forward(self, x, *args):
        x, (h, w) = pad_to_multiple(x, self.multiple)
        return self.net(x, *args)[..., :h, :w]


def denoiser_from_spandrel(descriptor, max_noise_level: float | None = None, min_noise_level: float = 0.0):
    """(core denoiser, architecture id) of a spandrel model descriptor; noise levels on the 0-255 scale
    (``max_noise_level`` None: the range the architecture's public weights were trained on)."""
    arch = getattr(getattr(descriptor, "architecture", None), "id", None) or type(descriptor).__name__
    net = getattr(descriptor, "model", None)
    if arch not in DENOISERS or net is None:
        raise ValueError(f"'{arch}' is not a Gaussian denoiser IQA-MAP can use as a diffusion model; supported: "
                         f"{', '.join(DENOISERS)} (loaded with Load Upscale Model)")
    mode, trained_max = DENOISERS[arch]
    if arch == "DnCNN" and getattr(net, "mode", "DnCNN") == "FDnCNN":
        mode = "channel"
    if getattr(descriptor, "scale", 1) != 1:
        raise ValueError(f"this {arch} model upscales x{descriptor.scale}; a denoiser must keep the size")
    multiple = getattr(getattr(descriptor, "size_requirements", None), "multiple_of", 1) or 1
    sigma_max = (max_noise_level if max_noise_level else trained_max) / 255.0
    sigma_input = {"blind": False, "channel": "channel", "argument": True}[mode]
    net = _Padded(net.eval().requires_grad_(False), multiple)
    return from_denoiser(net, min_noise_level / 255.0, sigma_max, sigma_input=sigma_input), arch


def load_denoiser_file(path: str, device=None, dtype=torch.float32):
    """(core denoiser, architecture id) of a denoiser file spandrel reads (``.pth``, ``.safetensors``...)."""
    try:
        import spandrel
    except ImportError:
        raise ImportError("a denoiser file needs spandrel (ComfyUI ships it; else: pip install spandrel)") from None
    try:
        desc = spandrel.ModelLoader(device=torch.device(device) if device else None).load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise ValueError(f"{path} is not a model architecture spandrel knows; a denoiser model must be one of "
                         f"{', '.join(DENOISERS)}") from None
    desc.model.to(dtype=dtype)
    return denoiser_from_spandrel(desc)
