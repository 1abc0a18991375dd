"""One place that turns a user's model choice into (denoiser, codec, cond), offline."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .codec import PixelCodec, VAECodec
from .flow_diffusers import FLOW_PIPELINES


@dataclass
class LoadedModel:
    denoiser: Any
    codec: Any
    cond: Any = None
    description: str = ""


# The precisions a user can name (command line, benchmarks) for a model's network.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load_model(spec: str = "builtin", device=None, dtype=torch.float32, config=None, prompt: str = "",
               cuda_graphs: bool = True, compile: bool = False) -> LoadedModel:
    """``builtin``; ``bfcnn:<file.safetensors>`` (a bias-free CNN denoiser, noise std 0..100/255);
    ``denoiser:<file>`` (a Gaussian denoiser spandrel reads: DnCNN, DRUNet, SCUNet, FFDNet, in its trained range);
    a diffusers Stable Diffusion 1.x/2.x, Flux or SD3 folder (with ``model_index.json``); or a single-file
    SD 1.x/2.x checkpoint.

    Nothing is downloaded. A single-file checkpoint holds weights only: its
    component configs (and tokenizer) come from ``config``, a local diffusers
    folder of the same architecture (configs without weights suffice), or else
    from the Hugging Face cache. ``prompt`` describes the photo for text-conditioned
    models (empty by default, as enhancement is unconditional; guidance stays 1,
    where EDICT's inversion is exact). ``cuda_graphs``: on a CUDA device, replay the
    network's evaluations from CUDA graphs (:mod:`.cuda_graphs`: far fewer kernel
    launches at batch 1, same values); ignored elsewhere. ``compile``: evaluate the
    network through ``torch.compile`` instead (minutes of compiling per input shape,
    then faster calls: for many photos of one size; falls back to eager where it fails).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loaded = _load(spec, device, dtype, config, prompt)
    if compile:
        loaded.denoiser.use_compile()
    elif cuda_graphs and device.type == "cuda":
        loaded.denoiser.use_cuda_graphs()
    return loaded


def _load(spec: str, device: torch.device, dtype, config, prompt: str) -> LoadedModel:
    if spec == "builtin":
        from .builtin import load_builtin

        _no_prompt(spec, prompt)
        return LoadedModel(load_builtin(device=device, dtype=dtype), PixelCodec(), None, "built-in pixel model")
    if spec.startswith("bfcnn:"):
        from .archs import load_bfcnn
        from .network import from_denoiser

        _no_prompt(spec, prompt)
        net = load_bfcnn(spec[6:], device=device, dtype=dtype)
        return LoadedModel(from_denoiser(net, 0, 100 / 255, residual=True), PixelCodec(), None, f"BF-CNN {spec[6:]}")
    if spec.startswith("denoiser:"):
        from .spandrel_denoiser import load_denoiser_file

        _no_prompt(spec, prompt)
        if not Path(spec[9:]).expanduser().is_file():
            raise FileNotFoundError(f"denoiser file '{spec[9:]}' not found")
        den, arch = load_denoiser_file(str(Path(spec[9:]).expanduser()), device=device, dtype=dtype)
        return LoadedModel(den, PixelCodec(), None, f"{arch} denoiser {spec[9:]}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model '{spec}' not found: use 'builtin', 'bfcnn:<file>', 'denoiser:<file>', a diffusers "
                                "Stable Diffusion, Flux or SD3 folder or a single-file checkpoint")
    if config is not None and path.is_dir():
        raise ValueError("a model config is for single-file checkpoints; a diffusers folder carries its own")
    name = check_pipeline_folder(path) if path.is_dir() else None
    if name in FLOW_PIPELINES:
        from .flow_loading import load_flow_pipeline

        return LoadedModel(*load_flow_pipeline(path, name, device, dtype, prompt, _dtype_kwarg(dtype)))
    return _load_sd(path, device, dtype, config, prompt)


def _no_prompt(spec: str, prompt: str) -> None:
    if prompt:
        raise ValueError(f"model '{spec.split(':')[0]}' is not text-conditioned: "
                         "a prompt needs a Stable Diffusion model")


# Key prefixes of single-file (original, "LDM") Stable Diffusion checkpoints.
_LDM_UNET, _LDM_VAE, _SDXL_TEXT2 = "model.diffusion_model.", "first_stage_model.", "conditioner.embedders.1."


