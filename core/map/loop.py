"""The ascent loop shared by latent and pixel MAP, with its guards, and the typed report it produces.

The loop keeps the best iterate, reverts and halves the step on a non-finite
value (the NaN guard), stops when a held-out monitor falls while the prior
rises (the hack guard), and stops early on a target or patience.
"""
from __future__ import annotations

import dataclasses
import json
import math
import resource
import time
from collections.abc import Mapping
from typing import Optional, Sequence

import torch

from ..quality.metrics import psnr, ssim
from .optim import lr_factor, make as make_optimiser
from ..priors.base import comparable_score
from ..priors.fusion import FusedPrior
from .settings import MapSettings


@dataclasses.dataclass
class Report(Mapping):
    """What a run did: per-iteration history, events, scores before and after, cost.

    Read it as attributes or, as the JSON it is written as, by key (``report["history"]``);
    :meth:`to_json` gives the JSON text. ``tiles`` and ``scores_over`` are set by tiled runs
    (``best_iteration`` is then per tile, inside ``tiles``).
    """
    history: list
    events: list
    iterations_run: int
    wall_seconds: float
    peak_memory_bytes: int
    input_scores: dict
    output_scores: dict
    psnr_vs_input: float
    ssim_vs_input: float
    settings: dict = dataclasses.field(default_factory=dict)
    best_iteration: Optional[int] = None
    inversion_error: float = 0.0     # the sampler's round trip (EDICT: rounding only)
    codec_error: float = 0.0         # the VAE's own reconstruction error of the input
    denoiser_evals: int = 0
    scores_over: str = "image"       # "tiles": scores are the area-weighted mean of the tiles'
    tiles: Optional[list] = None

    def _keys(self):
        return [f.name for f in dataclasses.fields(self)
                if not (f.name in ("best_iteration", "tiles") and getattr(self, f.name) is None)]

    def __getitem__(self, key):
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._keys())

    def __len__(self):
        return len(self._keys())

    def to_dict(self) -> dict:
        return jsonable(dict(self))

    def to_json(self, indent: Optional[int] = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def jsonable(obj):
    """``obj`` with tensors as lists and non-finite floats as strings (JSON has no inf or NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if torch.is_tensor(obj):
        return obj.tolist()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def named_scores(prior, monitors: Sequence, img: torch.Tensor) -> dict:
    """Native score of the prior, of each fused member and of each monitor, for the report."""
    out = {}
    with torch.no_grad():
        for p in [prior, *(prior.priors if isinstance(prior, FusedPrior) else ()), *monitors]:
            out[p.name] = float(p.native(img).mean())
    return out


def _revert(entry: dict, events: list, best: dict, it: int, reverts: int) -> bool:
    """Record the NaN guard's revert to the best iterate; True when the run must stop instead."""
    msg = (f"iteration {it}: non-finite objective or gradient; reverted to the best iterate "
           f"(iteration {best.get('iteration')}) and halved the learning rate")
    events.append(msg)
    entry["event"] = msg
    if "params" not in best or reverts > 3:
        events.append("stopped: repeated non-finite values")
        return True
    return False


def optimise(params, evaluate, seen, prior, monitors, s: MapSettings, callback, ref, size) -> dict:
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
        # ``evaluate`` returns the objective and a function for its gradient, taken only when the loop steps:
        # the iterate that ends the run (last, early stop, hack guard) needs no backward pass.
        j, gradient = evaluate(params)
        j = float(j)
        img = seen["image"]
        if it == 0:
            first_latent = seen.get("latent")
        entry = {"iteration": it, "objective": j, "score": float(seen["score"].mean()),
                 "fidelity": float(seen["fidelity"].mean()), "seconds": time.perf_counter() - t0}
        if monitors:
            with torch.no_grad():
                entry["monitors"] = {m.name: float(comparable_score(m, img).mean()) for m in monitors}
        if not math.isfinite(j):
            history.append(entry)
            nan_reverts += 1
            if _revert(entry, events, best, it, nan_reverts):
                break
            params, base_lr = [p.clone() for p in best["params"]], base_lr * 0.5
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
        before = (best, stale)
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
            callback({**entry, "total": s.iterations, "image": crop(img), "best_iteration": best.get("iteration")})
        if stop or it == s.iterations:
            if stop:
                events.append(f"stopped at iteration {it}: {stop}")
            break
        grads = gradient()
        if not all(torch.isfinite(g).all() for g in grads):
            # As a non-finite objective: this iterate is not kept, and the step restarts from the best one.
            best, stale = before
            nan_reverts += 1
            if _revert(entry, events, best, it, nan_reverts):
                break
            params, base_lr = [p.clone() for p in best["params"]], base_lr * 0.5
            continue
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
    report = Report(
        history=history, events=events, best_iteration=best["iteration"], iterations_run=len(history),
        wall_seconds=time.perf_counter() - t0,
        peak_memory_bytes=(torch.cuda.max_memory_allocated(params[0].device) if on_cuda
                           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
        input_scores=named_scores(prior, monitors, in_img), output_scores=named_scores(prior, monitors, out_img),
        psnr_vs_input=psnr(out_img, in_img), ssim_vs_input=ssim(out_img, in_img))
    return {"image": out_img, "report": report, "params": best["params"], "first_latent": first_latent,
            "latent": best["latent"]}
