"""EDICT: exactly invertible deterministic sampling, and constant-memory gradients through it.

Sigma form of Wallace, Gokul, Naik (CVPR 2023). One denoising step
``sigma -> sigma'`` (``d = sigma' - sigma``, mixing ``p``)::

    x_i = x + d * eps(y, sigma)
    y_i = y + d * eps(x_i, sigma)
    x'  = p * x_i + (1 - p) * y_i
    y'  = p * y_i + (1 - p) * x'

This is the paper's VP update ``x_i = a_t x_t + b_t eps(y_t, t)`` divided by
``sqrt(alpha_bar_{t-1})``: both network calls at the step's starting noise level.
Each update is affine in its own variable, so the inverse replays the same two
network evaluations in reverse order and is exact up to rounding.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import torch

from ..autograd import autograd_on, outside_inference_mode
from ..models.base import Denoiser
from .precision import wide_dtype

Pair = Tuple[torch.Tensor, torch.Tensor]
GRAD_MODES = ("reversible", "autograd", None)


def _sigma_list(sigmas: Union[torch.Tensor, Sequence[float]]) -> list:
    s = [float(v) for v in (sigmas.tolist() if torch.is_tensor(sigmas) else sigmas)]
    if len(s) < 2:
        raise ValueError("sigmas needs at least two entries (one step)")
    if any(b >= a for a, b in zip(s, s[1:])):
        raise ValueError("sigmas must be strictly decreasing (use denoiser.sigmas(steps, strength))")
    if s[-2] <= 0:
        raise ValueError("only the last sigma may be 0")
    return s


def _check_mix(mix: float) -> float:
    mix = float(mix)
    if not 0.5 <= mix <= 1.0:
        raise ValueError(f"mix must be in [0.5, 1] (EDICT uses 0.93), got {mix}")
    return mix


def _state(x: torch.Tensor, requested: Optional[torch.dtype] = None, invert: bool = False) -> torch.dtype:
    """Precision of the sampler's own state (the latent pair).

    Inversion defaults to float64 (except on MPS, which has none): latents are
    small, and with a float64 state the reconstruction is limited by the
    network's own determinism, not by rounding latents whose magnitude grows
    with sigma. Sampling keeps the pair's dtype (half precision promoted to
    float32). The network always runs in its own dtype (the adapters cast).
    """
    if requested is not None:
        return requested
    if invert:
        return wide_dtype(x.device)
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def step(den: Denoiser, x, y, s: float, s_next: float, p: float, cond=None) -> Pair:
    """One EDICT denoising step ``s -> s_next``."""
    d = s_next - s
    x_i = x + d * den.eps(y, s, cond)
    y_i = y + d * den.eps(x_i, s, cond)
    x2 = p * x_i + (1 - p) * y_i
    y2 = p * y_i + (1 - p) * x2
    return x2, y2


def inverse_step(den: Denoiser, x2, y2, s: float, s_next: float, p: float, cond=None) -> Pair:
    """Exact inverse of :func:`step`: from the pair at ``s_next`` back to ``s``."""
    d = s_next - s
    y_i = (y2 - (1 - p) * x2) / p
    x_i = (x2 - (1 - p) * y_i) / p
    y = y_i - d * den.eps(x_i, s, cond)
    x = x_i - d * den.eps(y, s, cond)
    return x, y


@outside_inference_mode
def invert(
    den: Denoiser, x: torch.Tensor, sigmas, mix: float = 0.93, cond: Any = None,
    state_dtype: Optional[torch.dtype] = None,
) -> Pair:
    """Map a clean image (at ``sigmas[-1]``) to the latent pair ``(x_T, y_T)`` at ``sigmas[0]``.

    ``sample(den, invert(den, x, sigmas), sigmas)`` returns ``(x, x)`` up to
    rounding. The pair comes back in float64 unless ``state_dtype`` says
    otherwise (see :func:`_state`).
    """
    s, p = _sigma_list(sigmas), _check_mix(mix)
    x = x.to(_state(x, state_dtype, invert=True))
    with torch.no_grad():
        xs, ys = x, x.clone()
        for k in reversed(range(len(s) - 1)):
            xs, ys = inverse_step(den, xs, ys, s[k], s[k + 1], p, cond)
    return xs, ys


def sample(
    den: Denoiser,
    pair: Pair,
    sigmas,
    mix: float = 0.93,
    cond: Any = None,
    grad: Optional[str] = "reversible",
    state_dtype: Optional[torch.dtype] = None,
) -> Pair:
    """Run EDICT from the pair at ``sigmas[0]`` to ``sigmas[-1]``; returns the image pair.

    ``grad="reversible"``: differentiable w.r.t. the pair at constant memory (the
    backward pass rebuilds each step's input with the exact inverse);
    ``"autograd"``: plain autograd (memory grows with steps); ``None``: no graph.
    """
    if grad not in GRAD_MODES:
        raise ValueError(f"grad must be one of {GRAD_MODES}, got {grad!r}")
    s, p = _sigma_list(sigmas), _check_mix(mix)
    dt = _state(pair[0], state_dtype)
    x, y = pair[0].to(dt), pair[1].to(dt)
    if grad is None or not (x.requires_grad or y.requires_grad):
        return _sample_plain(den, x, y, s, p, cond, no_grad=grad is None or not torch.is_grad_enabled())
    if grad == "autograd":
        return _sample_plain(den, x, y, s, p, cond, no_grad=False)
    return _Reversible.apply(x, y, den, s, p, cond)


@outside_inference_mode
def _sample_plain(den, x, y, s, p, cond, no_grad):
    ctx = torch.no_grad() if no_grad else torch.enable_grad()
    with ctx:
        for k in range(len(s) - 1):
            x, y = step(den, x, y, s[k], s[k + 1], p, cond)
    return x, y


class _Reversible(torch.autograd.Function):
    """EDICT chain whose backward recomputes activations by exact inversion (MemCNN trick).

    Only the final pair is stored. Going backwards, each step's two network
    evaluations are made once, with autograd on: they rebuild the step's input
    *and* serve as the recomputed forward whose vector-Jacobian products are
    taken, so a gradient costs one forward pass plus one evaluation and one
    backward per network call, and memory holds one evaluation's graph.
    """

    @staticmethod
    def forward(ctx, x, y, den, s, p, cond):
        with torch.no_grad():
            for k in range(len(s) - 1):
                x, y = step(den, x, y, s[k], s[k + 1], p, cond)
        ctx.den, ctx.s, ctx.p, ctx.cond = den, s, p, cond
        ctx.save_for_backward(x, y)
        return x, y

    @staticmethod
    def backward(ctx, gx, gy):
        den, s, p, cond = ctx.den, ctx.s, ctx.p, ctx.cond
        xo, yo = ctx.saved_tensors
        gx = torch.zeros_like(xo) if gx is None else gx
        gy = torch.zeros_like(yo) if gy is None else gy
        with torch.inference_mode(False):
            for k in reversed(range(len(s) - 1)):
                d = s[k + 1] - s[k]
                # Undo the mixing (affine) and carry the gradient through it.
                y_i = (yo - (1 - p) * xo) / p
                x_i = (xo - (1 - p) * y_i) / p
                gx_full = gx + (1 - p) * gy
                g_yi = p * gy + (1 - p) * gx_full
                g_xi = p * gx_full
                # y_i = y + d * eps(x_i): one evaluation rebuilds y and gives its VJP; then x likewise.
                e1, vjp1 = den.eps_and_vjp(x_i, s[k], cond, g_yi)
                y = y_i - d * e1
                g_xi = g_xi + d * vjp1
                e2, vjp2 = den.eps_and_vjp(y, s[k], cond, g_xi)
                x = x_i - d * e2
                gy = g_yi + d * vjp2
                gx = g_xi
                xo, yo = x, y
        return gx, gy, None, None, None, None


def value_and_grad(
    den: Denoiser,
    pair: Pair,
    sigmas,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    mix: float = 0.93,
    cond: Any = None,
    grad: str = "reversible",
    state_dtype: Optional[torch.dtype] = None,
) -> Tuple[torch.Tensor, Pair]:
    """``loss_fn(*sample(pair))`` and its gradient w.r.t. the pair, safe under inference mode.

    ``loss_fn`` maps the sampled image pair to a scalar. Returns the detached
    loss and ``(grad_x, grad_y)``.
    """
    loss, gradient = value_and_lazy_grad(den, pair, sigmas, loss_fn, mix, cond, grad, state_dtype)
    return loss, gradient()


def value_and_lazy_grad(
    den: Denoiser,
    pair: Pair,
    sigmas,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    mix: float = 0.93,
    cond: Any = None,
    grad: str = "reversible",
    state_dtype: Optional[torch.dtype] = None,
) -> Tuple[torch.Tensor, Callable[[], Pair]]:
    """As :func:`value_and_grad`, with the gradient as a function called when it is needed.

    The forward pass and the loss are computed now; the backward pass (half of the
    cost, and with ``grad="reversible"`` two network evaluations per step) only if
    the function is called. The MAP loop skips it for the iterate that ends a run.
    """
    if grad not in ("reversible", "autograd"):
        raise ValueError("value_and_grad needs grad='reversible' or 'autograd'")
    with autograd_on():
        dt = _state(pair[0], state_dtype)
        x = pair[0].detach().to(dt, copy=True).requires_grad_(True)
        y = pair[1].detach().to(dt, copy=True).requires_grad_(True)
        out = sample(den, (x, y), sigmas, mix, cond, grad=grad, state_dtype=dt)
        loss = loss_fn(*out)

    def gradient() -> Pair:
        with autograd_on():
            gx, gy = torch.autograd.grad(loss, (x, y), allow_unused=True)
        return (torch.zeros_like(x) if gx is None else gx, torch.zeros_like(y) if gy is None else gy)

    return loss.detach(), gradient
