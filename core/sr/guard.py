"""The hack guard of SR fine-tuning: measures and terms that keep the IQA term from hacking its prior.

Why each part exists (docs/sr.md, issue 39): on a fidelity-trained base (DCTLSA x4) the IQA
term grew a fixed 4x4 pattern at the pixel shuffle's period that NIQE first rewarded and then
punished, while the held-out NR judges (PIQE, CNNIQA) kept rewarding it.

* :func:`grid_share` / :func:`periodic_energy`: the change's *scale-periodic* part is its mean
  ``scale x scale`` tile (the average over all blocks of the output grid), less its mean. In
  Fourier terms it is exactly the change's energy at the ``scale**2 - 1`` harmonics of the
  period, so a change with no energy there scores 0 and a pure grid 1. The penalty is its
  energy in squared grey levels; the share (energy over the change's total, both without the
  mean) is the benchmark's and the guard's measure.
* :func:`balanced_gradient`: the IQA term's gradient at the output rescaled to a fixed fraction
  of the fidelity term's, so that one weight means the same push on every base whatever the
  prior's slope there.
* :func:`flat_texture`: high-pass energy of the output where the HR photo is flattest, against
  the HR photo's own: added grain in sky and signs shows as a number.
* :class:`JudgeGuard`: held-out judges every k steps; keep the best admissible checkpoint,
  stop when it has not improved for ``patience`` evaluations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

GREY = 255.0


def _blocks(d: torch.Tensor, s: int) -> torch.Tensor:
    h, w = d.shape[-2] // s * s, d.shape[-1] // s * s
    b, c = d.shape[:2]
    return d[..., :h, :w].reshape(b, c, h // s, s, w // s, s)


def periodic_tile(d: torch.Tensor, scale: int) -> torch.Tensor:
    """[B,C,s,s]: the mean ``scale x scale`` tile of ``d`` [B,C,H,W] over the output grid, less its mean."""
    t = _blocks(d, scale).mean(dim=(2, 4))
    return t - t.mean(dim=(-2, -1), keepdim=True)


def periodic_energy(d: torch.Tensor, scale: int) -> torch.Tensor:
    """[B]: mean square (squared grey levels) per pixel of the scale-periodic part of a change ``d``."""
    return periodic_tile(d, scale).pow(2).mean(dim=(1, 2, 3)) * GREY ** 2


def grid_share(d: torch.Tensor, scale: int) -> torch.Tensor:
    """[B]: share of the change's energy (its mean removed) in its scale-periodic part, 0-1."""
    blocks = _blocks(d, scale)
    centred = blocks - blocks.mean(dim=(2, 3, 4, 5), keepdim=True)
    total = centred.pow(2).mean(dim=(1, 2, 3, 4, 5))
    return periodic_tile(d, scale).pow(2).mean(dim=(1, 2, 3)) / total.clamp_min(1e-20)


