"""The ascent loop shared by latent and pixel MAP, with its guards, as typed step records.

The loop keeps the best iterate, reverts and halves the step on a non-finite
value (the NaN guard, :func:`revert`), stops when a held-out monitor falls while
the prior rises (the hack guard, :func:`hack_guard`), and stops early on a target
or patience (:func:`early_stop`). Each evaluation of the objective is an
:class:`Evaluation`; each iteration a :class:`Step`; the run a :class:`LoopResult`,
which :func:`.report.build` turns into the report users read.
"""
from __future__ import annotations

import dataclasses
import math
import resource
import time
from typing import Callable, Optional

import torch

from ..priors.base import comparable_score
from .optim import lr_factor, make as make_optimiser
from .settings import MapSettings


@dataclasses.dataclass
class Evaluation:
    """One evaluation of the objective: its value, what it saw, and its gradient, taken only when asked for."""
    objective: torch.Tensor          # the summed objective (detached)
    image: torch.Tensor              # the image scored (detached, padded like the reference)
    score: torch.Tensor              # [B] the prior's comparable score
    fidelity: torch.Tensor           # [B] the fidelity distance
    gradient: Callable[[], tuple]    # d objective / d params
    latent: Optional[torch.Tensor] = None  # the sampled clean latent (latent MAP only)


@dataclasses.dataclass
class Step:
    """One iteration: the values the history records, and the iterate's image and latent."""
    iteration: int
    objective: float
    score: float
    fidelity: float
    seconds: float
    image: torch.Tensor = dataclasses.field(repr=False)
    latent: Optional[torch.Tensor] = dataclasses.field(default=None, repr=False)
    monitors: Optional[dict] = None  # each monitor's comparable score (when there are monitors)
    event: Optional[str] = None      # what a guard did at this iteration

    def record(self) -> dict:
        """The history entry (the report's JSON keys)."""
        out = {"iteration": self.iteration, "objective": self.objective, "score": self.score,
               "fidelity": self.fidelity, "seconds": self.seconds}
        if self.monitors is not None:
            out["monitors"] = self.monitors
        if self.event is not None:
            out["event"] = self.event
        return out


@dataclasses.dataclass
class Best:
    """The best iterate so far: its step and the parameters that gave it."""
    step: Step
    params: list


@dataclasses.dataclass
class LoopResult:
    """What the loop returns: the best iterate, every step, the events, the cost."""
    image: torch.Tensor              # the best iterate's image, cropped to ``size``, in [0, 1]
    params: list                     # the best iterate's parameters
    latent: Optional[torch.Tensor]   # its sampled clean latent (latent MAP only)
    first_latent: Optional[torch.Tensor]  # the first iterate's (the sampler's round trip)
    steps: list                      # one Step per iteration, reverted ones included
    events: list
    best_iteration: int
    seconds: float
    peak_memory_bytes: int

    @property
    def history(self) -> list:
        return [s.record() for s in self.steps]


def revert(step: Step, events: list, best: Optional[Best], reverts: int) -> bool:
    """The NaN guard: record the revert to the best iterate; True when the run must stop instead."""
    msg = (f"iteration {step.iteration}: non-finite objective or gradient; reverted to the best iterate "
           f"(iteration {best.step.iteration if best else None}) and halved the learning rate")
    events.append(msg)
    step.event = msg
    if best is None or reverts > 3:
        events.append("stopped: repeated non-finite values")
        return True
    return False


def hack_guard(step: Step, reference: Optional[dict], s: MapSettings, prior_name: str) -> tuple:
    """The hack guard: ``(reference, message)``, the message when a monitor fell by more than ``hack_margin``
    from its reference while the prior rose above its score then.

    Each monitor's reference is (its score, the prior's score then), first at the start; with ``hack_reference``
    "peak" it moves up with the monitor, so a judge that first rises and then falls (the usual shape of hacking)
    stops the run near its best."""
    if reference is None:
        reference = {k: (v, step.score) for k, v in step.monitors.items()}
    elif s.hack_reference == "peak":
        reference = {k: (v, step.score) if v > reference[k][0] else reference[k] for k, v in step.monitors.items()}
    fell = {k: reference[k][0] - v for k, v in step.monitors.items()
            if reference[k][0] - v > s.hack_margin and step.score > reference[k][1]}
    if not fell:
        return reference, None
    ref_word = "its peak" if s.hack_reference == "peak" else "the start"
    return reference, (f"iteration {step.iteration}: hack guard: '{prior_name}' rose while monitor(s) "
                       + ", ".join(f"'{k}' fell by {v:.1f}" for k, v in fell.items()) + f" from {ref_word}")


