"""Latent MAP ascent: ``max_z Q(G(z)) - lambda * D(G(z), x_init)`` through the bijective EDICT sampler.

``z`` is the EDICT latent pair obtained by exactly inverting ``x_init``; ``G``
samples it back and decodes it; gradients come through the reversible path at
constant memory. :func:`ascend_pixels` runs the same loop directly on pixels,
the naive baseline that invites adversarial patterns.
"""
from __future__ import annotations

import dataclasses
import math
import resource
import time
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from . import ddim, edict
from ._grad import autograd_on, autograd_safe, usable
from .models.base import Denoiser
from .models.codec import PixelCodec
from .objective import DEFAULT_WEIGHT, Fidelity
from .optim import LR_SCHEDULES, default_lr, lr_factor, make as make_optimiser
from .padding import pad_to_multiple
from .priors.base import comparable_score  # noqa: F401 - part of this module's API (callers import it here)
from .priors.fusion import FusedPrior


HACK_REFERENCES = ("peak", "start")  # what a monitor's fall is measured from (the default first)
LATENT_UNITS = ("vp", "ve")  # the coordinates the latent pair is optimised in (the default first)

# Named starting points for MapSettings (explicit settings override them):
# - "default": the defaults (full inversion, 20 steps, 20 momentum iterations): the recipe's gain with a sixth
#   of its evaluations;
# - "fast": a quick CPU regime (partial inversion, 4 steps, 8 Adam iterations), where Adam climbs steadily;
#   about 10 times quicker than the defaults (make demo runs it);
# - "recipe": the public recipe (full inversion, 50 steps, 50 iterations of its momentum update).
PRESETS = {"default": {},
           "fast": dict(steps=4, strength=0.35, iterations=8, optimizer="adam"),
           "recipe": dict(steps=50, strength=1.0, iterations=50, optimizer="momentum")}


@dataclasses.dataclass
class MapSettings:
    steps: int = 20                 # EDICT steps (network evaluations: 2 per step and pass)
    strength: float = 1.0           # fraction of the noise schedule inverted (1 = full, the public recipe)
    mix: float = 0.93               # EDICT mixing p
    iterations: int = 20            # gradient steps
    optimizer: str = "momentum"     # "momentum" (the public recipe's clipped update) or "adam"
    lr: Optional[float] = None      # None: the optimiser's own (momentum: the public recipe's 2, in vp units)
    lr_schedule: str = "constant"   # "constant" or "cosine" (annealed from lr towards 0 over the iterations)
    units: str = "vp"               # latent coordinates optimised: "vp" (x / sqrt(1 + sigma0^2), unit scale, the
                                    # public recipe's) or "ve" (the sampler's own x0 + sigma n)
    fidelity: str = "nlpd"          # "nlpd", "mse", "ssim", "none"
    fidelity_weight: Optional[float] = None  # lambda; None: the fidelity's default
    tied: bool = True               # average the gradients of the pair (public recipe)
    perturb: float = 0.0            # std of a random perturbation added each step (DOODL uses 1e-4)
    target: Optional[float] = None  # stop once the calibrated prior score reaches this (0-100)
    patience: Optional[int] = None  # stop after this many iterations without improvement
    hack_margin: float = 10.0       # hack guard: monitor drop (calibrated points) that counts as hacking
    on_hack: str = "stop"           # "stop" or "warn"
    hack_reference: str = "peak"    # a monitor's drop is measured from its "peak" so far or from the "start"
    adaptive_fidelity: Optional[str] = None  # prior whose quality map weights the fidelity ("prior" = the optimised one)
    adaptive_floor: float = 0.1     # fidelity weight of the worst region relative to the best
    adaptive_normalise: str = "worst"  # "worst": damaged regions keep lambda, good ones held tighter; "mean": same total
    adaptive_window: int = 48       # quality-map window and stride (pixels)
    adaptive_stride: int = 8
    seed: int = 0
    grad: str = "reversible"

    def validate(self) -> None:
        if self.iterations < 0:
            raise ValueError("iterations must be >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}")
        if self.units not in LATENT_UNITS:
            raise ValueError(f"units must be one of {', '.join(LATENT_UNITS)}")
        if self.on_hack not in ("stop", "warn"):
            raise ValueError("on_hack must be 'stop' or 'warn'")
        if self.hack_reference not in HACK_REFERENCES:
            raise ValueError(f"hack_reference must be one of {', '.join(HACK_REFERENCES)}")
        if self.fidelity_weight is not None and self.fidelity_weight < 0:
            raise ValueError("fidelity_weight must be >= 0")
        if self.adaptive_fidelity:
            from .qmap import WEIGHT_NORMALISATIONS
            if self.adaptive_normalise not in WEIGHT_NORMALISATIONS:
                raise ValueError(f"adaptive_normalise must be one of {', '.join(WEIGHT_NORMALISATIONS)}")
            if not 0 <= self.adaptive_floor <= 1 or (self.adaptive_normalise != "mean" and self.adaptive_floor == 0):
                raise ValueError("adaptive_floor (the worst region's fidelity weight relative to the best) must be in "
                                 "(0, 1], or [0, 1] with adaptive_normalise='mean'")


