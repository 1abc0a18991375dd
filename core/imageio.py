"""Reading and writing photos as [1,3,H,W] tensors in [0, 1], with errors a user can act on."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
MIN_SIDE = 16


class ImageError(ValueError):
    """A file that cannot be used as an input photo; the message says why and what to do."""


def load_image(path: str | os.PathLike, min_side: int = MIN_SIDE) -> torch.Tensor:
    """RGB float tensor [1,3,H,W] in [0, 1]. Grayscale is replicated, alpha composited on
    white, 16-bit and float images rescaled, so any ordinary photo file works."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    try:
        with Image.open(path) as im:
            im.load()
            arr = _to_rgb_array(im)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file PIL can read (use PNG, JPEG, TIFF, BMP or WebP)") from None
    except (OSError, SyntaxError) as e:
        raise ImageError(f"{path}: the image file is damaged or truncated ({e}); re-export it") from None
    h, w = arr.shape[:2]
    if min(h, w) < min_side:
        raise ImageError(f"{path}: image is {w}x{h}; at least {min_side}x{min_side} pixels are needed")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]


def _to_rgb_array(im) -> np.ndarray:
    """float32 HxWx3 in [0, 1] from any PIL mode."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        a = a / (65535.0 if a.max() > 255 or im.mode.startswith("I;16") else 255.0)
        a = np.repeat(a[..., None], 3, axis=2)
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = np.repeat(((a - a.min()) / max(a.max() - a.min(), 1e-12))[..., None], 3, axis=2)
    elif im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float64) / 255.0
        alpha = rgba[..., 3:4]
        a = rgba[..., :3] * alpha + (1.0 - alpha)  # composite on white
    else:
        a = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    return np.clip(a, 0.0, 1.0).astype(np.float32)


def save_image(img: torch.Tensor, path: str | os.PathLike, protect: tuple = ()) -> Path:
    """Write [1,3,H,W] (or [3,H,W]) in [0, 1] as an 8-bit PNG; never over a path in ``protect``."""
    from PIL import Image

    path = Path(path)
    if any(path.resolve() == Path(p).resolve() for p in protect):
        raise ImageError(f"refusing to overwrite the input {path}; choose another output folder")
    t = img.detach().float().cpu()
    t = t[0] if t.ndim == 4 else t
    arr = (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    Image.fromarray(arr).save(tmp, format="PNG")
    os.replace(tmp, path)  # atomic: an interrupted run never leaves a half-written output
    return path


def find_images(inputs) -> list[Path]:
    """Files given directly, plus the images inside given folders (sorted, not recursive)."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        else:
            out.append(p)
    return out
