"""A differentiable path through ComfyUI's diffusion transformers, switched on for the gradient pass only.

ComfyUI runs its models for inference, and two of its habits break the
vector-Jacobian products the MAP ascent takes through the network:

* **Fused RoPE** (ComfyUI 0.8): ``comfy.ldm.flux.math.apply_rope`` /
  ``apply_rope1`` are ``comfy_kitchen`` custom ops (CUDA kernel, or its eager
  backend on CPU) with no autograd formula: backward raises "no autograd
  formula was registered". Flux, Flux.2, Chroma, HiDream, Lumina 2 / Z-Image,
  Qwen-Image, Wan and Kandinsky 5 use them. :class:`_RoPE` keeps the fused
  forward (so the forward numbers, and with them EDICT's exact inversion,
  are unchanged) and adds the backward: RoPE rotates each pair of features by
  a 2x2 matrix ``F``, so the input gradient is ``F^T g``, the same fused op
  with the matrices transposed.
* **In-place residual updates** (``img += attn(...)`` in Flux's double and
  single blocks, ``x += ...`` in SD3's MMDiT, ...) overwrite tensors autograd
  saved for backward. :class:`_CopyOnWrite` copies a saved tensor only when an
  in-place op is about to overwrite it (docs/models_comfyui.md weighs the
  alternatives). With per-block activation checkpointing the blocks run a
  second time inside the backward pass, where that guard is not active:
  :class:`_RecomputeCopyOnWrite` is the same guard for the recomputation,
  handed to ``torch.utils.checkpoint`` as its ``context_fn``.

Both are patches of ComfyUI's module globals and a torch function mode,
active inside :func:`differentiable` only, and undone on exit and on error,
so a plain KSampler run afterwards is bit-identical to one before.
"""
from __future__ import annotations

import contextlib
import sys
import weakref

import torch
from torch.overrides import TorchFunctionMode

#: The fused RoPE entry points ComfyUI 0.8 imports into its model modules (``comfy.ldm.*``).
ROPE_NAMES = ("apply_rope", "apply_rope1")

_AUGMENTED = ("__iadd__", "__isub__", "__imul__", "__itruediv__", "__ior__", "__iand__")


#: What comfy_kitchen's RoPE kernels take (others use ComfyUI's own formula).
_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _transposed(freqs: torch.Tensor) -> torch.Tensor:
    return freqs.transpose(-1, -2).contiguous()


class _RoPE1(torch.autograd.Function):
    """``fused(x, F)`` with the backward ``fused(g, F^T)`` (RoPE is linear in ``x``)."""

    @staticmethod
    def forward(ctx, x, freqs, fused):
        ctx.save_for_backward(freqs)
        ctx.fused = fused
        return fused(x, freqs)

    @staticmethod
    def backward(ctx, g):
        (freqs,) = ctx.saved_tensors
        return ctx.fused(g.contiguous(), _transposed(freqs)), None, None


