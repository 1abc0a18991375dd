"""Latent MAP ascent: ``max_z Q(G(z)) - lambda * D(G(z), x_init)`` through the bijective EDICT sampler.

``z`` is the EDICT latent pair obtained by exactly inverting ``x_init``; ``G``
samples it back and decodes it; gradients come through the reversible path at
constant memory. :func:`ascend_pixels` runs the same loop directly on pixels,
the naive baseline that invites adversarial patterns. The loop itself is
:func:`~iqa_map.core.map.loop.optimise`; the settings are :mod:`~iqa_map.core.map.settings`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..sampling import ddim, edict
from ..autograd import autograd_on, autograd_safe, usable
from ..sampling.inversion import CountingDenoiser, Inversion, invert
from .loop import Report, optimise
from ..models.base import Denoiser
from ..models.checkpointing import checkpoint_blocks, checkpoint_codec, use_checkpointing
from ..models.codec import PixelCodec
from .objective import DEFAULT_WEIGHT, Fidelity
from .padding import pad_to_multiple
from ..priors.base import comparable_score
from .settings import MapSettings, resolve_lr


@dataclasses.dataclass
class MapResult:
    image: torch.Tensor              # [B,3,H,W] in [0, 1], the best iterate
    report: Report
    pair: Optional[tuple] = None     # the best latent pair (latent MAP only)
    latent: Optional[torch.Tensor] = None  # the best sampled clean latent, denoiser space (latent MAP only)


def check_image(img: torch.Tensor) -> None:
    if not torch.is_tensor(img) or img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"expected an RGB image batch [B,3,H,W] in [0,1], got "
                         f"{tuple(img.shape) if torch.is_tensor(img) else type(img).__name__}")
    if not torch.isfinite(img).all():
        raise ValueError("the input image contains NaN or Inf values")


def _objective(prior, s: MapSettings, ref: torch.Tensor, weight_map, seen: dict):
    """``Q(img) - lambda * D(img, ref)`` summed over the batch; records what it saw in ``seen``."""
    fid = Fidelity(s.fidelity, weight_map=weight_map)
    lam = DEFAULT_WEIGHT[s.fidelity] if s.fidelity_weight is None else s.fidelity_weight

    def objective(img: torch.Tensor) -> torch.Tensor:
        if img.requires_grad:
            # The built-in priors are total (tests/test_priors_total.py); a third-party pyiqa model may
            # still give a NaN gradient on some pixels: those get no push instead of poisoning the
            # whole latent gradient through the decoder and sampler.
            img.register_hook(lambda g: torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0))
        q = comparable_score(prior, img)
        d = fid(img, ref)
        seen.update(image=img.detach(), score=q.detach(), fidelity=d.detach())
        return (q - lam * d).sum()

    return objective, lam


def vp_scale(sigma0: float) -> float:
    """``x_vp = x_ve / sqrt(1 + sigma0^2)``: the variance-preserving latent (DDPM's, Stable Diffusion's) at the
    starting noise level. The public recipe's step sizes (lr 2, clip 1e-3, perturbation 1e-4) are in these units."""
    return 1.0 / math.sqrt(1.0 + float(sigma0) ** 2)


def _in_units(evaluate, scale: float):
    """``evaluate`` over ``u = z * scale``: the objective is unchanged, its gradient is ``dJ/dz / scale``."""
    if scale == 1.0:
        return evaluate

    def scaled(params):
        j, gradient = evaluate([p / scale for p in params])
        return j, lambda: tuple(g / scale for g in gradient())

    return scaled


def _lazy_grad(j: torch.Tensor, params: list):
    """The loop's ``(objective, gradient function)`` for an objective already built with autograd on."""
    def gradient():
        with autograd_on():
            return torch.autograd.grad(j, params)

    return j.detach(), gradient


def _settings_record(s: MapSettings, lam: float, prior, monitors, model: str) -> dict:
    return {**dataclasses.asdict(s), "fidelity_weight": lam, "prior": prior.name,
            "monitors": [m.name for m in monitors], "model": model}


