"""The one denoiser interface every diffusion model is wrapped into.

k-diffusion / EDM convention: a model is ``D(x, sigma, cond) -> x0`` on
variance-exploding inputs ``x = x0 + sigma * n``. Samplers only ever see this
interface, so SD checkpoints, plain Gaussian denoisers, the built-in model and
ComfyUI's MODEL objects are interchangeable.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

from ..autograd import autograd_vjp


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """``n`` decreasing sigmas from ``sigma_max`` to ``sigma_min`` (Karras et al. 2022, eq. 5)."""
    if n == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def truncate_schedule(steps: int, strength: float) -> tuple[int, int]:
    """How many steps the full schedule has, given ``steps`` run at ``strength``.

    Follows ComfyUI's ``denoise``: the schedule is built for ``steps / strength``
    steps and only its last ``steps`` are run, so the cost is ``steps`` network
    evaluations whatever the strength, and strength 1.0 is the full schedule.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not (0.0 < strength <= 1.0):
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    total = max(steps, int(math.floor(steps / strength + 1e-9)))
    return total, steps


class Denoiser:
    """A diffusion model as a denoiser in VE coordinates.

    Subclasses implement :meth:`denoise` and :meth:`_full_sigmas`. ``sigma_min``
    and ``sigma_max`` bound the noise levels the model is valid for; sampling
    always ends at sigma 0 (the clean estimate).
    """

    sigma_min: float
    sigma_max: float

    def __init__(self, sigma_min: float, sigma_max: float):
        if not (sigma_max > 0 and sigma_max > sigma_min >= 0):
            raise ValueError(f"need 0 <= sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    # -- to implement -------------------------------------------------------
    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        raise NotImplementedError

    def _full_sigmas(self, total: int) -> torch.Tensor:
        """``total + 1`` decreasing sigmas of a full schedule, the last one 0 (or the model's floor)."""
        floor = self.sigma_min if self.sigma_min > 0 else self.sigma_max * 1e-3
        s = karras_sigmas(total, floor, self.sigma_max)
        return torch.cat([s, s.new_zeros(1)])

    # -- shared -------------------------------------------------------------
    def __call__(self, x: torch.Tensor, sigma, cond: Any = None) -> torch.Tensor:
        return self.denoise(x, _as_sigma(sigma, x), cond)

    def eps(self, x: torch.Tensor, sigma, cond: Any = None) -> torch.Tensor:
        """The noise estimate ``(x - D(x, sigma)) / sigma`` (sigma > 0); replayed from a CUDA graph when
        :meth:`use_cuda_graphs` (or :meth:`use_compile`) is on and no gradient is taken through it."""
        sigma = _as_sigma(sigma, x)
        if self.accel is not None and self.accel.usable(x) and not (torch.is_grad_enabled() and x.requires_grad):
            return self.accel.forward(x, sigma, cond, lambda: self._eps(x, sigma, cond))
        return self._eps(x, sigma, cond)

    def _eps(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return (x - self.denoise(x, sigma, cond)) / sigma

    def eps_and_vjp(self, x: torch.Tensor, sigma, cond: Any, g: torch.Tensor) -> tuple:
        """``eps(x)`` and its vector-Jacobian product ``g^T d eps / dx``, from one network evaluation.

        The reversible sampler's backward pass is made of these calls only.
        """
        sigma = _as_sigma(sigma, x)
        x = x.detach()

        def eager():
            return autograd_vjp(self._eps, x, sigma, cond, g)

        if self.accel is not None and self.accel.usable(x):
            return self.accel.vjp(x, sigma, cond, g, eager)
        return eager()

    #: How ``eps`` and its VJP are evaluated when not eagerly: CUDA graphs (:mod:`.cuda_graphs`) or
    #: ``torch.compile`` (:mod:`.compiled`); ``None``: eagerly.
    accel = None

    def use_cuda_graphs(self, on: bool = True) -> "Denoiser":
        """Replay ``eps`` and its VJP from CUDA graphs (on a CUDA device; elsewhere this changes nothing).

        Needs a :meth:`denoise` without host synchronisation (the built-in adapters qualify). Costs
        one capture per input shape and a memory pool of about one evaluation's activations each.
        """
        from .cuda_graphs import CudaGraphs

        self.accel = CudaGraphs(self._eps) if on else None
        return self

    def use_compile(self, on: bool = True) -> "Denoiser":
        """Evaluate ``eps`` and its VJP through ``torch.compile`` (inductor), falling back to eager evaluation,
        with a warning, where compiling fails (no C++ compiler, an unsupported op). Compiling costs minutes at
        the first call of each input shape; it pays off over many photos (docs/benchmarks.md)."""
        from .compiled import Compiled

        self.accel = Compiled(self._eps) if on else None
        return self

    def sigmas(self, steps: int, strength: float = 1.0) -> torch.Tensor:
        """Decreasing sigmas (float64, length ``steps + 1``) that :func:`edict.sample` walks.

        ``invert`` walks the same sequence reversed. ``strength`` < 1 starts from a
        lower noise level (partial inversion): the last ``steps`` steps of a
        schedule of ``steps / strength`` steps.
        """
        total, keep = truncate_schedule(steps, strength)
        full = self._full_sigmas(total).to(torch.float64)
        return full[-(keep + 1):].clone()

    #: The wrapped network, if any: ``device``, ``dtype`` and ``to`` follow it.
    network: Optional[torch.nn.Module] = None

    def to(self, device=None, dtype=None) -> "Denoiser":
        """Move/cast the network (e.g. ``dtype=torch.float64`` for exactness checks); returns self."""
        if self.network is not None:
            self.network.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return module_device_dtype(self.network)[0]

    @property
    def dtype(self) -> torch.dtype:
        return module_device_dtype(self.network)[1]


def _as_sigma(sigma, x: torch.Tensor) -> torch.Tensor:
    """Sigma as a 0-d tensor (or per-batch [B]) on x's device and dtype."""
    if not torch.is_tensor(sigma):
        sigma = torch.tensor(float(sigma))
    return sigma.to(device=x.device, dtype=x.dtype)


def bcast(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a 0-d or [B] sigma against an image batch."""
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


def module_device_dtype(module: Optional[torch.nn.Module]) -> tuple[torch.device, torch.dtype]:
    for p in module.parameters() if module is not None else ():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32
