"""Super-resolution models through spandrel (the loader behind ComfyUI's Load Upscale Model).

Any single-image SR architecture spandrel reads is a base: its descriptor gives the
module, the scale and the size rules. Inference is tiled so that a large photo needs
the memory of one tile; the tiles overlap and are blended with a linear ramp.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..tiles import Canvas, linear_ramp, starts


class UpscalerError(ValueError):
    """A file that is not a usable super-resolution model; the message says what to do."""


def load_upscaler(source, device=None):
    """A spandrel ``ImageModelDescriptor`` of an SR model: from a file (``.pth``, ``.pt``, ``.ckpt``,
    ``.safetensors``), a state dict, or a descriptor (returned as is), in eval mode, without gradients."""
    import spandrel

    if hasattr(source, "model") and hasattr(source, "scale"):
        desc = source
    else:
        loader = spandrel.ModelLoader(device=torch.device(device) if device else None)
        try:
            if isinstance(source, dict):
                desc = loader.load_from_state_dict(source)
            else:
                path = Path(source)
                if not path.is_file():
                    raise UpscalerError(f"upscaler file not found: {path}")
                desc = loader.load_from_file(path)
        except spandrel.UnsupportedModelError:
            raise UpscalerError(f"{source} is not a model architecture spandrel knows (the loader ComfyUI uses "
                                "for Load Upscale Model): give an upscaler such as ESRGAN, SwinIR, DCTLSA or "
                                "Swift-SRGAN") from None
        except UpscalerError:
            raise
        except Exception as e:  # noqa: BLE001 - a broken file fails in many ways inside torch.load/safetensors
            raise UpscalerError(f"cannot read {source} as a model file ({type(e).__name__}: {e}); is it a "
                                "complete .pth/.safetensors upscaler?") from None
    if not isinstance(desc, spandrel.ImageModelDescriptor) or desc.purpose != "SR":
        raise UpscalerError(f"{_arch(desc)} is a {getattr(desc, 'purpose', 'non-image')} model, not a "
                            "super-resolution model (an upscaler) with one image in and one out")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise UpscalerError(f"{_arch(desc)} takes {desc.input_channels} and gives {desc.output_channels} "
                            "channels; only RGB upscalers are supported")
    desc.model.eval().requires_grad_(False)
    return desc


def _arch(desc) -> str:
    a = getattr(desc, "architecture", None)
    return getattr(a, "name", None) or getattr(a, "id", None) or type(desc).__name__


def describe(desc) -> str:
    return f"{_arch(desc)} x{desc.scale}"


def upscale(model, img: torch.Tensor, tile: int = 512, overlap: int = 32, callback=None,
            on_oom=None) -> torch.Tensor:
    """``img`` [B,3,h,w] in [0,1] -> [B,3,h*s,w*s], clamped; inputs larger than ``tile`` pixels a side go in
    overlapping tiles (``tile=0``: never). ``model`` is a descriptor (its scale) or ``(module, scale)``.
    Gradients flow when enabled (training crops are never tiled). An out-of-memory error halves the tile and
    runs again (:func:`..runtime.halving_retry`; ``on_oom`` frees memory first, e.g. ComfyUI's soft_empty_cache)."""
    from ..runtime import halving_retry

    first = tile or max(img.shape[-2:])
    return halving_retry(lambda t: _upscale(model, img, 0 if t >= max(img.shape[-2:]) and not tile else t,
                                            overlap if overlap * 2 < t or t == tile else t // 4, callback),
                         first, on_oom=on_oom, what="upscaling")


def _upscale(model, img: torch.Tensor, tile: int, overlap: int, callback=None) -> torch.Tensor:
    module, scale = (model.model, model.scale) if hasattr(model, "model") else model
    minimum = getattr(getattr(model, "size_requirements", None), "minimum", 0) or 0
    h, w = img.shape[-2:]
    if min(h, w) < minimum:
        raise ValueError(f"{describe(model)} needs inputs of at least {minimum} pixels a side; got {w}x{h}")
    dev = next(module.parameters()).device
    x = img.to(dev)
    if not tile or (h <= tile and w <= tile):
        return module(x).clamp(0, 1).to(img.device)
    if overlap * 2 >= tile:
        raise ValueError(f"tile overlap {overlap} must be under half the tile {tile}")
    canvas = Canvas(img.shape[0], 3, h * scale, w * scale, torch.get_default_dtype(), img.device)
    ys, xs = starts(h, tile, tile - overlap), starts(w, tile, tile - overlap)
    done, total = 0, len(ys) * len(xs)
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            th, tw = min(tile, h), min(tile, w)
            y = module(x[..., y0:y0 + th, x0:x0 + tw]).clamp(0, 1).to(img.device)
            wy = linear_ramp(th * scale, overlap * scale, i == 0, i == len(ys) - 1, img.device)
            wx = linear_ramp(tw * scale, overlap * scale, j == 0, j == len(xs) - 1, img.device)
            canvas.add(y0 * scale, x0 * scale, y, (wy[:, None] * wx[None, :])[None, None])
            done += 1
            if callback is not None:
                callback(done, total)
    return canvas.result(floor=1e-8)


def state_sha256(state: dict) -> str:
    """Hash of a state dict's tensors (names, shapes and bytes), for a base given as a loaded model."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
