"""Pixel-space diffusion models as MODEL (+ pass-through VAE): the built-in model and Gaussian denoisers."""
from __future__ import annotations


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
        from .prior_nodes import device_of
        dev = device_of(device)
        den = load_builtin(device=memory.staging_device(dev))
        memory.manage(den.network, dev)  # ComfyUI loads and unloads it (nodes/memory.py)
        return (CoreModel(den, "IQA-MAP built-in"), PassthroughVAE())


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
        from ..core.models.spandrel_denoiser import denoiser_from_spandrel

        den, arch = denoiser_from_spandrel(upscale_model, max_noise_level or None, min_noise_level)
        memory.manage(den.network, comfy.default_device())
        return (CoreModel(den, f"{arch} denoiser"),)