def early_stop(step: Step, s: MapSettings, stale: int) -> Optional[str]:
    """Why the run stops early at this step (a target score reached, no improvement for ``patience``), or None."""
    if s.target is not None and step.score >= s.target:
        return f"target {s.target} reached"
    if s.patience is not None and stale >= s.patience:
        return f"no improvement for {s.patience} iterations"
    return None


def _step(it: int, ev: Evaluation, monitors, t0: float) -> Step:
    step = Step(iteration=it, objective=float(ev.objective), score=float(ev.score.mean()),
                fidelity=float(ev.fidelity.mean()), seconds=time.perf_counter() - t0, image=ev.image, latent=ev.latent)
    if monitors:
        with torch.no_grad():
            step.monitors = {m.name: float(comparable_score(m, ev.image).mean()) for m in monitors}
    return step


def optimise(params: list, evaluate: Callable[[list], Evaluation], prior, monitors, s: MapSettings, callback,
             size) -> LoopResult:
    """The ascent loop shared by latent and pixel MAP: best iterate, NaN guard, hack guard, early stop.

    ``evaluate(params)`` gives an :class:`Evaluation`; its gradient is taken only when the loop steps, so
    the iterate that ends the run (last, early stop, hack guard) needs no backward pass."""
    t0 = time.perf_counter()
    on_cuda = params[0].device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(params[0].device)
    gen = torch.Generator(device=params[0].device).manual_seed(s.seed)
    opt = make_optimiser(s.optimizer, params, s.lr)
    base_lr = opt.lr  # the schedule scales this; the NaN guard halves it
    crop = lambda img: img[..., : size[0], : size[1]]  # noqa: E731
    steps, events = [], []
    best: Optional[Best] = None
    reference, stale, first_latent, nan_reverts = None, 0, None, 0
    for it in range(s.iterations + 1):
        ev = evaluate(params)
        step = _step(it, ev, monitors, t0)
        steps.append(step)
        if it == 0:
            first_latent = ev.latent
        if not math.isfinite(step.objective):
            nan_reverts += 1
            if revert(step, events, best, nan_reverts):
                break
            params, base_lr = [p.clone() for p in best.params], base_lr * 0.5
            continue
        stop, hacked = None, False
        if monitors:
            reference, msg = hack_guard(step, reference, s, prior.name)
            if msg:
                hacked = True
                events.append(msg)
                step.event = msg
                stop = "hack guard" if s.on_hack == "stop" else None
        # A hacked iterate never becomes the result when the guard stops the run.
        before = (best, stale)
        if step.objective > (best.step.objective if best else -math.inf) and not (hacked and s.on_hack == "stop"):
            best, stale = Best(step, [p.clone() for p in params]), 0
        else:
            stale += 1
        stop = stop or early_stop(step, s, stale)
        if callback is not None:
            callback({**step.record(), "total": s.iterations, "image": crop(step.image),
                      "best_iteration": best.step.iteration if best else None})
        if stop or it == s.iterations:
            if stop:
                events.append(f"stopped at iteration {it}: {stop}")
            break
        grads = ev.gradient()
        if not all(torch.isfinite(g).all() for g in grads):
            # As a non-finite objective: this iterate is not kept, and the step restarts from the best one.
            best, stale = before
            nan_reverts += 1
            if revert(step, events, best, nan_reverts):
                break
            params, base_lr = [p.clone() for p in best.params], base_lr * 0.5
            continue
        if s.tied and len(grads) == 2:
            g = (grads[0] + grads[1]) / 2
            grads = (g, g)
        opt.lr = base_lr * lr_factor(s.lr_schedule, it, s.iterations)
        params = opt.step(params, grads)
        if s.perturb > 0:
            params = [p + s.perturb * torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
                      for p in params]
    if best is None:
        raise FloatingPointError("the objective was not finite at the start: check the prior and the input image")
    return LoopResult(
        image=crop(best.step.image).clamp(0, 1), params=best.params, latent=best.step.latent,
        first_latent=first_latent, steps=steps, events=events, best_iteration=best.step.iteration,
        seconds=time.perf_counter() - t0,
        peak_memory_bytes=(torch.cuda.max_memory_allocated(params[0].device) if on_cuda
                           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))
