"""Pixel-space diffusion models as MODEL (+ pass-through VAE): the built-in model and Gaussian denoisers."""
from __future__ import annotations

import torch

from . import comfy, memory
from .schema import Input, Node, Output, Schema
from .types import CATEGORY, CoreModel, PassthroughVAE


class LoadBuiltinPriorModel(Node):
    SCHEMA = Schema(
        node_id="IQAMAP_LoadBuiltinPriorModel", display_name="Load Built-in Prior Model", category=CATEGORY,
        description=("The small pixel-space diffusion model shipped with IQA-MAP (3.7M parameters, trained on "
                     "natural photos), as MODEL plus a pass-through VAE: the whole enhancement graph runs on CPU "
                     "with nothing to download. Use VAE Encode / Decode with its VAE as with any checkpoint."),
        inputs=[Input("device", "COMBO", "Where the model runs; 'auto' follows ComfyUI's device.",
                      options=["auto", "cpu", "gpu"], default="auto")],
        outputs=[Output("MODEL"), Output("VAE")],
    )

    @classmethod
    def execute(cls, device="auto"):
        from ..core.models import load_builtin
        from .prior_nodes import _device
        dev = _device(device)
        den = load_builtin(device=memory.staging_device(dev))
        memory.manage(den.network, dev)  # ComfyUI loads and unloads it (nodes/memory.py)
        return (CoreModel(den, "IQA-MAP built-in"), PassthroughVAE())


#: spandrel architecture id -> (how the noise level is given, trained noise range in /255)
_DENOISERS = {
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
        from ..core.map.padding import pad_to_multiple

        x, (h, w) = pad_to_multiple(x, self.multiple)
        return self.net(x, *args)[..., :h, :w]


def denoiser_from_spandrel(descriptor, max_noise_level: float | None = None, min_noise_level: float = 0.0):
    """A spandrel Gaussian denoiser (DnCNN, FDnCNN, DRUNet, SCUNet, FFDNet) as a core denoiser."""
    from ..core.models import from_denoiser
    arch = getattr(getattr(descriptor, "architecture", None), "id", None) or type(descriptor).__name__
    net = getattr(descriptor, "model", None)
    if arch not in _DENOISERS or net is None:
        raise ValueError(f"'{arch}' is not a Gaussian denoiser IQA-MAP can use as a diffusion model; supported: "
                         f"{', '.join(_DENOISERS)} (loaded with Load Upscale Model)")
    mode, trained_max = _DENOISERS[arch]
    if arch == "DnCNN" and getattr(net, "mode", "DnCNN") == "FDnCNN":
        mode = "channel"
    if getattr(descriptor, "scale", 1) != 1:
        raise ValueError(f"this {arch} model upscales x{descriptor.scale}; a denoiser must keep the size")
    multiple = getattr(getattr(descriptor, "size_requirements", None), "multiple_of", 1) or 1
    sigma_max = (max_noise_level if max_noise_level else trained_max) / 255.0
    sigma_input = {"blind": False, "channel": "channel", "argument": True}[mode]
    net = _Padded(net.eval().requires_grad_(False), multiple)
    return from_denoiser(net, min_noise_level / 255.0, sigma_max, sigma_input=sigma_input), arch


class DenoiserAsDiffusionModel(Node):
    SCHEMA = Schema(
        node_id="IQAMAP_DenoiserAsDiffusionModel", display_name="Denoiser as Diffusion Model", category=CATEGORY,
        description=("Turns a Gaussian denoiser loaded with Load Upscale Model (spandrel: DnCNN, DRUNet, SCUNet, "
                     "FFDNet) into a pixel-space diffusion MODEL: by Tweedie's formula a good denoiser is a "
                     "diffusion prior within the noise range it was trained on. Pair it with Load Built-in Prior "
                     "Model's VAE (pass-through)."),
        inputs=[
            Input("upscale_model", "UPSCALE_MODEL", "A denoiser from Load Upscale Model (scale 1)."),
            Input("max_noise_level", "FLOAT", "Highest noise std (0-255 scale) the denoiser handles; 0 = its "
                  "training range. Inversion strength 1.0 starts from this level.", default=0.0, min=0.0,
                  max=255.0, step=1.0),
            Input("min_noise_level", "FLOAT", "Lowest noise std (0-255 scale) of the schedule.", default=0.5,
                  min=0.0, max=50.0, step=0.1),
        ],
        outputs=[Output("MODEL")],
    )

    @classmethod
    def execute(cls, upscale_model, max_noise_level=0.0, min_noise_level=0.5):
        den, arch = denoiser_from_spandrel(upscale_model, max_noise_level or None, min_noise_level)
        memory.manage(den.network, comfy.default_device())
        return (CoreModel(den, f"{arch} denoiser"),)
