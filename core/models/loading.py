"""One place that turns a user's model choice into (denoiser, codec, cond), offline."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .codec import PixelCodec, VAECodec


@dataclass
class LoadedModel:
    denoiser: Any
    codec: Any
    cond: Any = None
    description: str = ""


# The precisions a user can name (command line, benchmarks) for a model's network.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load_model(spec: str = "builtin", device=None, dtype=torch.float32) -> LoadedModel:
    """``builtin``; ``bfcnn:<file.safetensors>`` (a bias-free CNN denoiser, noise std 0..100/255);
    a diffusers Stable Diffusion folder (with ``model_index.json``); or a single-file SD checkpoint.

    Nothing is downloaded: single-file checkpoints need their config in the local
    Hugging Face cache, otherwise convert them to a diffusers folder first.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if spec == "builtin":
        from .builtin import load_builtin

        return LoadedModel(load_builtin(device=device, dtype=dtype), PixelCodec(), None, "built-in pixel model")
    if spec.startswith("bfcnn:"):
        from .archs import load_bfcnn
        from .network import from_denoiser

        net = load_bfcnn(spec[6:], device=device, dtype=dtype)
        return LoadedModel(from_denoiser(net, 0, 100 / 255, residual=True), PixelCodec(), None, f"BF-CNN {spec[6:]}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model '{spec}' not found: use 'builtin', 'bfcnn:<file>', a diffusers "
                                "Stable Diffusion folder or a single-file checkpoint")
    return _load_sd(path, device, dtype)


def _load_sd(path: Path, device, dtype) -> LoadedModel:
    from diffusers import StableDiffusionPipeline

    from .diffusers_adapter import from_diffusers

    try:
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ValueError(f"{path} is a folder but not a diffusers pipeline (no model_index.json)")
            pipe = StableDiffusionPipeline.from_pretrained(path, **_dtype_kwarg(dtype), local_files_only=True,
                                                           safety_checker=None, requires_safety_checker=False)
        else:
            pipe = StableDiffusionPipeline.from_single_file(str(path), **_dtype_kwarg(dtype), local_files_only=True)
    except (OSError, ValueError, EnvironmentError) as e:
        raise RuntimeError(f"could not load Stable Diffusion model from {path} offline: {e}") from None
    pipe.to(device)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    with torch.no_grad():  # an empty prompt: enhancement is unconditional, guidance 1
        ids = pipe.tokenizer([""], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             return_tensors="pt").input_ids.to(device)
        emb = pipe.text_encoder(ids)[0]
    return LoadedModel(from_diffusers(pipe.unet, pipe.scheduler), VAECodec(pipe.vae), emb, f"Stable Diffusion {path}")


def _dtype_kwarg(dtype) -> dict:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (the old name now warns); releases before the rename
    know only the old name, so ask the installed one."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (arrived with the rename)
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}
