"""Everything that touches ComfyUI itself, imported lazily so the pack (and its tests) load without it.

A ComfyUI MODEL is driven through ComfyUI's own sampling path: a
``CFGGuider`` with a custom ``KSAMPLER`` whose sampler function runs the core
(inversion or ascent) with the guider's denoiser ``D(x, sigma)``. ComfyUI thus
does what it always does for a sampler - loads the model to the GPU, encodes
the conditioning (SDXL's pooled/size conds included), applies patches, LoRAs,
ControlNets and hooks, cleans up - and the core sees the k-diffusion denoiser
it expects, in ComfyUI's sampler space (``process_latent_in`` already applied).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch

from ..core.autograd import autograd_safe
from ..core.models.base import Denoiser
from . import comfy_flow, comfy_grad

log = logging.getLogger("iqa_map")

SUPPORTED_MODELS = comfy_flow.SUPPORTED_MODELS


# -- progress, interrupt, preview ----------------------------------------------------------------

class Progress:
    """ComfyUI's progress bar with a preview, interrupt check and a log line per iteration.

    Outside ComfyUI it only logs, so node functions run the same in plain Python.
    V3 nodes report through ``comfy.utils.ProgressBar`` too: its hook (main.py, 0.3.64 and
    0.8.0) finds the running node, sends the progress and preview messages every front
    end understands and checks for an interrupt; V3's ``ComfyAPISync().execution.set_progress``
    only updates the newer progress state, without the legacy messages.
    """

    def __init__(self, total: int, label: str):
        self.total, self.label = max(int(total), 1), label
        try:
            import comfy.utils
            self.bar = comfy.utils.ProgressBar(self.total)
        except ImportError:
            self.bar = None

    def check_interrupt(self) -> None:
        try:
            import comfy.model_management
        except ImportError:
            return
        comfy.model_management.throw_exception_if_processing_interrupted()

    def __call__(self, info: dict) -> None:
        it = info["iteration"]
        log.info("IQA-MAP %s: iteration %d/%d score %.2f fidelity %.4f (%.1f s)", self.label, it, self.total,
                 info["score"], info["fidelity"], info["seconds"])
        if self.bar is not None:
            self.bar.update_absolute(it, self.total, preview(info.get("image")))
        self.check_interrupt()


def preview(img: Optional[torch.Tensor]):
    """A progress-bar preview (ComfyUI's ("JPEG", PIL image, size)) of a [1,3,H,W] image, or None."""
    if img is None:
        return None
    from PIL import Image
    arr = (img[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")
    return ("JPEG", Image.fromarray(arr), 512)


def default_device() -> torch.device:
    try:
        import comfy.model_management
        return comfy.model_management.get_torch_device()
    except ImportError:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def iqa_folder() -> Optional[str]:
    """The first ``models/iqa`` folder ComfyUI knows (registered in :func:`register_model_folder`)."""
    try:
        import folder_paths
    except ImportError:
        return None
    paths = folder_paths.get_folder_paths("iqa") if "iqa" in folder_paths.folder_names_and_paths else []
    return paths[0] if paths else None


def iqa_files() -> list[str]:
    try:
        import folder_paths
        return folder_paths.get_filename_list("iqa")
    except (ImportError, KeyError):
        return []


def iqa_file_path(name: str) -> Optional[str]:
    try:
        import folder_paths
        return folder_paths.get_full_path("iqa", name)
    except (ImportError, KeyError):  # outside ComfyUI, or no models/iqa registered: not found
        return None


def register_model_folder() -> None:
    """``models/iqa``: pyiqa checkpoints, local NR-IQA networks and fitted calibration constants."""
    try:
        import folder_paths
    except ImportError:
        return
    import os
    path = os.path.join(folder_paths.models_dir, "iqa")
    exts = {".pth", ".pt", ".pkl", ".safetensors", ".mat", ".json", ".ckpt"}
    if "iqa" in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path("iqa", path)
    else:
        folder_paths.folder_names_and_paths["iqa"] = ([path], exts)
    os.makedirs(path, exist_ok=True)


# -- ComfyUI MODEL -> core denoiser ------------------------------------------------------------------

def is_comfy_model(model: Any) -> bool:
    return hasattr(model, "get_model_object") and hasattr(model, "model")


def check_model_sampling(model) -> Any:
    """The model's ``model_sampling``; a clear error for models EDICT cannot run (video, unknown parameterisations)."""
    import comfy.model_sampling as ms_mod
    return comfy_flow.check_sampling(model, ms_mod)


def comfy_sigmas(model, scheduler: str, steps: int, strength: float) -> torch.Tensor:
    """ComfyUI's scheduler sigmas under KSampler's ``denoise`` convention (the core's ``strength``)."""
    import comfy.samplers

    from ..core.models.base import truncate_schedule
    ms = check_model_sampling(model)
    total, keep = truncate_schedule(steps, strength)
    sigmas = comfy.samplers.calculate_sigmas(ms, scheduler, total).to(torch.float64).cpu()[-(keep + 1):]
    if any(b >= a for a, b in zip(sigmas[:-1].tolist(), sigmas[1:].tolist())):
        raise ValueError(f"scheduler '{scheduler}' gives repeated noise levels for {steps} steps at strength "
                         f"{strength}; choose another scheduler (ddim_uniform, normal, karras) or more steps")
    return sigmas


def given_sigmas(model, sigmas) -> torch.Tensor:
    """A SIGMAS input (SDTurboScheduler, BasicScheduler, SplitSigmas...) checked as a schedule to invert along:
    1-D, at least two levels, strictly decreasing, none negative."""
    check_model_sampling(model)
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1 or sigmas.numel() < 2:
        shape = tuple(sigmas.shape) if isinstance(sigmas, torch.Tensor) else type(sigmas).__name__
        raise ValueError(f"DDIM Invert: sigmas must be a 1-D schedule of at least two noise levels (a scheduler "
                         f"node's SIGMAS), got {shape}")
    out = sigmas.detach().to(torch.float64).cpu()
    if not torch.isfinite(out).all() or (out < 0).any() or (out[1:] >= out[:-1]).any():
        raise ValueError(f"DDIM Invert: sigmas must decrease strictly and stay >= 0, got {out.tolist()}; connect "
                         f"a scheduler node's SIGMAS (the high half of Split Sigmas for a partial inversion)")
    return out


class ComfyDenoiser(Denoiser):
    """The guider's x0-denoiser inside a running ComfyUI sampler, as a core :class:`Denoiser`."""

    def __init__(self, model_k: Callable, extra_args: dict, model_sampling, network: torch.nn.Module):
        super().__init__(float(model_sampling.sigma_min), float(model_sampling.sigma_max))
        self.model_k, self.extra_args, self.network = model_k, extra_args, network

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        s = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        with comfy_grad.evaluation():
            out = self.model_k(x.float(), s.float(), **self.extra_args)
        return out.to(x.dtype)

    def to(self, device=None, dtype=None):  # ComfyUI owns placement
        return self


def run_in_comfy_sampler(model, latent: torch.Tensor, sigmas: torch.Tensor, fn: Callable, positive=None,
                         negative=None, cfg: float = 1.0, seed: int = 0, extra_models=()) -> torch.Tensor:
    """Run ``fn(denoiser, x) -> latent`` inside ComfyUI's sampling of ``model``.

    ``latent`` is a LATENT's raw ``samples``; ``fn`` gets it in sampler space and
    returns a sampler-space latent, which comes back as raw ``samples``.
    ``extra_models``: ModelPatchers ``fn`` uses too (priors, the VAE): ComfyUI loads them with the model
    (its additional models), so making room for one never unloads another.
    """
    import comfy.samplers

    from . import memory

    check_model_sampling(model)
    extra_models = list(extra_models)
    if extra_models and hasattr(model, "set_additional_models"):
        model = model.clone()
        model.set_additional_models("iqa_map", extra_models)
    if positive is None:
        raise ValueError("this MODEL needs conditioning: connect 'positive' (for example CLIP Text Encode "
                         "with an empty or descriptive prompt)")
    if cfg != 1.0 and negative is None:
        raise ValueError(f"cfg {cfg} needs a 'negative' conditioning; connect one or set cfg to 1.0")
    guider = comfy.samplers.CFGGuider(model)
    guider.inner_set_conds({"positive": positive} if negative is None else {"positive": positive, "negative": negative})
    guider.set_cfg(cfg)

    def sampler_function(model_k, x, sigmas_, extra_args=None, callback=None, disable=None, **_):
        # KSAMPLER hands over noise_scaling(sigmas[0], noise, latent): for flow models (1 - sigma) times the
        # latent. The core wants the clean latent in sampler space (process_latent_in applied): ComfyUI keeps it.
        clean = getattr(model_k, "latent_image", None)
        clean = x if clean is None else clean
        ms = guider.inner_model.model_sampling
        memory.complete(p for p in extra_models if isinstance(p.model, memory.Held))
        with torch.inference_mode(False):  # the ascent makes the model's weights autograd-safe itself
            den = ComfyDenoiser(model_k, dict(extra_args or {}), ms, guider.inner_model)
            out = fn(den, clean.detach().clone().to(x.dtype))
            # ...and divides the result by (1 - sigmas[-1]) afterwards (inverse_noise_scaling): pre-scale so a
            # schedule that stops above 0 returns the latent unchanged.
            return ms.noise_scaling(sigmas_[-1:], torch.zeros_like(out), out)

    sampler = comfy.samplers.KSAMPLER(sampler_function)
    with torch.inference_mode(False):
        latent = latent.detach().clone().float()
        return guider.sample(torch.zeros_like(latent), latent, sampler, sigmas.to(torch.float32), seed=seed,
                             disable_pbar=True)


# -- ComfyUI VAE -> core codec -----------------------------------------------------------------------

class ComfyVAECodec:
    """A ComfyUI VAE between images in [0, 1] (``[B,3,H,W]``) and sampler-space latents, differentiable.

    Decoding runs the VAE's own ``first_stage_model.decode`` (what ComfyUI's
    VAEDecode runs, without its ``no_grad`` batching) after the model's
    ``process_latent_out``, so the MAP objective sees what VAEDecode would show.
    """

    def __init__(self, vae, latent_format=None):
        import comfy.model_management
        self.vae = vae
        self.fmt = latent_format
        self.factor = int(vae.spacial_compression_decode())
        comfy.model_management.load_models_gpu([vae.patcher])
        self.net = vae.first_stage_model
        with torch.inference_mode(False):
            autograd_safe(self.net)

    def to_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Sampler-space latent -> the raw VAE latent a LATENT carries (the model's process_latent_out)."""
        return self.fmt.process_out(z) if self.fmt is not None else z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raw = self.to_raw(z).to(self.vae.device, self.vae.vae_dtype)
        img = self.net.decode(raw).float()
        if img.ndim == 5:  # video VAEs: one frame
            img = img[:, :, 0]
        return ((img + 1) / 2).clamp(0, 1).to(z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32)


def latent_format(model):
    return model.get_model_object("latent_format") if is_comfy_model(model) else None
