"""The method as nodes: DDIM Invert -> Latent MAP Ascent -> Decode."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.map.settings import ASCENT, INVERT
from ..core.models.checkpointing import use_checkpointing
from . import comfy, comfy_flow, comfy_grad, memory
from .schema import Input, Node, Output, Schema
from .settings_inputs import settings_from_inputs, settings_inputs
from .types import CATEGORY, IQA_INVERSION, IQA_PRIOR, CoreModel, InversionState, PassthroughVAE

SCHEDULER_DEFAULT = "ddim_uniform"


def _schedulers() -> list[str]:
    try:
        import comfy.samplers
        names = list(comfy.samplers.KSampler.SCHEDULERS)
    except ImportError:
        names = ["ddim_uniform", "normal", "karras", "exponential", "sgm_uniform", "simple", "beta"]
    return names if SCHEDULER_DEFAULT in names else [SCHEDULER_DEFAULT, *names]


def _check_model(model):
    if isinstance(model, CoreModel):
        return "core"
    if comfy.is_comfy_model(model):
        return "comfy"
    raise TypeError(f"expected a MODEL, got {type(model).__name__}")


def _samples(latent) -> torch.Tensor:
    if not isinstance(latent, dict) or "samples" not in latent:
        raise TypeError("expected a LATENT (a dict with 'samples'), e.g. from VAE Encode")
    z = latent["samples"]
    comfy_flow.check_latent(z)
    return z


#: DDIM Invert's inputs that mirror the library's inversion settings, generated from their metadata (in widget
#: order; settings added later come after the optional inputs).
INVERSION_SETTINGS_INPUTS, _INVERSION_MORE = settings_inputs(INVERT, required=("steps", "strength", "mix"))


class DDIMInvert(Node):
    SCHEMA = Schema(
        node_id="IQAMAP_DDIMInvert", display_name="DDIM Invert", category=CATEGORY,
        description=("Inverts a photo's latent into the diffusion model's noise space. EDICT (default) is exact: "
                     "sampling the result back gives the photo again, so Latent MAP Ascent starts from the photo "
                     "itself. DDIM is the classic approximate inversion, kept for comparison. Strength works like "
                     "KSampler's denoise: how deep into the noise schedule to go."),
        inputs=[
            Input("model", "MODEL", "A checkpoint MODEL (SD1.x/2.x/XL; flow-matching SD3, Flux.1, Flux.2, Chroma, "
                  "Qwen-Image and -Edit, Lumina 2 / Z-Image, AuraFlow, HiDream, HunyuanImage 2.1; Kontext with its "
                  "reference latent) or an IQA-MAP pixel MODEL."),
            Input("latent", "LATENT", "The photo, encoded with the same model's VAE (VAE Encode)."),
            Input("method", "COMBO", "edict: exact inversion (two coupled latents); ddim: approximate, for "
                  "comparison.", options=["edict", "ddim"], default="edict"),
            *INVERSION_SETTINGS_INPUTS,
            Input("scheduler", "COMBO", "ComfyUI scheduler for checkpoint MODELs; IQA-MAP pixel MODELs use their "
                  "own schedule.", options=_schedulers, default=SCHEDULER_DEFAULT),
            Input("positive", "CONDITIONING", "Text conditioning (checkpoint MODELs need one; an empty prompt is "
                  "fine). Kept for the ascent.", optional=True),
            Input("negative", "CONDITIONING", "Negative conditioning, needed when cfg != 1.", optional=True),
            Input("cfg", "FLOAT", "Classifier-free guidance scale; 1.0 (no guidance) inverts most exactly.",
                  optional=True, default=1.0, min=0.0, max=30.0, step=0.1),
            *_INVERSION_MORE,
            Input("sigmas", "SIGMAS", "Optional: a scheduler node's noise levels to invert along (SDTurboScheduler "
                  "for SDXL Turbo, BasicScheduler, the high half of Split Sigmas); replaces steps, strength and "
                  "scheduler for checkpoint MODELs.", optional=True),
        ],
        outputs=[Output(IQA_INVERSION, "inversion")],
    )

    @classmethod
    def execute(cls, model, latent, method="edict", scheduler=SCHEDULER_DEFAULT, positive=None, negative=None,
                cfg=1.0, sigmas=None, **settings):
        """``settings``: the inputs generated from the library's settings (steps, strength, mix, ...)."""
        from ..core import map as M
        s = settings_from_inputs(INVERT, settings)
        steps, strength, mix = s.steps, s.strength, s.mix
        z = _samples(latent)
        if _check_model(model) == "core":
            if sigmas is not None:
                raise ValueError("DDIM Invert: sigmas apply to checkpoint MODELs; an IQA-MAP pixel MODEL inverts "
                                 "along its own schedule (steps, strength): disconnect sigmas")
            den = model.denoiser
            memory.ready(den.network)
            with torch.inference_mode(False):
                inv = M.invert(den, z.to(den.device), steps, strength, mix=mix, method=method)
            return (InversionState(inv, model),)
        if sigmas is None:
            sigmas = comfy.comfy_sigmas(model, scheduler, steps, strength)
        else:  # the schedule is the given one; strength is kept only as the report's label
            sigmas, steps, scheduler = comfy.given_sigmas(model, sigmas), len(sigmas) - 1, "custom sigmas"
        out = {}

        def run(den, x):
            out["inv"] = M.invert(den, x, steps, strength, mix=mix, method=method, sigmas=sigmas)
            return x

        comfy.run_in_comfy_sampler(model, z, sigmas, run, positive, negative, cfg)
        return (InversionState(out["inv"], model, positive, negative, cfg, scheduler),)