def _eager_rope1(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """ComfyUI's own fallback formula (comfy/ldm/flux/math.py), for frequencies that need a gradient too."""
    x_ = x.to(dtype=freqs.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    out = freqs[..., 0] * x_[..., 0] + freqs[..., 1] * x_[..., 1]
    return out.reshape(*x.shape).type_as(x)


def differentiable_rope(fused_pair, fused_one):
    """Differentiable ``apply_rope(q, k, F)`` and ``apply_rope1(x, F)`` around the fused ops."""

    def rope1(x, freqs):
        if x.dtype not in _FUSED_DTYPES or freqs.requires_grad:  # float64 checks; gradients w.r.t. positions
            return _eager_rope1(x, freqs)
        if not torch.is_grad_enabled() or not x.requires_grad:
            return fused_one(x, freqs)
        return _RoPE1.apply(x, freqs, fused_one)

    def rope(q, k, freqs):
        if q.dtype in _FUSED_DTYPES and not freqs.requires_grad and not (
                torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)):
            return fused_pair(q, k, freqs)
        return rope1(q, freqs), rope1(k, freqs)

    rope.__wrapped__, rope1.__wrapped__ = fused_pair, fused_one
    return rope, rope1


class _Saved:
    """What autograd keeps for one saved tensor: the tensor itself, or its copy once something overwrote it."""
    __slots__ = ("t", "copy", "version", "__weakref__")

    def __init__(self, t):
        self.t, self.copy, self.version = t, None, t._version


def _storage_key(t: torch.Tensor):
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without storage (sparse, some subclasses)
        return None


class _CopyOnWrite(TorchFunctionMode):
    """Saved activations copied only when an in-place op is about to overwrite them.

    Autograd saves tensors through :meth:`pack` (a saved-tensors hook); an
    in-place op (``add_``, ``+=``, ``copy_``, ``__setitem__``, ...) on a tensor
    whose storage holds saved activations first copies those activations, so
    the backward sees the values of the forward. Nothing is copied when nothing
    saved is overwritten, and a copy costs what the out-of-place operation would
    have allocated anyway.
    """

    def __init__(self):
        super().__init__()
        self.saved = {}      # storage pointer -> weak references to _Saved
        self.limit = 8192
        self.copies = 0      # how many activations were copied (for the docs' memory figures)
        self.copied_bytes = 0

    def pack(self, t):
        h = _Saved(t)
        key = _storage_key(t)
        if key is not None:
            self.saved.setdefault(key, []).append(weakref.ref(h))
            if len(self.saved) > self.limit:  # long runs: forget storages whose activations autograd freed
                self.saved = {k: v for k, v in self.saved.items() if any(r() is not None for r in v)}
                self.limit = max(8192, 2 * len(self.saved))  # amortised: pruning stays linear
        return h

    @staticmethod
    def unpack(h):
        if h.copy is not None:
            if h.copy._version != h.version:  # a recomputation wrote to what an earlier backward unpacked
                raise RuntimeError("IQA-MAP: a saved activation was overwritten in place after its copy; please "
                                   "report this model")
            return h.copy
        if h.t._version != h.version:  # overwritten by an op this mode did not see: never a silent wrong gradient
            raise RuntimeError("IQA-MAP: an activation saved for the gradient was overwritten in place outside "
                               "the copy-on-write scope; please report this model")
        return h.t

    def _before_write(self, t):
        key = _storage_key(t)
        refs = self.saved.pop(key, None) if key is not None else None
        for r in refs or ():
            h = r()
            if h is not None and h.copy is None:
                h.copy = h.t.clone()
                h.version = h.copy._version
                self.copies += 1
                self.copied_bytes += h.copy.numel() * h.copy.element_size()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.saved and args and torch.is_tensor(args[0]) and _in_place(func):
            self._before_write(args[0])
        out = kwargs.get("out")
        if self.saved and torch.is_tensor(out):
            self._before_write(out)
        return func(*args, **kwargs)


def _in_place(func) -> bool:
    name = getattr(func, "__name__", "")
    return name == "__setitem__" or (name.endswith("_") and not name.startswith("__")) or name in _AUGMENTED


def _top_hooks():
    """The innermost saved-tensors hooks (pack, unpack), or None; torch has no public accessor for them."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top(False) if top is not None else None


class _RecomputeCopyOnWrite(_CopyOnWrite):
    """:class:`_CopyOnWrite` for a checkpointed block's recomputation (the recompute half of ``context_fn``).

    ``torch.utils.checkpoint`` recomputes the block in the backward pass under its own saved-tensors hook,
    which keeps each recomputed activation as it is: a block's ``x += ...`` then overwrites values the block's
    backward still needs, and the gradient is silently wrong (``tests/test_comfyui_checkpointing.py``, the
    negative control). Here checkpoint's hook is handed an alias of each tensor (same storage, its own
    tensor object); an in-place op about to write to that storage first moves the alias onto a copy.
    """

    def __init__(self):
        super().__init__()
        self.hooks = None

    def pack(self, t):
        if type(t) is not torch.Tensor or _storage_key(t) is None:  # subclasses (QuantizedTensor): as they are
            return t
        alias = torch.empty(0, dtype=t.dtype, device=t.device)
        with torch.no_grad():
            alias.set_(t.untyped_storage(), t.storage_offset(), t.size(), t.stride())
        self.saved.setdefault(_storage_key(t), []).append(weakref.ref(alias))
        return alias

    def _before_write(self, t):
        key = _storage_key(t)
        for r in (self.saved.pop(key, None) if key is not None else None) or ():
            alias = r()
            if alias is not None:
                with torch.no_grad():
                    alias.set_(alias.clone())
                self.copies += 1
                self.copied_bytes += alias.numel() * alias.element_size()

    def __enter__(self):
        top = _top_hooks()
        if top is None:
            raise RuntimeError("IQA-MAP: checkpointing a ComfyUI model needs torch's saved-tensors hooks stack "
                               "(torch >= 2.1); set checkpointing to off")
        inner_pack, inner_unpack = top  # checkpoint's recomputation hook: it keeps what it is handed
        self.hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: inner_pack(self.pack(t)), inner_unpack)
        self.hooks.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self.hooks.__exit__(*exc)


def recompute_contexts():
    """``context_fn`` for ``torch.utils.checkpoint``: nothing extra in the forward (each evaluation's
    :func:`copy_on_write` is active there), copy-on-write in the recomputation."""
    return contextlib.nullcontext(), _RecomputeCopyOnWrite()


@contextlib.contextmanager
def copy_on_write():
    """In-place updates inside ComfyUI's blocks no longer break the backward (see :class:`_CopyOnWrite`)."""
    mode = _CopyOnWrite()
    with torch.autograd.graph.saved_tensors_hooks(mode.pack, mode.unpack), mode:
        yield mode


