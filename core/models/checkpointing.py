"""Activation checkpointing of a transformer's blocks, for gradients through DiT-scale models.

The reversible sampler's memory is one network evaluation's graph (see
:mod:`~iqa_map.core.sampling.edict`), but for a 12B transformer at 4096 image tokens
that graph alone is tens of GB: every block keeps its attention and MLP
activations for the backward pass. :func:`checkpoint_blocks` makes each block
keep only its input and recompute the rest when its gradient is needed
(``torch.utils.checkpoint``, non-reentrant), so the graph holds one block's
activations plus one hidden state per block, for about one more forward pass
of compute per gradient. Gradients are unchanged: the recomputation replays
the same operations (the networks run in eval mode, without dropout, so there
is no RNG state to replay; not fetching it also keeps the wrapper usable while
a CUDA graph is captured).

It is generic over where models keep their blocks: known names (diffusers'
Flux ``transformer_blocks`` and ``single_transformer_blocks``, SD3's
``transformer_blocks``; ComfyUI's ``double_blocks``, ``single_blocks``,
``joint_blocks``, ``transformer_blocks``, ``layers``; Z-Image's refiners) at any depth, and any other
``nn.ModuleList`` of at least :data:`MIN_BLOCKS` modules. Without grad (the
forward passes of sampling and inversion) a wrapped block runs as before.
:func:`checkpoint_codec` does the same for a VAE decoder, whose backward
graph at 1024 px is as large as a DiT's once that is checkpointed.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Iterator, List, Optional

import torch
from torch.utils.checkpoint import checkpoint

#: Attribute names of block lists in diffusers' and ComfyUI's DiT implementations.
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks", "double_blocks", "single_blocks", "joint_blocks",
               "layers", "blocks", "noise_refiner", "context_refiner")
#: An anonymous ModuleList is taken for a stack of blocks from this length on.
MIN_BLOCKS = 4
#: ``auto`` checkpoints models with at least this many parameters (SD3.5 medium, Flux, Qwen-Image, Z-Image;
#: not SD 1.x/2.x's 0.86B UNet, whose activations at 512 px fit beside it).
AUTO_PARAMS = 1_000_000_000
MODES = ("auto", "on", "off")
_MISSING = object()
_MARK = "_iqa_map_checkpointed"


def find_blocks(module: torch.nn.Module, min_blocks: int = MIN_BLOCKS, names=BLOCK_LISTS) -> List[torch.nn.Module]:
    """The blocks :func:`checkpoint_blocks` wraps: members of lists called ``names`` or of at least ``min_blocks``
    modules, outermost first, never nested."""
    found: List[torch.nn.Module] = []

    def visit(m: torch.nn.Module) -> None:
        for name, child in m.named_children():
            if isinstance(child, torch.nn.ModuleList) and len(child) > 0 and (
                    name in names or len(child) >= min_blocks):
                found.extend(child)  # a block's own inner lists are inside its checkpoint already
            else:
                visit(child)

    if module is not None:
        visit(module)
    return found


def _forward(orig, context_fn, *args, **kwargs):
    """``orig(*args, **kwargs)``, checkpointed. Tensor keyword arguments (ComfyUI's blocks take ``vec=``, ``pe=``,
    ...) become checkpoint inputs: saved with the inputs (and under the caller's saved-tensors hooks) instead of
    read back from the closure at recomputation, when something may have overwritten them in place."""
    if not torch.is_grad_enabled():
        return orig(*args, **kwargs)
    names = [k for k, v in kwargs.items() if torch.is_tensor(v)]
    rest = {k: v for k, v in kwargs.items() if k not in names}
    n = len(args)

    def run(*inputs):
        return orig(*inputs[:n], **rest, **dict(zip(names, inputs[n:])))

    extra = {} if context_fn is None else {"context_fn": context_fn}
    return checkpoint(run, *args, *(kwargs[k] for k in names), use_reentrant=False, preserve_rng_state=False,
                      **extra)


@contextlib.contextmanager
def checkpoint_blocks(module: Optional[torch.nn.Module], enabled: bool = True,
                      min_blocks: int = MIN_BLOCKS, names=BLOCK_LISTS, context_fn=None) -> Iterator[int]:
    """Within the block, ``module``'s transformer blocks recompute their activations in the backward pass.

    ``context_fn``: :func:`torch.utils.checkpoint.checkpoint`'s (forward context, recomputation context) factory;
    ComfyUI's blocks need one that guards their in-place updates during the recomputation too
    (``nodes/comfy_grad.py``). Yields the number of blocks wrapped (0 when disabled or none found). Each
    block's ``forward`` is restored on exit, also when the body raises; blocks
    already wrapped by an enclosing call are left to it.
    """
    blocks = [b for b in find_blocks(module, min_blocks, names) if not getattr(b, _MARK, False)] if enabled else []
    saved = []
    try:
        for b in blocks:
            own = b.__dict__.get("forward", _MISSING)  # an instance forward (accelerate's hooks) is kept inside
            saved.append((b, own))
            b.forward = functools.partial(_forward, b.forward, context_fn)
            setattr(b, _MARK, True)
        yield len(blocks)
    finally:
        for b, own in reversed(saved):
            if own is _MISSING:
                del b.forward
            else:
                b.forward = own
            delattr(b, _MARK)


#: In a VAE decoder the unit of recomputation is the ResNet block: its up blocks each hold three at full
#: resolution, so whole up blocks would leave one of them (5 GiB at 1024 px) to recompute at once.
CODEC_LISTS = ("resnets",)


def checkpoint_codec(codec, enabled: bool = True):
    """:func:`checkpoint_blocks` for a codec's VAE decoder (1024 px, bf16: 11 GiB of saved activations to 5.7)."""
    decoder = getattr(getattr(codec, "vae", None), "decoder", None)
    return checkpoint_blocks(decoder, enabled, min_blocks=math.inf, names=CODEC_LISTS)


def parameter_count(module: Optional[torch.nn.Module]) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def use_checkpointing(mode: str, module: Optional[torch.nn.Module]) -> bool:
    """``on``, ``off``, or ``auto``: on for a network of at least :data:`AUTO_PARAMS` parameters."""
    if mode not in MODES:
        raise ValueError(f"checkpointing must be one of {MODES}, got {mode!r}")
    return mode == "on" or (mode == "auto" and parameter_count(module) >= AUTO_PARAMS)