def _weight_map(mask, shape, device) -> torch.Tensor | None:
    """MASK (1 = free to change, as an inpainting mask) -> fidelity weight (1 - mask) at image size."""
    if mask is None:
        return None
    m = mask.float()
    m = m[None] if m.ndim == 2 else m
    if m.ndim != 3:
        raise ValueError(f"mask must be [H,W] or [B,H,W], got {tuple(mask.shape)}")
    m = F.interpolate(m[:, None], size=shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
    if m.shape[0] not in (1, shape[0]):
        raise ValueError(f"mask batch {m.shape[0]} does not match the image batch {shape[0]}")
    return (1 - m).to(device)


#: Latent MAP Ascent's inputs that mirror the library's ascent settings, generated from their metadata: the
#: required ones, then the optional ones (after the optional sockets mask and monitor), in widget order; settings
#: added later come last.
MAP_SETTINGS_REQUIRED, MAP_SETTINGS_OPTIONAL = settings_inputs(
    ASCENT, required=("fidelity", "fidelity_weight", "iterations", "learning_rate", "optimizer", "seed"),
    optional=("hack_margin", "on_hack", "patience", "perturb", "adaptive_fidelity", "adaptive_floor",
              "adaptive_normalise", "hack_reference", "lr_schedule", "units", "tied", "target", "adaptive_window",
              "adaptive_stride", "checkpointing"))  # saved workflows hold widget values by position: append only
MAP_SETTINGS_INPUTS = [*MAP_SETTINGS_REQUIRED, *MAP_SETTINGS_OPTIONAL]


class LatentMAPAscent(Node):
    SCHEMA = Schema(
        node_id="IQAMAP_LatentMAPAscent", display_name="Latent MAP Ascent", category=CATEGORY,
        description=("Enhances the inverted photo: gradient ascent on the prior's score minus a fidelity penalty, "
                     "with gradients through the exact EDICT sampler at constant memory. Returns the best iterate "
                     "as LATENT and the per-iteration history (JSON). An optional monitor prior, never optimised, "
                     "stops the run when the prior is being fooled (the hack guard)."),
        inputs=[
            Input("model", "MODEL", "The MODEL the inversion was made with."),
            Input("vae", "VAE", "The VAE that encoded the photo (the pass-through VAE for pixel MODELs); decoding "
                  "is differentiable."),
            Input("prior", IQA_PRIOR, "What 'better' means: the NR-IQA prior to maximise."),
            Input("inversion", IQA_INVERSION, "From DDIM Invert."),
            Input("mask", "MASK", "Where the mask is 1 the image may change freely; where 0 it is held to the photo "
                  "(as an inpainting mask; an IQA quality map plugs in directly).", optional=True),
            Input("monitor", IQA_PRIOR, "A held-out prior, scored but never optimised: the hack guard fires when "
                  "the prior rises while this one falls.", optional=True),
            *MAP_SETTINGS_INPUTS,
        ],
        outputs=[Output("LATENT", "latent", "The enhanced latent (decode with Decode or VAE Decode)."),
                 Output("STRING", "history", "JSON report: settings, one entry per iteration, scores before/after, "
                        "time, memory.")],
    )

    @classmethod
    def execute(cls, model, vae, prior, inversion, mask=None, monitor=None, **settings):
        """``settings``: the inputs generated from the library's settings (fidelity, iterations, ...)."""
        from ..core import map as M
        if not isinstance(inversion, InversionState):
            raise TypeError("'inversion' must come from DDIM Invert")
        kind = _check_model(model)
        if kind != _check_model(inversion.model) or (kind == "comfy" and model.model is not inversion.model.model) \
                or (kind == "core" and model is not inversion.model):
            raise ValueError("the inversion was made with a different MODEL; connect the same MODEL to DDIM Invert "
                             "and Latent MAP Ascent")
        settings = settings_from_inputs(ASCENT, settings)
        iterations, seed = settings.iterations, settings.seed
        monitors = [monitor] if monitor is not None else []
        memory.ready(prior, *monitors)
        progress = comfy.Progress(iterations, "ascent")
        inv = inversion.inversion

        def run(den, codec):
            shape = (inv.latent.shape[0], 3, inv.latent.shape[-2] * codec.factor, inv.latent.shape[-1] * codec.factor)
            _check_size(shape)
            return M.ascend_inversion(den, inv, prior, settings, codec=codec, monitors=monitors,
                                      weight_map=_weight_map(mask, shape, inv.latent.device), callback=progress)

        if kind == "core":
            if not isinstance(vae, PassthroughVAE):
                raise ValueError("a pixel MODEL needs the pass-through VAE from Load Built-in Prior Model")
            memory.ready(model.denoiser.network, prior, *monitors)  # one call: room for all of them at once
            with torch.inference_mode(False):
                res = run(model.denoiser, vae.codec)
            out = res.latent.float()
        else:
            if isinstance(vae, PassthroughVAE):
                raise ValueError("a checkpoint MODEL needs the checkpoint's VAE, not the pass-through VAE")
            codec = comfy.ComfyVAECodec(vae, comfy.latent_format(model))
            _check_size((1, 3, inv.latent.shape[-2] * codec.factor, inv.latent.shape[-1] * codec.factor))
            box = {}

            def sampler_run(den, x):
                # The gradient pass: ComfyUI's fused RoPE and in-place block updates made differentiable here
                # only, and restored on the way out (also on error or interrupt). Checkpointed blocks are wrapped
                # here, with the guard of their recomputation; the library's own wrapping then leaves them.
                ckpt = use_checkpointing(settings.checkpointing, den.network)
                with comfy_grad.differentiable(den.network, checkpoint=ckpt):
                    box["res"] = run(den, codec)
                return box["res"].latent.float()

            raw = codec.to_raw(inv.latent.float())
            # The priors and the VAE load with the checkpoint, so loading it cannot unload them mid-run.
            out = comfy.run_in_comfy_sampler(inversion.model, raw, inv.sigmas, sampler_run, inversion.positive,
                                             inversion.negative, inversion.cfg, seed,
                                             extra_models=[*memory.patchers(prior, *monitors), vae.patcher])
            res = box["res"]
        return ({"samples": out.detach().float().cpu()}, res.report.to_json(indent=1))


def _check_size(shape) -> None:
    """Before the slow part: the ascent scores the image and reports its SSIM, which need a minimum size."""
    from ..core.io.imageio import MIN_SIDE
    h, w = shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"the image is {w}x{h} pixels; Latent MAP Ascent needs at least {MIN_SIDE}x{MIN_SIDE}: "
                         "scale it up first (e.g. Upscale Image) or use a larger photo")


