"""Random training crops from a folder of clean photos (deterministic given a generator)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import List

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(folder) -> List[Path]:
    d = Path(folder)
    if not d.is_dir():
        raise FileNotFoundError(f"training data folder not found: {d}")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {d}")
    return files


def load_images(folder, min_side: int) -> List[torch.Tensor]:
    """Every photo in ``folder`` as a uint8 ``[3, H, W]`` tensor (kept in memory: 180 photos ~ 300 MB)."""
    from PIL import Image

    images = []
    for p in list_images(folder):
        with Image.open(p) as im:
            t = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
        if min(t.shape[1:]) < min_side:
            raise ValueError(f"{p} is {t.shape[2]}x{t.shape[1]}; training crops need at least {min_side} px a side")
        images.append(t)
    return images


class CropSampler:
    """Random ``crop x crop`` patches in ``[-1, 1]``: random photo, log-uniform rescale, dihedral flip.

    The rescale picks a region of ``crop / s`` pixels (``s`` log-uniform in
    ``[scale_min, 1]``) and resizes it to ``crop`` with an antialiased filter:
    downscaling shows the model textures at other scales and averages away
    compression artefacts in the source photos.
    """

    def __init__(self, images: List[torch.Tensor], crop: int, scale_min: float):
        if not 0 < scale_min <= 1:
            raise ValueError(f"scale_min must be in (0, 1], got {scale_min}")
        self.images, self.crop, self.scale_min = images, int(crop), float(scale_min)

    def sample(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        out = torch.empty(batch, 3, self.crop, self.crop)
        for b in range(batch):
            u = torch.rand(5, generator=gen).tolist()
            img = self.images[int(torch.randint(len(self.images), (1,), generator=gen))]
            _, h, w = img.shape
            s = math.exp(math.log(self.scale_min) * u[0])
            r = min(h, w, max(self.crop, round(self.crop / s)))
            top, left = int(u[1] * (h - r + 1)), int(u[2] * (w - r + 1))
            patch = img[:, top:top + r, left:left + r].float().div_(127.5).sub_(1.0)
            if r != self.crop:
                patch = F.interpolate(patch[None], size=(self.crop, self.crop), mode="bicubic",
                                      antialias=True, align_corners=False)[0].clamp_(-1, 1)
            k = int(u[3] * 4)
            patch = torch.rot90(patch, k, dims=(1, 2))
            if u[4] < 0.5:
                patch = patch.flip(2)
            out[b] = patch
        return out
