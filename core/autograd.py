"""Autograd plumbing shared by the samplers and the MAP loop.

ComfyUI runs every node under ``torch.inference_mode()``; tensors made there
can neither require grad nor be saved for backward. The core switches it off
itself so no caller has to.
"""
from __future__ import annotations

import contextlib
import functools

import torch


def usable(t: torch.Tensor) -> torch.Tensor:
    """A normal (non-inference) tensor with the same values; call outside inference mode."""
    return t.clone() if torch.is_tensor(t) and t.is_inference() else t


@contextlib.contextmanager
def autograd_on():
    """Leave inference mode and enable grad for the duration."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def outside_inference_mode(fn):
    """Run ``fn`` with inference mode off (grad mode untouched) and its tensor args made usable."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False):
            args = tuple(_usable_tree(a) for a in args)
            kwargs = {k: _usable_tree(v) for k, v in kwargs.items()}
            return fn(*args, **kwargs)

    return wrapper


def _usable_tree(v):
    if torch.is_tensor(v):
        return usable(v)
    if isinstance(v, tuple):
        return tuple(_usable_tree(x) for x in v)
    if isinstance(v, list):
        return [_usable_tree(x) for x in v]
    if isinstance(v, dict):
        return {k: _usable_tree(x) for k, x in v.items()}
    return v


def autograd_safe(module) -> None:
    """Replace a module's inference-mode parameters and buffers by normal copies, in place.

    Weights loaded while ``torch.inference_mode()`` was on (every ComfyUI loader
    node) cannot be saved for backward, so no gradient w.r.t. the *input* can flow
    through the layers that use them. Values are unchanged; call outside inference mode.
    """
    if not isinstance(module, torch.nn.Module):
        return
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None and p.is_inference():
                m._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=False)
        for name, b in list(m._buffers.items()):
            if b is not None and b.is_inference():
                m._buffers[name] = b.clone()


def autograd_vjp(fn, x: torch.Tensor, sigma: torch.Tensor, cond, g: torch.Tensor) -> tuple:
    """``(fn(x, sigma, cond), g^T d fn / dx)`` by autograd, in any grad mode (a denoiser's eps and its VJP)."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        e = fn(leaf, sigma, cond)
        (vjp,) = torch.autograd.grad(e, leaf, g)
    return e.detach(), vjp