class Decode(Node):
    SCHEMA = Schema(
        node_id="IQAMAP_Decode", display_name="Decode", category=CATEGORY,
        description=("Decodes a LATENT to IMAGE with the same differentiable path the ascent scores (tiled when "
                     "large), in VAE Decode's conventions; also decodes pixel LATENTs of the pass-through VAE."),
        inputs=[
            Input("samples", "LATENT", "From Latent MAP Ascent (or any latent of this VAE)."),
            Input("vae", "VAE", "The VAE the latent belongs to."),
            Input("tile_size", "INT", "Decode in overlapping tiles when the image is larger than this (pixels); "
                  "0 = never tile.", default=1024, min=0, max=8192, step=64),
        ],
        outputs=[Output("IMAGE")],
    )

    @classmethod
    def execute(cls, samples, vae, tile_size=1024):
        z = _samples(samples)
        if isinstance(vae, PassthroughVAE):
            return (vae.decode(z),)
        factor = int(vae.spacial_compression_decode())
        if tile_size and max(z.shape[-2:]) * factor > tile_size:
            t = max(tile_size // factor, 8)
            img = vae.decode_tiled(z, tile_x=t, tile_y=t, overlap=max(t // 8, 2))
        else:
            codec = comfy.ComfyVAECodec(vae)
            with torch.inference_mode(False), torch.no_grad():
                img = codec.decode(z.float()).movedim(1, -1)
        return (img.reshape(-1, *img.shape[-3:]).float().cpu(),)