def _rope_sites():
    """``(module, name, fused function)`` for every loaded ComfyUI module that bound a fused RoPE op."""
    math_mod = sys.modules.get("comfy.ldm.flux.math")
    if math_mod is None:
        return []
    fused = {getattr(math_mod, n, None) for n in ROPE_NAMES} - {None}
    fused = {f for f in fused if not hasattr(f, "__wrapped__")}
    sites = []
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "comfy" or mod_name.startswith(("comfy.", "comfy_extras."))):
            continue
        for n in ROPE_NAMES:
            f = getattr(mod, n, None) if n in getattr(mod, "__dict__", {}) else None
            if f is not None and f in fused:
                sites.append((mod, n, f))
    return sites


@contextlib.contextmanager
def patched_rope():
    """Swap the fused RoPE ops for their differentiable wrappers in every ComfyUI module; restore on exit."""
    sites = _rope_sites()
    math_mod = sys.modules.get("comfy.ldm.flux.math")
    if not sites or math_mod is None:
        yield []
        return
    rope, rope1 = differentiable_rope(math_mod.apply_rope, math_mod.apply_rope1)
    wrapped = {math_mod.apply_rope: rope, math_mod.apply_rope1: rope1}
    try:
        for mod, name, f in sites:
            setattr(mod, name, wrapped[f])
        yield sites
    finally:
        for mod, name, f in sites:
            setattr(mod, name, f)


_ACTIVE = []  # differentiable() scopes entered and not left (a list: nested scopes and threads are fine)


@contextlib.contextmanager
def differentiable(network: torch.nn.Module | None = None, checkpoint: bool = False):
    """Inside: ComfyUI's diffusion models can be differentiated w.r.t. their input (RoPE, in-place updates).

    ``checkpoint``: also recompute each transformer block in the backward
    (the library's ``core.models.checkpointing.checkpoint_blocks``, with
    :func:`recompute_contexts` guarding the recomputation), trading one more
    forward per block for the activations.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(patched_rope())
        stack.enter_context(copy_on_write())  # the VAE decode, the prior and whatever else the graph holds
        if checkpoint and network is not None:
            stack.enter_context(block_checkpointing(network))
        _ACTIVE.append(True)
        stack.callback(_ACTIVE.pop)
        yield


def evaluation():
    """Around one network evaluation: copy-on-write of its saved activations when a gradient is being taken.

    The EDICT backward re-runs the network inside ``torch.autograd.Function.backward``,
    where torch function modes entered outside are not active (saved-tensors hooks
    are): each evaluation therefore enters its own scope.
    """
    if _ACTIVE and torch.is_grad_enabled():
        return copy_on_write()
    return contextlib.nullcontext()


def block_checkpointing(network: torch.nn.Module):
    """The library's per-block activation checkpointing, or nothing where this version of it is absent."""
    try:
        from ..core.models.checkpointing import checkpoint_blocks
    except ImportError:
        return contextlib.nullcontext()
    return checkpoint_blocks(network, enabled=True, context_fn=recompute_contexts)
