"""diffusers flow transformers (``FluxTransformer2DModel``, ``SD3Transformer2DModel``) as flow denoisers.

Each adapter calls its transformer exactly as the diffusers pipeline does, so
Euler sampling through it (``ddim.sample``) reproduces the pipeline's latents
(tests/test_flow.py): Flux packs the ``[B, 16, H, W]`` latent into 2x2 patches
(``[B, HW/4, 64]``) with rotary position ids per patch, takes the time in [0, 1]
and, for the guidance-distilled dev model, a guidance value as an input (one
evaluation per step: EDICT stays exact; schnell has none); SD3 takes the
unpacked latent and the time times 1000. Both take the prompt's sequence
embedding and its pooled embedding (``cond``, from :func:`encode_flux` /
:func:`encode_sd3`). The network runs in its own dtype; the sampler's state
keeps its own (float64 for inversion).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .base import module_device_dtype
from .flow import FlowDenoiser, FlowSchedule, split_flow_cond

#: Flux dev's default distilled guidance (the pipeline's ``guidance_scale``).
FLUX_GUIDANCE = 3.5


def _batch(t: torch.Tensor, b: int) -> torch.Tensor:
    return t.expand(b, *t.shape[1:]) if t.shape[0] == 1 and b > 1 else t


def _text(cond: Any, dev, dt, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = split_flow_cond(cond)
    if c.get("prompt_embeds") is None or c.get("pooled_prompt_embeds") is None:
        raise ValueError("this flow transformer is text-conditioned: pass cond={'prompt_embeds': ..., "
                         "'pooled_prompt_embeds': ...} (load_model encodes the prompt, empty by default)")
    return (_batch(c["prompt_embeds"], b).to(dev, dt), _batch(c["pooled_prompt_embeds"], b).to(dev, dt))


class FluxDenoiser(FlowDenoiser):
    """Flux.1 (dev, schnell) transformer; the latent's height and width must be even (2x2 packing)."""

    multiple = 2
    patch = 2

    def __init__(self, transformer: torch.nn.Module, schedule: Optional[FlowSchedule] = None,
                 guidance: Optional[float] = FLUX_GUIDANCE):
        super().__init__(schedule or FlowSchedule(dynamic=True))
        self.transformer = self.network = transformer
        self.guidance = guidance if getattr(transformer.config, "guidance_embeds", False) else None

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        dev, dt = module_device_dtype(self.transformer)
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"Flux needs an even latent height and width (images a multiple of 16 pixels); "
                             f"got {h}x{w}")
        packed = x.to(dev, dt).reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        packed = packed.reshape(b, (h // 2) * (w // 2), c * 4)
        ids = torch.zeros(h // 2, w // 2, 3, device=dev, dtype=dt)
        ids[..., 1] += torch.arange(h // 2, device=dev, dtype=dt)[:, None]
        ids[..., 2] += torch.arange(w // 2, device=dev, dtype=dt)[None, :]
        emb, pooled = _text(cond, dev, dt, b)
        txt_ids = split_flow_cond(cond).get("text_ids")
        txt_ids = torch.zeros(emb.shape[1], 3, device=dev, dtype=dt) if txt_ids is None else txt_ids.to(dev, dt)
        guidance = None if self.guidance is None else torch.full((b,), float(self.guidance), device=dev)
        tb = (t.expand(b) if t.ndim == 0 else t).to(dev, dt)
        out = self.transformer(hidden_states=packed, timestep=tb, guidance=guidance, pooled_projections=pooled,
                               encoder_hidden_states=emb, txt_ids=txt_ids, img_ids=ids.reshape(-1, 3),
                               return_dict=False)[0]
        out = out.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
        return out.to(x.dtype)


class SD3Denoiser(FlowDenoiser):
    """Stable Diffusion 3 / 3.5 (MMDiT) transformer."""

    def __init__(self, transformer: torch.nn.Module, schedule: Optional[FlowSchedule] = None):
        super().__init__(schedule or FlowSchedule(shift=3.0, ramp="train"))
        self.transformer = self.network = transformer
        self.multiple = self.patch = int(getattr(transformer.config, "patch_size", 2))

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        dev, dt = module_device_dtype(self.transformer)
        b = x.shape[0]
        emb, pooled = _text(cond, dev, dt, b)
        T = self.schedule.num_train_timesteps
        tb = (t.expand(b) if t.ndim == 0 else t).to(dev, dt) * T
        out = self.transformer(hidden_states=x.to(dev, dt), timestep=tb, encoder_hidden_states=emb,
                               pooled_projections=pooled, return_dict=False)[0]
        return out.to(x.dtype)


# Flow pipelines the library loads: model_index.json's _class_name -> (family, how its pipeline ramps the schedule).
FLOW_PIPELINES = {
    "FluxPipeline": ("flux", "unit"), "FluxImg2ImgPipeline": ("flux", "unit"),
    "StableDiffusion3Pipeline": ("sd3", "train"), "StableDiffusion3Img2ImgPipeline": ("sd3", "train"),
}


def from_pipeline(pipe, family: str, ramp: str, guidance: Optional[float] = FLUX_GUIDANCE) -> FlowDenoiser:
    """The transformer of a loaded diffusers Flux or SD3 pipeline, with its scheduler's schedule."""
    schedule = FlowSchedule.from_config(pipe.scheduler.config, ramp=ramp)
    if family == "flux":
        return FluxDenoiser(pipe.transformer, schedule, guidance)
    return SD3Denoiser(pipe.transformer, schedule)


@torch.no_grad()
def encode_prompt(pipe, family: str, prompt: str = "", device=None) -> dict:
    """The prompt's embeddings as the pipeline computes them (guidance 1: no negative), as a flow ``cond``."""
    if family == "flux":
        emb, pooled, text_ids = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=device)
        return {"prompt_embeds": emb, "pooled_prompt_embeds": pooled, "text_ids": text_ids}
    emb, _, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, prompt_3=None, device=device,
                                           do_classifier_free_guidance=False)
    return {"prompt_embeds": emb, "pooled_prompt_embeds": pooled}
