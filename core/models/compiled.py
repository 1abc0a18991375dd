"""``torch.compile`` for a denoiser's ``eps`` and its VJP, with a clean fall-back to eager evaluation.

Inductor fuses the network's elementwise work into fewer, larger kernels: on a CPU it made the
built-in model's evaluations several times faster (docs/benchmarks.md), at a start-up cost of
minutes per input shape. It is therefore opt-in (``load_model(compile=True)``, ``--compile``):
worth it for a folder of same-sized photos, not for one photo.

Compilation happens at the first call (forward) and first VJP (backward), and it can fail where
a platform lacks what inductor needs (a C++ compiler, Triton on a GPU). Any failure switches this
denoiser to eager evaluation for good, with one warning, and the call that failed is answered
eagerly, so a run never stops for it.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch

from ..autograd import autograd_vjp

log = logging.getLogger("iqa_map")


class Compiled:
    """The :class:`~.base.Denoiser` accelerator interface (``usable``, ``forward``, ``vjp``) over ``torch.compile``."""

    def __init__(self, eps_fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor], **compile_kw):
        self.eps_fn = torch.compile(eps_fn, dynamic=False, **compile_kw)
        self.failed: Optional[str] = None
        self.replays = 0  # calls answered by the compiled function (the CUDA-graph cache's counter)

    def usable(self, x: torch.Tensor) -> bool:
        return self.failed is None

    def _guard(self, call, eager):
        try:
            out = call()
        except Exception as e:  # noqa: BLE001 - compile errors come in many types; eager always works
            root = getattr(e, "inner_exception", None) or e.__cause__ or e  # dynamo wraps the backend's error
            self.failed = f"{type(root).__name__}: {(str(root).splitlines() or [''])[0]}"
            log.warning("IQA-MAP: torch.compile failed (%s); evaluating eagerly", self.failed)
            return eager()
        self.replays += 1
        return out

    def forward(self, x, sigma, cond, eager: Callable[[], torch.Tensor]) -> torch.Tensor:
        return self._guard(lambda: self.eps_fn(x, sigma, cond), eager)

    def vjp(self, x, sigma, cond, g, eager: Callable[[], tuple]) -> tuple:
        return self._guard(lambda: autograd_vjp(self.eps_fn, x, sigma, cond, g), eager)
