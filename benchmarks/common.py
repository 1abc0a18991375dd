"""What every benchmark shares: the dev photos and their centre crops."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def dev_files(limit: int | None = None) -> list[Path]:
    """The CBSD68 dev photos (sorted), the first ``limit`` of them; exits with a message if absent."""
    files = sorted((DATA / "images" / "dev").glob("*.png"))[:limit]
    if not files:
        sys.exit(f"no dev images under {DATA} (expected ../shared/data beside the repository)")
    return files


def centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` crop (the whole side if the photo is smaller)."""
    h, w = img.shape[-2:]
    ch, cw = min(size, h), min(size, w)
    return img[..., (h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw].contiguous()