def ascend(
    denoiser: Denoiser,
    image: torch.Tensor,
    prior,
    settings: Optional[MapSettings] = None,
    *,
    codec=None,
    monitors: Sequence = (),
    weight_map: Optional[torch.Tensor] = None,
    cond: Any = None,
    callback: Optional[Callable[[dict], None]] = None,
    **overrides,
) -> MapResult:
    """Enhance ``image`` ([B,3,H,W] in [0,1]) by latent MAP ascent; returns the best iterate and a report.

    ``codec``: how images reach the denoiser's space (default: pixels in [-1, 1];
    :class:`~iqa_map.core.models.codec.VAECodec` for latent models).
    ``monitors``: held-out priors scored each iteration, never optimised (hack guard).
    ``weight_map``: per-pixel fidelity weight ([B or 1, 1, H, W]; 0 = free to change).
    ``callback(info)`` is called after every iteration (raise :class:`Interrupted` to stop).
    Keyword ``overrides`` set fields of :class:`MapSettings`.
    """
    s = dataclasses.replace(settings or MapSettings(), **overrides)
    s.validate()
    check_image(image)
    codec = codec or PixelCodec()
    multiple = int(codec.factor) * int(getattr(denoiser, "multiple", 1))
    with torch.inference_mode(False):
        image = usable(image).detach()
        ref, size = pad_to_multiple(image, multiple)
        with torch.no_grad():
            z0 = codec.encode(ref)
        counting = CountingDenoiser(denoiser)
        inv = invert(counting, z0, s.steps, s.strength, mix=s.mix, cond=cond)
        if weight_map is not None:
            weight_map = pad_to_multiple(usable(weight_map), multiple)[0]
        return ascend_inversion(counting, inv, prior, s, codec=codec, ref=ref, size=size, monitors=monitors,
                                weight_map=weight_map, callback=callback)


def ascend_inversion(
    denoiser: Denoiser,
    inversion: Inversion,
    prior,
    settings: Optional[MapSettings] = None,
    *,
    codec=None,
    ref: Optional[torch.Tensor] = None,
    size: Optional[tuple] = None,
    monitors: Sequence = (),
    weight_map: Optional[torch.Tensor] = None,
    callback: Optional[Callable[[dict], None]] = None,
    **overrides,
) -> MapResult:
    """Climb the objective from an existing :class:`Inversion` (the second half of :func:`ascend`).

    ``ref`` is the image fidelity is measured against (default: the decoded
    inverted latent); ``size`` crops the result (padding added before encoding).
    The inversion's steps, strength and mix override those of ``settings``.
    """
    s = dataclasses.replace(settings or MapSettings(), **overrides)
    s = dataclasses.replace(s, steps=inversion.steps, strength=inversion.strength, mix=inversion.mix)
    s.validate()
    codec = codec or PixelCodec()
    den = denoiser if isinstance(denoiser, CountingDenoiser) else CountingDenoiser(denoiser)
    s = resolve_lr(s)
    sigmas, cond, mix = inversion.sigmas, inversion.cond, inversion.mix
    with torch.inference_mode(False):
        for module in (den.network, getattr(codec, "vae", None), prior, *monitors):
            autograd_safe(module)
        ref_given = ref is not None
        if not ref_given:
            with torch.no_grad():
                ref = codec.decode(usable(inversion.latent)).float().clamp(0, 1)
        ref = usable(ref).detach().float()
        size = tuple(size or ref.shape[-2:])
        check_image(ref)
        if s.adaptive_fidelity:
            adaptive = adaptive_weight(prior, s, ref, size)
            weight_map = adaptive if weight_map is None else usable(weight_map) * adaptive
        seen = {}
        objective, lam = _objective(prior, s, ref, usable(weight_map) if weight_map is not None else None, seen)

        def decoded_objective(latent):
            seen["latent"] = latent.detach()
            return objective(codec.decode(latent).float().clamp(0, 1))

        if inversion.method == "edict":
            def evaluate(params):
                return edict.value_and_lazy_grad(den, params, sigmas, lambda a, b: decoded_objective(a),
                                                 mix=mix, cond=cond, grad=s.grad)
            start = [usable(p).detach() for p in inversion.pair]
        else:
            def evaluate(params):
                with autograd_on():
                    z = params[0].detach().requires_grad_(True)
                    return _lazy_grad(decoded_objective(ddim.sample(den, z, sigmas, cond=cond)), [z])
            start = [usable(inversion.pair[0]).detach()]
        # The optimiser steps in ``units``; the sampler always sees its own state (VE; a flow model's x_t,
        # which says itself how it reaches unit scale).
        scale = getattr(den.inner, "unit_scale", vp_scale)(float(sigmas[0])) if s.units == "vp" else 1.0
        ckpt = use_checkpointing(s.checkpointing, den.network)
        with checkpoint_blocks(den.network, ckpt), checkpoint_codec(codec, ckpt):
            result = optimise([p * scale for p in start], _in_units(evaluate, scale), seen, prior, monitors, s,
                              callback, ref, size)
        result["params"] = [p / scale for p in result["params"]]
    report = result["report"]
    report.settings = {**_settings_record(s, lam, prior, monitors, type(den.inner).__name__),
                       "inversion": inversion.method}
    # The first iterate samples the inverted pair: its distance to the inverted latent is the sampler's
    # round-trip error (EDICT: rounding only), kept apart from the VAE's own reconstruction error.
    lat0 = usable(inversion.latent).detach().double()
    report.inversion_error = float((result["first_latent"].double() - lat0).norm() / lat0.norm())
    report.codec_error = 0.0  # without a ref, fidelity is measured against the decoded latent itself
    if ref_given:
        with torch.no_grad():
            recon = codec.decode(usable(inversion.latent)).float().clamp(0, 1)
        report.codec_error = float((recon - ref).norm() / ref.norm())
    report.denoiser_evals = den.count
    return MapResult(image=result["image"], report=report, pair=tuple(result["params"]), latent=result["latent"])