def luma(img: torch.Tensor) -> torch.Tensor:
    return (img * img.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _highpass_energy(img: torch.Tensor, window: int) -> torch.Tensor:
    from ..priors.distortions import gaussian_blur

    y = luma(img)
    r = y - gaussian_blur(y.expand(-1, 3, -1, -1), 1.5)[:, :1]
    return F.avg_pool2d(r.pow(2), window)


@torch.no_grad()
def flat_texture(outputs: dict, hr: torch.Tensor, quantile: float = 0.25, window: int = 8) -> dict:
    """Texture (grey levels, rms of the luma's high-pass) of each output in ``outputs`` (name -> [B,3,H,W]) and
    of ``hr`` on the ``quantile`` flattest ``window``-pixel blocks of the HR photo: ``{"hr": .., name: ..}``, each
    [B]. Added grain shows as an output's value above the HR photo's; over-smoothing as one below."""
    e_hr = _highpass_energy(hr, window).flatten(1)
    k = max(1, int(quantile * e_hr.shape[1]))
    idx = e_hr.topk(k, dim=1, largest=False).indices
    out = {"hr": e_hr.gather(1, idx).mean(1).sqrt() * GREY}
    for name, img in outputs.items():
        e = _highpass_energy(img, window).flatten(1)
        out[name] = e.gather(1, idx).mean(1).sqrt() * GREY
    return out


def balanced_gradient(fidelity_grad: torch.Tensor, iqa_grad: torch.Tensor, ratio: float) -> torch.Tensor:
    """The IQA term's pull on the output, ``iqa_grad`` (d Q / d output, ascent direction) rescaled so that its
    norm is ``ratio`` times the norm of ``fidelity_grad`` (d fidelity / d output): subtract it from the loss's
    output gradient. A prior 1000 times steeper, or a base whose fidelity gradient is smaller, gives the same
    push relative to fidelity."""
    scale = ratio * fidelity_grad.norm() / iqa_grad.norm().clamp_min(1e-30)
    return iqa_grad * scale


class JudgeGuard:
    """Held-out judges every ``every`` steps; the best admissible evaluation's weights are kept.

    An evaluation is admissible when the change against the base on the held-out crops has a grid share
    at most ``max_grid`` and costs at most ``max_psnr_drop`` dB; the judges cannot see a grid (neither
    CNNIQA nor S-CNN does), so the periodic measure sits beside them. Step 0 (the base itself) is the
    first candidate: a run that never beats it returns the base."""

    def __init__(self, every: int, patience: int, max_grid: float, max_psnr_drop: float, min_gain: float = 0.0):
        self.every, self.patience = every, patience
        self.max_grid, self.max_psnr_drop, self.min_gain = max_grid, max_psnr_drop, min_gain
        self.curve: list[dict] = []
        self.best_step, self.best_value, self.best_weights = None, None, None
        self.bad, self.stopped = 0, None

    def due(self, step: int) -> bool:
        return step == 0 or (self.every > 0 and step % self.every == 0)

    def update(self, entry: dict, params: dict) -> bool:
        """Record one evaluation (``entry``: step, judge, grid, psnr_drop ...); True when the run should stop."""
        ok = entry["grid"] <= self.max_grid and entry["psnr_drop"] <= self.max_psnr_drop
        entry = {**entry, "admissible": bool(ok)}
        self.curve.append(entry)
        if ok and (self.best_value is None or entry["judge"] > self.best_value + self.min_gain):
            self.best_step, self.best_value, self.bad = entry["step"], entry["judge"], 0
            self.best_weights = {n: p.detach().cpu().clone() for n, p in params.items()}
        elif entry["step"] > 0:
            self.bad += 1
        if self.patience and self.bad >= self.patience:
            self.stopped = {"step": entry["step"], "reason": f"no admissible held-out improvement in "
                            f"{self.patience} evaluations"}
            return True
        return False

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("curve", "best_step", "best_value", "best_weights", "bad", "stopped")}

    def load_state(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def report(self) -> dict:
        return {"curve": self.curve, "best_step": self.best_step, "stopped": self.stopped}


class HeldOut:
    """Fixed held-out crops (LR and HR) with the base's outputs on them, scored by the judges."""

    def __init__(self, lr: torch.Tensor, hr: torch.Tensor, base_module, judges: dict, scale: int, from_training: bool):
        self.lr, self.hr, self.judges, self.scale = lr, hr, judges, scale
        self.from_training = from_training
        with torch.no_grad():
            self.base_out = base_module(lr).clamp(0, 1)
        self.base_psnr = _psnr_y(self.base_out, hr)
        self.base_tex = flat_texture({"o": self.base_out}, hr)["o"].mean().item()

    @torch.no_grad()
    def evaluate(self, module, step: int) -> dict:
        from ..priors.base import comparable_score

        out = module(self.lr.to(next(module.parameters()).device)).clamp(0, 1).to(self.lr.device)
        scores = {n: float(comparable_score(j, out).mean()) for n, j in self.judges.items()}
        tex = flat_texture({"o": out}, self.hr)
        return {"step": step, "judge": sum(scores.values()) / max(1, len(scores)), "judges": scores,
                "grid": float(grid_share(out - self.base_out, self.scale).mean()) if step else 0.0,
                "psnr_drop": self.base_psnr - _psnr_y(out, self.hr),
                "texture": float(tex["o"].mean()), "texture_base": self.base_tex, "texture_hr": float(tex["hr"].mean())}


def _psnr_y(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (luma(a) - luma(b)).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return float((10 * torch.log10(1.0 / mse)).mean())