@dataclasses.dataclass
class MapResult:
    image: torch.Tensor              # [B,3,H,W] in [0, 1], the best iterate
    report: dict
    pair: Optional[tuple] = None     # the best latent pair (latent MAP only)
    latent: Optional[torch.Tensor] = None  # the best sampled clean latent, denoiser space (latent MAP only)


class Interrupted(RuntimeError):
    """Raised by a progress callback to stop the loop; the best iterate so far is kept."""


def _is_fused(prior) -> bool:
    return isinstance(prior, FusedPrior)


def _named_scores(prior, monitors: Sequence, img: torch.Tensor) -> dict:
    """Native score of the prior, of each fused member and of each monitor, for the report."""
    out = {}
    with torch.no_grad():
        for p in [prior, *(prior.priors if _is_fused(prior) else ()), *monitors]:
            out[p.name] = float(p.native(img).mean())
    return out


def _check_image(img: torch.Tensor) -> None:
    if not torch.is_tensor(img) or img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"expected an RGB image batch [B,3,H,W] in [0,1], got "
                         f"{tuple(img.shape) if torch.is_tensor(img) else type(img).__name__}")
    if not torch.isfinite(img).all():
        raise ValueError("the input image contains NaN or Inf values")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor, rows: int = 512) -> float:
    """SSIM per RGB channel, averaged (Gaussian window 11, sigma 1.5; Wang et al. 2004).

    Computed ``rows`` rows of the SSIM map at a time (each strip reads 10 rows more): the same value,
    with memory bounded by a strip instead of a dozen full-size maps (1.6 GB at 12 megapixels)."""
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels; got {a.shape[-1]}x{a.shape[-2]}")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    k = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    k = (k / k.sum()).to(a.device)
    win = (k[:, None] * k[None, :]).expand(3, 1, 11, 11)
    f = lambda t: F.conv2d(t, win, groups=3)  # noqa: E731
    total, count = 0.0, 0
    for r in range(0, a.shape[-2] - 10, rows):
        sa, sb = a[..., r:r + rows + 10, :].float(), b[..., r:r + rows + 10, :].float()
        mu_a, mu_b = f(sa), f(sb)
        va, vb, cov = f(sa * sa) - mu_a ** 2, f(sb * sb) - mu_b ** 2, f(sa * sb) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
        total, count = total + float(s.double().sum()), count + s.numel()
    return total / count


class _Counting(Denoiser):
    """Counts network evaluations of a denoiser (for the report)."""

    def __init__(self, inner: Denoiser):
        self.inner, self.count, self.network = inner, 0, inner.network
        self.sigma_min, self.sigma_max = inner.sigma_min, inner.sigma_max

    def denoise(self, x, sigma, cond=None):
        self.count += 1
        return self.inner.denoise(x, sigma, cond)

    def sigmas(self, steps, strength=1.0):
        return self.inner.sigmas(steps, strength)


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


def resolve_lr(s: MapSettings) -> MapSettings:
    """``s`` with a numeric ``lr`` (its own, else the optimiser's default), so the report records the step taken."""
    return s if s.lr is not None else dataclasses.replace(s, lr=default_lr(s.optimizer))


