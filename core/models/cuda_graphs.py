"""CUDA graphs for a denoiser's two hot calls: ``eps(x, sigma)`` and ``eps`` with its vector-Jacobian product.

At batch 1 a UNet evaluation is launch-bound: on an H100, SD 1.5's UNet spends
more time issuing its ~1,000 kernels than running them (fp16 was no faster than
fp32 per call). A CUDA graph records the kernels once and replays them with a
single launch. The MAP ascent calls the network with the same shapes thousands
of times, so each input signature (shapes, dtypes, the conditioning object) is
captured once and replayed from then on.

Two pure functions are graphed, never an autograd node that outlives the call:

- ``forward(x, sigma) -> eps`` for sampling and inversion (no grad);
- ``vjp(x, sigma, g) -> (eps, g^T d eps/dx)``, forward and backward in one graph,
  for the reversible sampler's backward pass.

Each replay copies its inputs into static buffers and returns *clones* of the
outputs, so no result aliases graph memory and a later replay cannot change an
earlier result. Anything else (gradients through ``eps`` with plain autograd,
other devices, a capture that fails) runs the ordinary eager path, with the same
values up to floating-point reassociation of the same kernels.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Callable, Optional

import torch

log = logging.getLogger("iqa_map")

# One graph pair per input signature; tiled runs see a few shapes (full tiles, edge tiles). Each entry
# keeps a memory pool of about one evaluation's activations, so the cache stays small.
MAX_ENTRIES = 4
WARMUP = 3


def _capture(fn: Callable[[], Any], pool) -> tuple:
    """Record ``fn()`` as a CUDA graph after warm-up calls on a side stream (cuDNN autotuning, lazy init)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = fn()
    return graph, out


class _Entry:
    """Static buffers and graphs for one signature; the graphs are captured on first use."""

    def __init__(self, eps_fn, x: torch.Tensor, sigma: torch.Tensor, keep: Any):
        self.eps_fn, self.keep = eps_fn, keep  # ``keep``: the conditioning, held so its memory stays ours
        self.x = torch.zeros_like(x, memory_format=torch.contiguous_format)
        self.sigma = torch.zeros_like(sigma)
        self.g = torch.zeros_like(self.x)
        self.pool = torch.cuda.graph_pool_handle()
        self.fwd = self.bwd = None

    @torch.no_grad()
    def forward(self, x, sigma):
        self.x.copy_(x)
        self.sigma.copy_(sigma)
        if self.fwd is None:
            self.fwd = _capture(lambda: self.eps_fn(self.x, self.sigma), self.pool)
        graph, out = self.fwd
        graph.replay()
        return out.clone()

    def vjp(self, x, sigma, g):
        if self.bwd is None:
            leaf = self.x.detach().requires_grad_(True)  # shares storage with the static input

            def run():
                with torch.enable_grad():
                    e = self.eps_fn(leaf, self.sigma)
                    (v,) = torch.autograd.grad(e, leaf, self.g)
                return e.detach(), v

            with torch.no_grad():
                self.x.copy_(x)
                self.sigma.copy_(sigma)
                self.g.copy_(g)
            self.bwd = _capture(run, self.pool)
        with torch.no_grad():
            self.x.copy_(x)
            self.sigma.copy_(sigma)
            self.g.copy_(g)
        graph, (e, v) = self.bwd
        graph.replay()
        return e.clone(), v.clone()


class CudaGraphs:
    """Graph cache for ``eps_fn(x, sigma, cond)`` of one denoiser.

    ``eps_fn`` must be capturable: device-side work only (no ``.item()``, no host
    copies), the same kernels for the same signature. A failed capture switches
    the cache off with a log line; callers then use the eager path.
    """

    def __init__(self, eps_fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]):
        self.eps_fn = eps_fn
        self.entries: "OrderedDict[tuple, _Entry]" = OrderedDict()
        self.failed: Optional[str] = None
        self.replays = 0

    def usable(self, x: torch.Tensor) -> bool:
        return self.failed is None and x.is_cuda and not torch.cuda.is_current_stream_capturing()

    def _entry(self, x, sigma, cond) -> _Entry:
        key = (tuple(x.shape), x.dtype, x.device, tuple(sigma.shape), sigma.dtype, id(cond))
        entry = self.entries.get(key)
        if entry is not None and entry.keep is cond:
            self.entries.move_to_end(key)
            return entry
        while len(self.entries) >= MAX_ENTRIES:
            self.entries.popitem(last=False)
        entry = self.entries[key] = _Entry(lambda a, s: self.eps_fn(a, s, cond), x, sigma, cond)
        return entry

    def _guard(self, call, eager):
        try:
            out = call()
        except Exception as e:  # noqa: BLE001 - any capture failure falls back to eager, once, loudly
            self.failed = f"{type(e).__name__}: {e}"
            self.entries.clear()
            log.warning("IQA-MAP: CUDA graph capture failed (%s); using eager evaluation", self.failed)
            return eager()
        self.replays += 1
        return out

    def forward(self, x, sigma, cond, eager: Callable[[], torch.Tensor]) -> torch.Tensor:
        return self._guard(lambda: self._entry(x, sigma, cond).forward(x, sigma), eager)

    def vjp(self, x, sigma, cond, g, eager: Callable[[], tuple]) -> tuple:
        return self._guard(lambda: self._entry(x, sigma, cond).vjp(x, sigma, g), eager)
