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
from . import report as reports
from .loop import Evaluation, LoopResult, optimise
from .report import Report
from ..models.base import Denoiser
from ..models.checkpointing import checkpoint_blocks, checkpoint_codec, use_checkpointing
from ..models.codec import PixelCodec
from .objective import Objective, Terms, objective as make_objective
from .padding import pad_to_multiple
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


def vp_scale(sigma0: float) -> float:
    """``x_vp = x_ve / sqrt(1 + sigma0^2)``: the variance-preserving latent (DDPM's, Stable Diffusion's) at the
    starting noise level. The public recipe's step sizes (lr 2, clip 1e-3, perturbation 1e-4) are in these units."""
    return 1.0 / math.sqrt(1.0 + float(sigma0) ** 2)


def _in_units(evaluate, scale: float):
    """``evaluate`` over ``u = z * scale``: the objective is unchanged, its gradient is ``dJ/dz / scale``."""
    if scale == 1.0:
        return evaluate

    def scaled(params):
        ev = evaluate([p / scale for p in params])
        return dataclasses.replace(ev, gradient=lambda: tuple(g / scale for g in ev.gradient()))

    return scaled


def _evaluation(terms: Terms, j: torch.Tensor, gradient, latent=None) -> Evaluation:
    return Evaluation(j, terms.image, terms.score, terms.fidelity, gradient, latent)


def _lazy_grad(terms: Terms, params: list, latent=None) -> Evaluation:
    """The loop's evaluation of an objective already built with autograd on."""
    def gradient():
        with autograd_on():
            return torch.autograd.grad(terms.total, params)

    return _evaluation(terms, terms.total.detach(), gradient, latent)


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
    adaptive_prior=None,
    **overrides,
) -> MapResult:
    """Enhance ``image`` ([B,3,H,W] in [0,1]) by latent MAP ascent; returns the best iterate and a report.

    ``codec``: how images reach the denoiser's space (default: pixels in [-1, 1];
    :class:`~iqa_map.core.models.codec.VAECodec` for latent models).
    ``monitors``: held-out priors scored each iteration, never optimised (hack guard).
    ``weight_map``: per-pixel fidelity weight ([B or 1, 1, H, W]; 0 = free to change).
    ``callback(info)`` is called after every iteration (raise :class:`Interrupted` to stop).
    ``adaptive_prior``: the loaded prior of adaptive fidelity's quality map (default: loaded by name from
    the settings, see :func:`resolve_adaptive_prior`).
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
                                weight_map=weight_map, callback=callback, adaptive_prior=adaptive_prior)


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
    adaptive_prior=None,
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
        adaptive_prior = resolve_adaptive_prior(prior, s, ref.device, adaptive_prior)
        if adaptive_prior is not None:
            adaptive = adaptive_weight(adaptive_prior, s, ref, size)
            weight_map = adaptive if weight_map is None else usable(weight_map) * adaptive
        obj = make_objective(prior, s.fidelity, s.fidelity_weight, ref,
                             usable(weight_map) if weight_map is not None else None)
        loop = _climb_latent(den, inversion, obj, codec, s, prior, monitors, callback, size)
        report = _report(loop, ref, size, prior, monitors, {
            **_settings_record(s, obj.weight, prior, monitors, type(den.inner).__name__), "inversion": inversion.method})
    # The first iterate samples the inverted pair: its distance to the inverted latent is the sampler's
    # round-trip error (EDICT: rounding only), kept apart from the VAE's own reconstruction error.
    lat0 = usable(inversion.latent).detach().double()
    report.inversion_error = float((loop.first_latent.double() - lat0).norm() / lat0.norm())
    report.codec_error = 0.0  # without a ref, fidelity is measured against the decoded latent itself
    if ref_given:
        with torch.no_grad():
            recon = codec.decode(usable(inversion.latent)).float().clamp(0, 1)
        report.codec_error = float((recon - ref).norm() / ref.norm())
    report.denoiser_evals = den.count
    return MapResult(image=loop.image, report=report, pair=tuple(loop.params), latent=loop.latent)


def _climb_latent(den: CountingDenoiser, inversion: Inversion, obj: Objective, codec, s: MapSettings, prior,
                  monitors, callback, size) -> LoopResult:
    """The loop over the inverted latent pair (EDICT) or latent (DDIM), stepping in ``s.units``."""
    sigmas, cond, mix = inversion.sigmas, inversion.cond, inversion.mix

    def decoded(latent: torch.Tensor) -> Terms:
        return obj(codec.decode(latent).float().clamp(0, 1))

    if inversion.method == "edict":
        def evaluate(params) -> Evaluation:
            kept = []  # the sampler wants the loss alone; the terms come back beside it

            def loss(a, b):
                kept.append((decoded(a), a.detach()))
                return kept[-1][0].total

            j, gradient = edict.value_and_lazy_grad(den, params, sigmas, loss, mix=mix, cond=cond, grad=s.grad)
            terms, latent = kept[-1]
            return _evaluation(terms, j, gradient, latent)
        start = [usable(p).detach() for p in inversion.pair]
    else:
        def evaluate(params) -> Evaluation:
            with autograd_on():
                z = params[0].detach().requires_grad_(True)
                latent = ddim.sample(den, z, sigmas, cond=cond)
                return _lazy_grad(decoded(latent), [z], latent.detach())
        start = [usable(inversion.pair[0]).detach()]
    # The optimiser steps in ``units``; the sampler always sees its own state (VE; a flow model's x_t,
    # which says itself how it reaches unit scale).
    scale = getattr(den.inner, "unit_scale", vp_scale)(float(sigmas[0])) if s.units == "vp" else 1.0
    ckpt = use_checkpointing(s.checkpointing, den.network)
    with checkpoint_blocks(den.network, ckpt), checkpoint_codec(codec, ckpt):
        loop = optimise([p * scale for p in start], _in_units(evaluate, scale), prior, monitors, s, callback, size)
    return dataclasses.replace(loop, params=[p / scale for p in loop.params])


def _report(loop: LoopResult, ref: torch.Tensor, size, prior, monitors, settings: dict) -> Report:
    """The untiled run's report (:func:`.report.build`): scores of the input and of the best iterate."""
    return reports.build(loop.image, ref[..., : size[0], : size[1]].float(), prior, monitors, history=loop.history,
                         events=loop.events, best_iteration=loop.best_iteration, wall_seconds=loop.seconds,
                         peak_memory_bytes=loop.peak_memory_bytes, settings=settings)


