"""Random weights for models built with ComfyUI's classes (shared by the in-process scripts beside this file).

ComfyUI's ops leave weights uninitialised (they come from files): vectors get 1 (weights and scales, the names in
``ones``) or 0 (biases); matrices get random values scaled to keep signals O(1); a position table kept as a buffer
(SD3's ``pos_embed``, read from the checkpoint) gets small random values.
"""
import math

import torch


def init_(module, generator: torch.Generator, ones=("weight", "scale")):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim <= 1:
                p.fill_(1.0 if name.endswith(tuple(ones)) else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p[0].numel()))
        for name, b in module.named_buffers():
            if name.endswith("pos_embed"):
                b.copy_(torch.randn(b.shape, generator=generator) * 0.1)
    return module