def vp_scale(sigma0: float) -> float:
    """``x_vp = x_ve / sqrt(1 + sigma0^2)``: the variance-preserving latent (DDPM's, Stable Diffusion's) at the
    starting noise level. The public recipe's step sizes (lr 2, clip 1e-3, perturbation 1e-4) are in these units."""
    return 1.0 / math.sqrt(1.0 + float(sigma0) ** 2)


def _in_units(evaluate, scale: float):
    """``evaluate`` over ``u = z * scale``: the objective is unchanged, its gradient is ``dJ/dz / scale``."""
    if scale == 1.0:
        return evaluate

    def scaled(params):
        j, grads = evaluate([p / scale for p in params])
        return j, tuple(g / scale for g in grads)

    return scaled


def _settings_record(s: MapSettings, lam: float, prior, monitors, model: str) -> dict:
    return {**dataclasses.asdict(s), "fidelity_weight": lam, "prior": prior.name,
            "monitors": [m.name for m in monitors], "model": model}


@dataclasses.dataclass
class Inversion:
    """A photo inverted into a denoiser's noise space: everything needed to sample it back and to climb.

    ``pair`` is the EDICT latent pair at ``sigmas[0]`` (for ``method="ddim"`` both
    entries are the one DDIM latent); ``latent`` is the clean latent that was
    inverted, in the denoiser's own space.
    """
    pair: tuple
    sigmas: torch.Tensor
    latent: torch.Tensor
    method: str = "edict"
    mix: float = MapSettings.mix            # the defaults are MapSettings' (one source)
    steps: int = MapSettings.steps
    strength: float = MapSettings.strength
    cond: Any = None


INVERSION_METHODS = ("edict", "ddim")


def invert(denoiser: Denoiser, latent: torch.Tensor, steps: int = MapSettings.steps, strength: float = 1.0, *,
           mix: float = 0.93, method: str = "edict", cond: Any = None,
           sigmas: Optional[torch.Tensor] = None) -> Inversion:
    """Invert a clean latent (``codec.encode(image)``) at ``strength`` with ``steps`` steps.

    ``sigmas`` overrides the denoiser's own schedule (ComfyUI passes its scheduler's).
    EDICT inversion is exact; DDIM inversion is the approximate baseline.
    """
    if method not in INVERSION_METHODS:
        raise ValueError(f"unknown inversion method {method!r}; choose from {INVERSION_METHODS}")
    with torch.inference_mode(False):
        latent = usable(latent).detach()
        sigmas = denoiser.sigmas(steps, strength) if sigmas is None else sigmas.detach().to(torch.float64).cpu()
        if method == "edict":
            pair = edict.invert(denoiser, latent, sigmas, mix=mix, cond=cond)
        else:
            z = ddim.invert(denoiser, latent.to(torch.float64), sigmas, cond=cond)
            pair = (z, z)
    return Inversion(pair=tuple(pair), sigmas=sigmas, latent=latent, method=method, mix=mix, steps=int(steps),
                     strength=float(strength), cond=cond)


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
    _check_image(image)
    codec = codec or PixelCodec()
    multiple = int(codec.factor) * int(getattr(denoiser, "multiple", 1))
    with torch.inference_mode(False):
        image = usable(image).detach()
        ref, size = pad_to_multiple(image, multiple)
        with torch.no_grad():
            z0 = codec.encode(ref)
        counting = _Counting(denoiser)
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
    den = denoiser if isinstance(denoiser, _Counting) else _Counting(denoiser)
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
        _check_image(ref)
        if s.adaptive_fidelity:
            adaptive = _adaptive_weight(prior, s, ref, size)
            weight_map = adaptive if weight_map is None else usable(weight_map) * adaptive
        seen = {}
        objective, lam = _objective(prior, s, ref, usable(weight_map) if weight_map is not None else None, seen)

        def decoded_objective(latent):
            seen["latent"] = latent.detach()
            return objective(codec.decode(latent).float().clamp(0, 1))

        if inversion.method == "edict":
            def evaluate(params):
                return edict.value_and_grad(den, params, sigmas, lambda a, b: decoded_objective(a),
                                            mix=mix, cond=cond, grad=s.grad)
            start = [usable(p).detach() for p in inversion.pair]
        else:
            def evaluate(params):
                with autograd_on():
                    z = params[0].detach().requires_grad_(True)
                    j = decoded_objective(ddim.sample(den, z, sigmas, cond=cond))
                    (g,) = torch.autograd.grad(j, z)
                return j.detach(), (g,)
            start = [usable(inversion.pair[0]).detach()]
        # The optimiser steps in ``units``; the sampler always sees the VE pair.
        scale = vp_scale(sigmas[0]) if s.units == "vp" else 1.0
        result = _optimise([p * scale for p in start], _in_units(evaluate, scale), seen, prior, monitors, s,
                           callback, ref, size)
        result["params"] = [p / scale for p in result["params"]]
    report = result["report"]
    report["settings"] = _settings_record(s, lam, prior, monitors, type(den.inner).__name__)
    report["settings"]["inversion"] = inversion.method
    # The first iterate samples the inverted pair: its distance to the inverted latent is the sampler's
    # round-trip error (EDICT: rounding only), kept apart from the VAE's own reconstruction error.
    lat0 = usable(inversion.latent).detach().double()
    report["inversion_error"] = float((result["first_latent"].double() - lat0).norm() / lat0.norm())
    report["codec_error"] = 0.0  # without a ref, fidelity is measured against the decoded latent itself
    if ref_given:
        with torch.no_grad():
            recon = codec.decode(usable(inversion.latent)).float().clamp(0, 1)
        report["codec_error"] = float((recon - ref).norm() / ref.norm())
    report["denoiser_evals"] = den.count
    return MapResult(image=result["image"], report=report, pair=tuple(result["params"]), latent=result["latent"])


