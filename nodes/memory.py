"""ComfyUI's model management for the networks the pack loads itself (priors, upscalers under training).

ComfyUI keeps a list of loaded models and unloads the least needed ones when a new model needs room. A
network moved to the GPU with a plain ``.to(device)`` is invisible to it: it stays there, and a checkpoint
loaded next can run out of memory. Each prior with weights is therefore wrapped in a ``ModelPatcher``
(kept on the module as ``_iqa_map_patcher``) and loaded with ``load_models_gpu`` by every node that uses
it; ComfyUI may unload it between nodes and the next user loads it again. Training asks ``free_memory``
for its estimated size first and empties the cache after. Outside ComfyUI (the library, the CLI, tests
without ComfyUI) every function here is a plain ``.to(device)`` or nothing.
"""
from __future__ import annotations

import logging
from typing import Iterable

import torch

log = logging.getLogger("iqa_map")
_ATTR = "_iqa_map_patcher"


class Held(torch.nn.Module):
    """The module a ModelPatcher moves: ModelPatcher writes ``.device`` on its model, which a prior's read-only
    ``device`` property would refuse, so the prior sits inside this container."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self.device = None


def _comfy():
    try:
        import comfy.model_management as mm
        import comfy.model_patcher as mp
    except ImportError:
        return None, None
    return mm, mp


def staging_device(device: torch.device) -> torch.device:
    """Where to build a network that :func:`manage` will hand to ComfyUI: its offload device (the CPU), so
    ComfyUI makes room before the weights reach the GPU; ``device`` itself outside ComfyUI."""
    mm, _ = _comfy()
    return mm.unet_offload_device() if mm is not None and torch.device(device).type != "cpu" else device


def manage(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` registered with ComfyUI for ``device``, then loaded there through it; a plain ``.to(device)``
    outside ComfyUI, on the CPU, or for a module without weights (nothing to unload)."""
    mm, mp = _comfy()
    device = torch.device(device)
    if mm is None or device.type == "cpu" or not any(True for _ in module.state_dict()):
        return module.to(device)
    register(module, device)
    ready(module)
    return module


def register(module: torch.nn.Module, device: torch.device):
    """Wrap ``module`` in a ModelPatcher for ``device`` (any device: the CPU-only integration test registers
    one for the CPU to run ComfyUI's real bookkeeping) and keep it on the module; returns the patcher."""
    mm, mp = _comfy()
    module.to(mm.unet_offload_device())
    patcher = mp.ModelPatcher(Held(module), load_device=torch.device(device), offload_device=mm.unet_offload_device())
    module.__dict__[_ATTR] = patcher  # not a submodule: the patcher is no nn.Module and must not be saved
    return patcher


def patchers(*objs) -> list:
    """The ModelPatchers of ``objs`` and of every module inside them (a fused prior's members), once each."""
    out = []
    for o in objs:
        for m in (o.modules() if isinstance(o, torch.nn.Module) else ()):
            p = m.__dict__.get(_ATTR)
            if p is not None and all(p is not q for q in out):
                out.append(p)
    return out


def ready(*objs) -> None:
    """Load the managed networks among ``objs`` onto their device (again, if ComfyUI unloaded them since).
    Fully: a prior is plain torch, ComfyUI's partial (low-VRAM) loading would leave some weights on the CPU."""
    ps = patchers(*objs)
    if ps:
        mm, _ = _comfy()
        mm.load_models_gpu(ps, force_full_load=True)


def complete(ps: Iterable) -> None:
    """After ComfyUI loaded ``ps`` with a model (as additional models of a sampler, maybe partially under
    memory pressure): any weight left behind joins the rest, so the prior runs on one device."""
    for p in ps:
        dev = torch.device(p.load_device)
        if any(t.device != dev for t in (*p.model.parameters(), *p.model.buffers())):
            log.info("IQA-MAP: moving the rest of %s to %s", type(p.model.net).__name__, dev)
            p.model.to(dev)


def free_for(size_bytes: int, device: torch.device, keep: Iterable = ()) -> None:
    """Ask ComfyUI to unload models until ``size_bytes`` are free on ``device`` (for work it cannot see: a
    network under training), keeping the managed networks among ``keep`` loaded."""
    mm, _ = _comfy()
    device = torch.device(device)
    if mm is None or device.type == "cpu":
        return
    kept = [mm.LoadedModel(p) for p in patchers(*keep)]
    mm.free_memory(int(size_bytes), device, keep_loaded=kept)


def empty_cache() -> None:
    """ComfyUI's ``soft_empty_cache`` (after training: its freed memory back to the other models)."""
    mm, _ = _comfy()
    if mm is not None:
        mm.soft_empty_cache()


def training_bytes(module: torch.nn.Module, batch: int, side: int) -> int:
    """A rough upper estimate of what fine-tuning ``module`` on ``batch`` crops of ``side`` output pixels takes:
    weights, gradients and two Adam moments (4x the weights, though LoRA trains far fewer), plus the
    activations of a small upscaler (about 64 floats per output pixel and crop, kept for the backward pass)."""
    weights = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    return 4 * weights + batch * side * side * 64 * 4