_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def check_single_file(path: Path) -> None:
    """Refuse, before any loading, a file that is not an SD 1.x/2.x checkpoint (reads the safetensors header only)."""
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        return  # pickled .ckpt: only loading tells
    if path.suffix.lower() != ".safetensors":
        kind = f"a {path.suffix} file" if path.suffix else "no file suffix"
        raise ValueError(f"{path} is not a model file ({kind}): --model takes "
                         "'builtin', 'bfcnn:<file>', a diffusers Stable Diffusion 1.x/2.x folder or a single-file "
                         "SD 1.x/2.x checkpoint (.safetensors or .ckpt)")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as e:  # noqa: BLE001 - any header error means the same to the user
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None
    if any(k.startswith(_SDXL_TEXT2) for k in keys):
        raise ValueError(f"{path} is an SDXL checkpoint: the command line and library load SD 1.x/2.x; "
                         "use the ComfyUI nodes for SDXL")
    missing = [p for p in (_LDM_UNET, _LDM_VAE) if not any(k.startswith(p) for k in keys)]
    if missing:
        raise ValueError(f"{path} is not a single-file Stable Diffusion checkpoint (no '{missing[0]}*' weights); "
                         "give a full SD 1.x/2.x checkpoint (UNet, VAE and text encoder in one file) "
                         "or a diffusers folder")


# Pipelines whose components are SD 1.x/2.x's (a 4-channel text-conditioned UNet, the KL VAE, one CLIP encoder).
_SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")


def check_pipeline_folder(path: Path) -> str:
    """The pipeline class a folder's ``model_index.json`` names, if the library loads it; a clear error if not."""
    index = path / "model_index.json"
    if not index.is_file():
        raise ValueError(f"{path} is a folder but not a diffusers pipeline (no model_index.json)")
    try:
        name = json.loads(index.read_text()).get("_class_name", "")
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{index} is not a readable diffusers model index ({e})") from None
    if name not in _SD_PIPELINES and name not in FLOW_PIPELINES:
        what = "an SDXL pipeline" if "XL" in name else f"a {name or 'unnamed'} pipeline"
        raise ValueError(f"{path} is {what}: the command line and library load Stable Diffusion 1.x/2.x, Flux.1 "
                         f"and SD3 image pipelines ({', '.join(_SD_PIPELINES + tuple(FLOW_PIPELINES))}); "
                         "use the ComfyUI nodes for other models")
    return name


def _load_sd(path: Path, device, dtype, config=None, prompt: str = "") -> LoadedModel:
    try:
        from diffusers import StableDiffusionPipeline
    except ImportError as e:  # a ComfyUI install (requirements.txt) has no diffusers: the nodes do not need it
        raise ImportError(f"Stable Diffusion models on the command line need diffusers ({e}): pip install "
                          "'diffusers>=0.30' (pip install iqa-map brings it; ComfyUI's nodes do not need it)") from None
    from diffusers.utils import logging as dlog

    from ..priors.weights import hf_offline
    from .diffusers_adapter import from_diffusers

    if path.is_dir():
        check_pipeline_folder(path)
    else:
        check_single_file(path)
        if config is not None and not (Path(config).expanduser() / "model_index.json").is_file():
            raise ValueError(f"model config {config} is not a diffusers folder (no model_index.json)")
    kw = {"config": str(Path(config).expanduser())} if config is not None else {}
    verbosity = dlog.get_verbosity()
    dlog.set_verbosity_error()  # its "Attempting to download ..." is untrue offline; failures are reported below
    try:
        with hf_offline():  # never wait on the network: everything must be local
            if path.is_dir():
                pipe = StableDiffusionPipeline.from_pretrained(path, **_dtype_kwarg(dtype), local_files_only=True,
                                                               safety_checker=None, requires_safety_checker=False)
            else:
                pipe = StableDiffusionPipeline.from_single_file(str(path), **_dtype_kwarg(dtype), local_files_only=True,
                                                                safety_checker=None, requires_safety_checker=False,
                                                                **kw)
    except (OSError, ValueError, EnvironmentError) as e:
        if not path.is_dir() and config is None and any(w in str(e) for w in ("Hub", "cache", "snapshot")):
            e = "its configs are not in the local Hugging Face cache"  # diffusers' message is about the Hub
        hint = ("" if path.is_dir() or config is not None else
                "; a single-file checkpoint needs its architecture's configs: give a local diffusers folder of the "
                "same architecture (its configs and tokenizer suffice, e.g. stable-diffusion-v1-5 without the "
                "weights) with --model-config, or config= in the library")
        raise RuntimeError(f"could not load Stable Diffusion model from {path} offline: {e}{hint}") from None
    finally:
        dlog.set_verbosity(verbosity)
    pipe.to(device)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    with torch.no_grad():  # guidance 1: the prompt's embedding only (empty by default: unconditional)
        ids = pipe.tokenizer([prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(device)
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
