"""Local learned NR-IQA networks loaded from safetensors with a small architecture definition.

An architecture is registered in :data:`ARCHS` with its network class, the
preprocessing the weights were trained with, and the direction of its output.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import Calibration, Prior


class CNNIQANet(nn.Module):
    """CNNIQA (Kang et al., CVPR 2014), layout of the public ``lidq92/CNNIQA`` model.

    Input: grayscale [0,1] image. It is cut into non-overlapping 32x32 patches
    (``unfold``, so the cut is differentiable; the remainder at the right/bottom
    is dropped like the reference code), each patch is locally normalised with a
    3x3 box mean/std, ``(p - mu) / (std + 1)`` with edge-replicated borders (the
    reference uses scipy ``boundary='symm'``, identical for a 3x3 window), scored
    by conv 7x7 -> global max+min pool -> 3 FC layers; the image score is the mean
    over patches.
    """

    patch = 32

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 50, 7)
        self.fc1, self.fc2, self.fc3 = nn.Linear(100, 800), nn.Linear(800, 800), nn.Linear(800, 1)

    @staticmethod
    def local_normalise(p: torch.Tensor, c: float = 1.0) -> torch.Tensor:
        padded = F.pad(p, (1, 1, 1, 1), mode="replicate")
        mu = F.avg_pool2d(padded, 3, stride=1)
        var = F.avg_pool2d(padded * padded, 3, stride=1) - mu * mu
        return (p - mu) / (var.clamp_min(1e-10).sqrt() + c)  # clamp: finite gradient on flat patches

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        b, _, h, w = img.shape
        if min(h, w) < self.patch:
            raise ValueError(f"CNNIQA needs images of at least {self.patch}x{self.patch}, got {h}x{w}")
        gray = (img * img.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        patches = F.unfold(gray, self.patch, stride=self.patch)  # [B, 32*32, N]
        n = patches.shape[-1]
        patches = patches.transpose(1, 2).reshape(b * n, 1, self.patch, self.patch)
        h = self.conv1(self.local_normalise(patches))
        feat = torch.cat([h.amax(dim=(2, 3)), h.amin(dim=(2, 3))], dim=1)
        q = self.fc3(F.relu(self.fc2(F.relu(self.fc1(feat)))))
        return q.view(b, n).mean(dim=1)


@dataclass(frozen=True)
class Arch:
    net: type[nn.Module]
    lower_better: bool
    native_range: tuple[float | None, float | None]
    doc: str


ARCHS: dict[str, Arch] = {
    "cnniqa": Arch(CNNIQANet, lower_better=True, native_range=(0.0, 100.0),
                   doc="CNNIQA trained on LIVE, predicts DMOS (higher = worse)"),
}


class LocalPrior(Prior):
    """A registered architecture with weights from a safetensors file."""

    def __init__(self, path: str | Path, arch: str = "cnniqa", device=None, calibration: Calibration | None = None,
                 lower_better: bool | None = None, name: str | None = None) -> None:
        super().__init__(calibration)
        if arch not in ARCHS:
            raise ValueError(f"unknown local architecture '{arch}'; available: {sorted(ARCHS)}")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} not found (expected a .safetensors file for '{arch}')")
        from safetensors.torch import load_file
        spec = ARCHS[arch]
        with torch.inference_mode(False):
            self.net = spec.net()
            try:
                self.net.load_state_dict(load_file(str(path)))
            except RuntimeError as e:
                raise ValueError(f"{path} does not hold '{arch}' weights: {e}") from e
        self.net.requires_grad_(False).eval().to(device or "cpu")
        self.name = name or f"{arch}:{path.stem}"
        self.lower_better = spec.lower_better if lower_better is None else lower_better
        self.native_range = spec.native_range
        self.min_size = getattr(spec.net, "patch", 0)

    def _native(self, img: torch.Tensor) -> torch.Tensor:
        p = next(self.net.parameters())
        return self.net(img.to(p))
