"""Loading a local diffusers Flux or SD3 pipeline folder offline as (flow denoiser, 16-channel VAE codec, prompt cond).

The text encoders (CLIP and T5-XXL: 5-10 GB in bf16) are needed once, for the
prompt: they are moved to the device, encode it, and are dropped before the
transformer moves there, so the device never holds both.
"""
from __future__ import annotations

import gc
from pathlib import Path

import torch

from .codec import VAECodec
from .flow_diffusers import FLOW_PIPELINES, encode_prompt, from_pipeline

_TEXT = ("text_encoder", "text_encoder_2", "text_encoder_3")


def pipeline_class(family: str):
    import diffusers

    return diffusers.FluxPipeline if family == "flux" else diffusers.StableDiffusion3Pipeline


def load_flow_pipeline(path: Path, class_name: str, device, dtype, prompt: str = "", dtype_kwarg=None):
    """``(denoiser, codec, cond, description)`` of the pipeline folder ``path`` (``class_name`` from its index)."""
    from diffusers.utils import logging as dlog

    from ..priors.weights import hf_offline

    family, ramp = FLOW_PIPELINES[class_name]
    cls = pipeline_class(family)
    verbosity = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        with hf_offline():
            pipe = cls.from_pretrained(path, **(dtype_kwarg or {}), local_files_only=True)
    except (OSError, ValueError, EnvironmentError) as e:
        raise RuntimeError(f"could not load the {class_name} from {path} offline: {e}") from None
    finally:
        dlog.set_verbosity(verbosity)
    for name in _TEXT:
        enc = getattr(pipe, name, None)
        if enc is not None:
            enc.to(device).eval().requires_grad_(False)
    cond = encode_prompt(pipe, family, prompt, device)
    for name in _TEXT:  # the prompt is encoded once: free the encoders before the transformer takes the device
        if getattr(pipe, name, None) is not None:
            setattr(pipe, name, None)
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    for m in (pipe.transformer, pipe.vae):
        m.to(device).eval().requires_grad_(False)
    den = from_pipeline(pipe, family, ramp)
    codec = VAECodec(pipe.vae)
    return den, codec, cond, f"{'Flux' if family == 'flux' else 'Stable Diffusion 3'} {path}"