def _adaptive_weight(prior, s: MapSettings, ref: torch.Tensor, size) -> torch.Tensor:
    """Quality-adaptive fidelity: the weight drawn from the map of the (unpadded) input, padded like ``ref``."""
    from . import priors as P
    from .qmap import quality_map
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
    _check_image(image)
    with torch.inference_mode(False):
        ref = usable(image).detach().float()
        if s.adaptive_fidelity:
            adaptive = _adaptive_weight(prior, s, ref, ref.shape[-2:])
            weight_map = adaptive if weight_map is None else usable(weight_map) * adaptive
        seen = {}
        objective, lam = _objective(prior, s, ref, weight_map, seen)

        def evaluate(params):
            with autograd_on():
                x = params[0].detach().requires_grad_(True)
                j = objective(x.clamp(0, 1))
                (g,) = torch.autograd.grad(j, x)
            return j.detach(), (g,)

        s_pix = dataclasses.replace(s, tied=False)
        result = _optimise([ref.clone()], evaluate, seen, prior, monitors, s_pix, callback, ref, ref.shape[-2:])
    report = result["report"]
    report["settings"] = _settings_record(s, lam, prior, monitors, "pixels")
    report["settings"]["units"] = "pixels"
    report["inversion_error"] = report["codec_error"] = 0.0
    report["denoiser_evals"] = 0
    return MapResult(image=result["image"], report=report)