def resolve_adaptive_prior(prior, s: MapSettings, device, given=None):
    """The prior of adaptive fidelity's quality map, loaded once at the entry: None without adaptive fidelity,
    ``given`` if one was passed, the optimised prior for "prior", else the named prior on ``device``."""
    if not s.adaptive_fidelity:
        return None
    if given is not None:
        return given
    if s.adaptive_fidelity == "prior":
        return prior
    from .. import priors  # the registry of every prior: imported only when one is named

    return priors.load(s.adaptive_fidelity, device=device)


def adaptive_weight(map_prior, s: MapSettings, ref: torch.Tensor, size) -> torch.Tensor:
    """Quality-adaptive fidelity: the weight drawn from ``map_prior``'s map of the (unpadded) input, padded like
    ``ref`` (``map_prior`` is loaded: :func:`resolve_adaptive_prior`)."""
    from ..quality.qmap import quality_map

    qm = quality_map(map_prior, ref[..., : size[0], : size[1]], window=s.adaptive_window, stride=s.adaptive_stride)
    w = qm.weight_map(s.adaptive_floor, normalise=s.adaptive_normalise).to(ref.device)
    ph, pw = ref.shape[-2] - size[0], ref.shape[-1] - size[1]
    return F.pad(w, (0, pw, 0, ph), mode="replicate") if ph or pw else w


def ascend_pixels(image: torch.Tensor, prior, settings: Optional[MapSettings] = None, *, monitors=(),
                  weight_map=None, callback=None, adaptive_prior=None, **overrides) -> MapResult:
    """The naive baseline: the same objective, optimiser and budget, with the pixels as variables."""
    s = resolve_lr(dataclasses.replace(settings or MapSettings(), **overrides))
    s.validate()
    check_image(image)
    with torch.inference_mode(False):
        ref = usable(image).detach().float()
        adaptive_prior = resolve_adaptive_prior(prior, s, ref.device, adaptive_prior)
        if adaptive_prior is not None:
            adaptive = adaptive_weight(adaptive_prior, s, ref, ref.shape[-2:])
            weight_map = adaptive if weight_map is None else usable(weight_map) * adaptive
        obj = make_objective(prior, s.fidelity, s.fidelity_weight, ref, weight_map)

        def evaluate(params) -> Evaluation:
            with autograd_on():
                x = params[0].detach().requires_grad_(True)
                return _lazy_grad(obj(x.clamp(0, 1)), [x])

        s_pix = dataclasses.replace(s, tied=False)
        loop = optimise([ref.clone()], evaluate, prior, monitors, s_pix, callback, ref.shape[-2:])
        report = _report(loop, ref, ref.shape[-2:], prior, monitors,
                         {**_settings_record(s, obj.weight, prior, monitors, "pixels"), "units": "pixels"})
    return MapResult(image=loop.image, report=report)
