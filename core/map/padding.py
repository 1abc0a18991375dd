"""The one padding helper: pad an image to a size multiple so a network or codec accepts it."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``x`` [..., H, W] padded at the bottom and right to multiples of ``multiple`` (reflect; replicate when
    the pad is not smaller than the side, where reflect is undefined), and the original ``(H, W)`` to crop back."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    return x, (h, w)
