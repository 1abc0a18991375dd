"""Ascent updates on the latent (or pixel) variables; each maximises, taking the objective's gradient."""
from __future__ import annotations

import math

import torch

OPTIMISERS = ("adam", "momentum")
LR_SCHEDULES = ("constant", "cosine")


class Momentum:
    """The public recipe (DOODL-based challenge code): ``g * 0.5``, clipped element-wise at
    ``clip``, SGD momentum 0.9, ``z += lr * v`` with ``lr = 2``: at most ``lr * clip / (1 - momentum)`` per element
    and step, sized for Stable Diffusion's unit-scale (variance-preserving) latent."""

    default_lr = 2.0

    def __init__(self, params, lr=None, scale=0.5, clip=1e-3, momentum=0.9):
        self.lr = self.default_lr if lr is None else float(lr)
        self.scale, self.clip, self.momentum = scale, clip, momentum
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, params, grads):
        out = []
        for i, (p, g) in enumerate(zip(params, grads)):
            self.v[i] = self.momentum * self.v[i] + (g * self.scale).clamp(-self.clip, self.clip)
            out.append(p + self.lr * self.v[i])
        return out


class Adam:
    """Adam (Kingma & Ba) as ascent; scale-free, so one learning rate suits every prior."""

    default_lr = 0.003

    def __init__(self, params, lr=None, betas=(0.9, 0.999), eps=1e-8):
        self.lr = self.default_lr if lr is None else float(lr)
        self.b1, self.b2, self.eps, self.t = betas[0], betas[1], eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, params, grads):
        self.t += 1
        out = []
        for i, (p, g) in enumerate(zip(params, grads)):
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
            m_hat = self.m[i] / (1 - self.b1 ** self.t)
            v_hat = self.v[i] / (1 - self.b2 ** self.t)
            out.append(p + self.lr * m_hat / (v_hat.sqrt() + self.eps))
        return out


def default_lr(name: str) -> float:
    """The optimiser's own learning rate (what ``MapSettings(lr=None)`` takes)."""
    return _CLASSES[_check(name)].default_lr


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the learning rate for update ``step`` (0-based) of ``total``. "cosine" anneals from 1 towards 0
    (Loshchilov & Hutter), so a large early step climbs fast and the late steps settle instead of oscillating."""
    if schedule == "constant" or total <= 0:
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / total))
    raise ValueError(f"unknown learning-rate schedule '{schedule}'; choose from {', '.join(LR_SCHEDULES)}")


def _check(name: str) -> str:
    if name not in OPTIMISERS:
        raise ValueError(f"unknown optimiser '{name}'; choose from {', '.join(OPTIMISERS)}")
    return name


_CLASSES = {"adam": Adam, "momentum": Momentum}


def make(name: str, params, lr=None):
    return _CLASSES[_check(name)](params, lr)
