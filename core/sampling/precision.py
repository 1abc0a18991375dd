"""float64 where the device has it: Apple's MPS backend has none.

The latent pair of EDICT inversion, DDIM inversion and tile blending are kept in float64 so the
reconstruction is limited by the network's own determinism rather than by rounding (edict._state). MPS
cannot hold a float64 tensor at all ("Cannot convert a MPS Tensor to float64 dtype"): there the work falls
back to float32, which runs, with a warning once per kind of work that inversion is then only as exact as
float32 rounding allows (measured on the CPU with float32 state: docs/install.md, Apple silicon).
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger("iqa_map")
_warned: set = set()


def has_float64(device) -> bool:
    return torch.device(device).type != "mps"


def wide_dtype(device, what: str = "the latent pair") -> torch.dtype:
    """float64 on ``device`` if it has it, else float32 (MPS), warning once per ``what``."""
    if has_float64(device):
        return torch.float64
    if what not in _warned:
        _warned.add(what)
        log.warning("IQA-MAP: %s runs in float32 on %s (no float64 there): inversion is exact only to float32 "
                    "rounding; run on the CPU (float64) where exactness matters", what, torch.device(device).type)
    return torch.float32
