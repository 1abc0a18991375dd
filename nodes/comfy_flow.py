"""Which ComfyUI model families IQA-MAP runs, and the clear refusals for the rest.

EDICT works in ComfyUI's sampler space, where every model is a denoiser
``D(x, sigma)`` and the sampler's Euler step is ``x + (s' - s)(x - D)/s``:
for epsilon/v-prediction models that is DDIM, for flow-matching models
(``CONST`` sampling: ``x = (1 - s) x0 + s n``, ``D = x - s v``) it is the Euler
step of the flow ODE. So the same inversion and ascent serve both; what
differs is at the sampler's boundaries (``noise_scaling``: the flow latent at
``sigma`` is ``(1 - sigma)`` times the clean one, handled in
:func:`..comfy.run_in_comfy_sampler`) and in the network's backward (fused
RoPE, in-place updates: :mod:`.comfy_grad`).
"""
from __future__ import annotations

from typing import Any

#: model_base class -> family, for the flow-matching image models tested with ComfyUI 0.8's own classes
#: (tests/comfy_scripts/check_flow.py).
FLOW_FAMILIES = {
    "SD3": "Stable Diffusion 3 / 3.5",
    "Flux": "Flux.1 (dev, schnell, Kontext)",
    "Flux2": "Flux.2",
    "Chroma": "Chroma",
    "ChromaRadiance": "Chroma Radiance (pixel space)",
    "QwenImage": "Qwen-Image (and Qwen-Image-Edit)",
    "Lumina2": "Lumina 2 / Z-Image",
    "HiDream": "HiDream",
    "AuraFlow": "AuraFlow",
    "HunyuanImage21": "HunyuanImage 2.1",
}

#: model_base classes (and their subclasses) of video models: IQA-MAP's priors judge single images.
VIDEO_BASES = ("WAN21", "HunyuanVideo", "HunyuanVideo15", "LTXV", "LTXAV", "GenmoMochi", "CosmosVideo",
               "CosmosPredict2", "SVD_img2vid", "Kandinsky5", "HunyuanImage21Refiner")
IMAGE_EXCEPTIONS = ("Kandinsky5Image",)
#: model_base classes refused for a reason of their own (checked before the video refusal).
NOT_SUPPORTED = {
    "HunyuanImage21Refiner": "HunyuanImage 2.1's refiner, which re-denoises the base model's output conditioned on "
                             "it (a concat latent) in its own video VAE's frame-paired latents; IQA-MAP inverts the "
                             "HunyuanImage 2.1 base model: connect that MODEL (and its VAE) instead",
}

SUPPORTED_MODELS = (
    "epsilon-prediction and v-prediction diffusion models (SD1.x, SD2.x, SDXL and their fine-tunes, "
    "Turbo/Lightning/LCM)",
    "flow-matching image models: " + ", ".join(FLOW_FAMILIES.values()),
    "IQA-MAP's Load Built-in Prior Model", "Denoiser as Diffusion Model")


def _class_names(obj) -> list[str]:
    return [c.__name__ for c in type(obj).__mro__]


def is_video_model(base_model) -> bool:
    names = _class_names(base_model)
    return names[0] not in IMAGE_EXCEPTIONS and any(n in VIDEO_BASES for n in names)


def family(base_model) -> str:
    """The family label of a ComfyUI ``BaseModel`` (its class name when it is not in the table)."""
    for n in _class_names(base_model):
        if n in FLOW_FAMILIES:
            return FLOW_FAMILIES[n]
    return type(base_model).__name__


def check_sampling(model, ms_mod) -> Any:
    """The MODEL's ``model_sampling`` when EDICT can run it; otherwise a ValueError that says what can."""
    ms = model.get_model_object("model_sampling")
    base = getattr(model, "model", None)
    kind = type(base).__name__
    supported = "Supported: " + "; ".join(SUPPORTED_MODELS) + "."
    if kind in NOT_SUPPORTED:
        raise ValueError(f"IQA-MAP cannot invert {kind}: it is {NOT_SUPPORTED[kind]}. {supported}")
    if base is not None and is_video_model(base):
        raise ValueError(f"IQA-MAP enhances still images; {kind} is a video model, which it cannot invert or "
                         f"score frame by frame. {supported}")
    if isinstance(ms, ms_mod.EPS) or isinstance(ms, ms_mod.CONST):
        return ms
    param = "/".join(c.__name__ for c in type(ms).__mro__[1:] if c.__module__ == ms_mod.__name__)
    raise ValueError(f"IQA-MAP cannot invert this model ({kind}, {param} sampling): its parameterisation is not "
                     f"one EDICT runs. {supported}")


def check_latent(z) -> None:
    """Image latents are [B,C,H,W], or [B,C,1,H,W] for models with a video VAE (Qwen-Image); a clear error else."""
    if getattr(z, "is_nested", False) or z.ndim not in (4, 5):
        raise ValueError(f"IQA-MAP works on image latents [B,C,H,W]; got shape {tuple(z.shape)}")
    if z.ndim == 5 and z.shape[2] != 1:
        raise ValueError(f"this LATENT holds {z.shape[2]} frames (shape {tuple(z.shape)}): IQA-MAP enhances still "
                         "images; encode a single image (VAE Encode of one frame)")
