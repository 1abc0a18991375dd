"""Files of a fine-tuned upscaler: the merged model (what spandrel and so ComfyUI load as the base's
architecture and scale) and the LoRA alone (small), each with its metadata."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..io.files import atomic_path
from .lora import LoraSpec, add_lora, load_lora_state, merged_state_dict

MODEL_SUFFIXES = (".safetensors", ".pth")
LORA_FORMAT = "iqa-map-sr-lora"


def _meta(metadata: dict | None) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in (metadata or {}).items()}


def _write(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file(tensors, str(tmp), metadata=metadata)
        else:  # .pth: a plain state dict (what spandrel reads), the metadata beside it under its own key
            torch.save(tensors, tmp)
            path.with_suffix(path.suffix + ".json").write_text(json.dumps(metadata, indent=2))
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors 0.8 writes 0600: give what any new file gets


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_upscaler(state: dict, path, metadata: dict | None = None, overwrite: bool = False) -> Path:
    """Write a merged SR state dict as ``.safetensors`` (metadata inside) or ``.pth`` (metadata in
    ``<file>.json`` beside it); the file is checked to load through spandrel as the same architecture."""
    path = Path(path)
    if path.suffix not in MODEL_SUFFIXES:
        raise ValueError(f"save the upscaler as {' or '.join(MODEL_SUFFIXES)}; got {path.name}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another name or allow overwriting")
    _write(state, path, _meta(metadata))
    return path


def read_metadata(path) -> dict:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            raw = f.metadata() or {}
    else:
        side = path.with_suffix(path.suffix + ".json")
        raw = json.loads(side.read_text()) if side.is_file() else {}
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def save_lora(state: dict, spec: LoraSpec, path, metadata: dict | None = None, overwrite: bool = False) -> Path:
    """The adapters alone as ``.safetensors``, with the spec (rank, alpha, targets) needed to apply them."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save the LoRA as .safetensors; got {path.name}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another name or allow overwriting")
    meta = {**(metadata or {}), "format": LORA_FORMAT, "rank": spec.rank, "alpha": spec.alpha,
            "targets": spec.targets, "include": spec.include, "exclude": spec.exclude}
    _write(state, path, _meta(meta))
    return path


def apply_lora(base, lora_path):
    """A new spandrel descriptor: ``base`` (a descriptor) with the LoRA file folded into its weights."""
    from safetensors.torch import load_file

    from .model import load_upscaler, state_sha256

    meta = read_metadata(lora_path)
    if meta.get("format") != LORA_FORMAT:
        raise ValueError(f"{lora_path} is not an IQA-MAP upscaler LoRA (no '{LORA_FORMAT}' metadata)")
    want = meta.get("base_state_sha256")
    if want and want != state_sha256(base.model.state_dict()):
        raise ValueError(f"{lora_path} was trained on another base model (hash {str(want)[:12]}...); apply it "
                         "to the model it was trained on")
    spec = LoraSpec(rank=int(meta["rank"]), alpha=meta.get("alpha"), targets=meta.get("targets", "conv+linear"),
                    include=meta.get("include"), exclude=meta.get("exclude"))
    model = add_lora(base.model, spec)
    load_lora_state(model, load_file(str(lora_path)))
    return load_upscaler(merged_state_dict(model))
