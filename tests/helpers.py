"""Shared test helpers (imported as ``helpers``: tests/ is on pytest's pythonpath)."""
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
BFCNN = DATA / "weights" / "bfcnn_color_bsd300_sigma0-100.safetensors"


def need_shared(*paths: Path) -> None:
    for p in paths or (DATA,):
        if not p.exists():
            pytest.skip(f"shared test data not found at {p} (expected ../shared beside the repository)")


def dev_photo(name: str = "101085.png", crop: int = 64, dtype=torch.float64) -> torch.Tensor:
    """A real CBSD68 photo as [1,3,crop,crop] in [-1, 1]."""
    from PIL import Image

    path = DATA / "images" / "dev" / name
    need_shared(path)
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    h, w = t.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    return (t[..., top:top + crop, left:left + crop] * 2 - 1).to(dtype).contiguous()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def photo01(crop: int = 96) -> torch.Tensor:
    """:func:`dev_photo` as [1,3,crop,crop] float32 in [0, 1], as priors take it."""
    return (dev_photo(crop=crop, dtype=torch.float32) + 1) / 2