def adaptive_weight(prior, s: MapSettings, ref: torch.Tensor, size) -> torch.Tensor:
    """Quality-adaptive fidelity: the weight drawn from the map of the (unpadded) input, padded like ``ref``."""
    from .. import priors as P
    from ..quality.qmap import quality_map
    map_prior = prior if s.adaptive_fidelity == "prior" else P.load(s.adaptive_fidelity, device=ref.device)
    qm = quality_map(map_prior, ref[..., : size[0], : size[1]], window=s.adaptive_window, stride=s.adaptive_stride)
    w = qm.weight_map(s.adaptive_floor, normalise=s.adaptive_normalise).to(ref.device)
    ph, pw = ref.shape[-2] - size[0], ref.shape[-1] - size[1]
    return F.pad(w, (0, pw, 0, ph), mode="replicate") if ph or pw else w


def ascend_pixels(image: torch.Tensor, prior, settings: Optional[MapSettings] = None, *, monitors=(),
                  weight_map=None, callback=None, **overrides) -> MapResult:
    """The naive baseline: the same objective, optimiser and budget, with the pixels as variables."""
    s = resolve_lr(dataclasses.replace(settings or MapSettings(), **overrides))
    s.validate()
    check_image(image)
    with torch.inference_mode(False):
        ref = usable(image).detach().float()
        if s.adaptive_fidelity:
            adaptive = adaptive_weight(prior, s, ref, ref.shape[-2:])
            weight_map = adaptive if weight_map is None else usable(weight_map) * adaptive
        seen = {}
        objective, lam = _objective(prior, s, ref, weight_map, seen)

        def evaluate(params):
            with autograd_on():
                x = params[0].detach().requires_grad_(True)
                return _lazy_grad(objective(x.clamp(0, 1)), [x])

        s_pix = dataclasses.replace(s, tied=False)
        result = optimise([ref.clone()], evaluate, seen, prior, monitors, s_pix, callback, ref, ref.shape[-2:])
    report = result["report"]
    report.settings = {**_settings_record(s, lam, prior, monitors, "pixels"), "units": "pixels"}
    return MapResult(image=result["image"], report=report)