def _optimise(params, evaluate, seen, prior, monitors, s: MapSettings, callback, ref, size) -> dict:
    """The ascent loop shared by latent and pixel MAP: best iterate, NaN guard, hack guard, early stop."""
    t0 = time.perf_counter()
    on_cuda = params[0].device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(params[0].device)
    gen = torch.Generator(device=params[0].device).manual_seed(s.seed)
    opt = make_optimiser(s.optimizer, params, s.lr)
    base_lr = opt.lr  # the schedule scales this; the NaN guard halves it
    crop = lambda img: img[..., : size[0], : size[1]]  # noqa: E731
    history, events = [], []
    best = {"objective": -math.inf}
    base_monitors, stale, first_latent, nan_reverts = None, 0, None, 0
    for it in range(s.iterations + 1):
        j, grads = evaluate(params)
        j = float(j)
        img = seen["image"]
        if it == 0:
            first_latent = seen.get("latent")
        finite = math.isfinite(j) and all(torch.isfinite(g).all() for g in grads)
        entry = {"iteration": it, "objective": j, "score": float(seen["score"].mean()),
                 "fidelity": float(seen["fidelity"].mean()), "seconds": time.perf_counter() - t0}
        if monitors:
            with torch.no_grad():
                entry["monitors"] = {m.name: float(comparable_score(m, img).mean()) for m in monitors}
        if not finite:
            nan_reverts += 1
            msg = (f"iteration {it}: non-finite objective or gradient; reverted to the best iterate "
                   f"(iteration {best.get('iteration')}) and halved the learning rate")
            events.append(msg)
            entry["event"] = msg
            history.append(entry)
            if "params" not in best or nan_reverts > 3:
                events.append("stopped: repeated non-finite values")
                break
            params = [p.clone() for p in best["params"]]
            base_lr *= 0.5
            continue
        history.append(entry)
        stop, hacked = None, False
        if monitors:
            # Each monitor's reference: (its score, the prior's score then). "peak" moves it up with the monitor,
            # so a judge that first rises and then falls (the usual shape of hacking) stops the run near its best.
            if base_monitors is None:
                base_monitors = {k: (v, entry["score"]) for k, v in entry["monitors"].items()}
            elif s.hack_reference == "peak":
                base_monitors = {k: (v, entry["score"]) if v > base_monitors[k][0] else base_monitors[k]
                                 for k, v in entry["monitors"].items()}
            fell = {k: base_monitors[k][0] - v for k, v in entry["monitors"].items()
                    if base_monitors[k][0] - v > s.hack_margin and entry["score"] > base_monitors[k][1]}
            if fell:
                hacked = True
                ref_word = "its peak" if s.hack_reference == "peak" else "the start"
                msg = (f"iteration {it}: hack guard: '{prior.name}' rose while monitor(s) "
                       + ", ".join(f"'{k}' fell by {v:.1f}" for k, v in fell.items()) + f" from {ref_word}")
                events.append(msg)
                entry["event"] = msg
                stop = "hack guard" if s.on_hack == "stop" else None
        # A hacked iterate never becomes the result when the guard stops the run.
        if j > best["objective"] and not (hacked and s.on_hack == "stop"):
            best = {"objective": j, "iteration": it, "params": [p.clone() for p in params],
                    "image": img, "latent": seen.get("latent"), "score": entry["score"]}
            stale = 0
        else:
            stale += 1
        if s.target is not None and entry["score"] >= s.target:
            stop = stop or f"target {s.target} reached"
        if s.patience is not None and stale >= s.patience:
            stop = stop or f"no improvement for {s.patience} iterations"
        if callback is not None:
            callback({**entry, "total": s.iterations, "image": crop(img), "best_iteration": best["iteration"]})
        if stop or it == s.iterations:
            if stop:
                events.append(f"stopped at iteration {it}: {stop}")
            break
        if s.tied and len(grads) == 2:
            g = (grads[0] + grads[1]) / 2
            grads = (g, g)
        opt.lr = base_lr * lr_factor(s.lr_schedule, it, s.iterations)
        params = opt.step(params, grads)
        if s.perturb > 0:
            params = [p + s.perturb * torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
                      for p in params]
    if "image" not in best:
        raise FloatingPointError("the objective was not finite at the start: check the prior and the input image")
    out_img = crop(best["image"]).clamp(0, 1)
    in_img = crop(ref).float()
    report = {
        "history": history,
        "events": events,
        "best_iteration": best["iteration"],
        "iterations_run": len(history),
        "wall_seconds": time.perf_counter() - t0,
        "peak_memory_bytes": (torch.cuda.max_memory_allocated(params[0].device) if on_cuda
                              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
        "input_scores": _named_scores(prior, monitors, in_img),
        "output_scores": _named_scores(prior, monitors, out_img),
        "psnr_vs_input": psnr(out_img, in_img),
        "ssim_vs_input": ssim(out_img, in_img),
    }
    return {"image": out_img, "report": report, "params": best["params"], "first_latent": first_latent,
            "latent": best["latent"]}
