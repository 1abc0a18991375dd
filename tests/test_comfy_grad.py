"""The ComfyUI-side gradient path (nodes/comfy_grad.py) on stand-ins for ComfyUI's fused RoPE and in-place blocks.

No ComfyUI needed: a custom op without an autograd formula plays comfy_kitchen's
RoPE kernel, and a block with ``h += ...`` plays Flux's residual updates. The
same path on ComfyUI's real model classes: tests/test_comfyui.py (check_flow).
"""
import sys
import types

import pytest
import torch

from iqa_map.nodes import comfy_grad


@torch.library.custom_op("iqa_map_test::rope1", mutates_args=())
def _fused_rope1(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Interleaved RoPE as comfy_kitchen computes it, registered without a backward (as comfy_kitchen's is)."""
    x_ = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    return (freqs[..., 0] * x_[..., 0] + freqs[..., 1] * x_[..., 1]).reshape(*x.shape).type_as(x)


def _fused_rope(q, k, freqs):
    return _fused_rope1(q, freqs), _fused_rope1(k, freqs)


def _freqs(n=5, d=8, seed=0):
    ang = torch.rand(1, 1, n, d // 2, generator=torch.Generator().manual_seed(seed)) * 6.3
    return torch.stack([ang.cos(), -ang.sin(), ang.sin(), ang.cos()], -1).reshape(1, 1, n, d // 2, 2, 2)


def test_fused_rope_gets_a_backward_and_keeps_its_forward():
    freqs = _freqs()
    q = torch.randn(2, 3, 5, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="autograd"):
        _fused_rope1(q, freqs).sum().backward()  # what ComfyUI 0.8's kernels do
    rope, rope1 = comfy_grad.differentiable_rope(_fused_rope, _fused_rope1)
    g = torch.randn(2, 3, 5, 8)
    out = rope1(q, freqs)
    assert torch.equal(out, _fused_rope1(q.detach(), freqs))  # the fused forward, bit for bit
    (got,) = torch.autograd.grad(out, q, g)
    (want,) = torch.autograd.grad(comfy_grad._eager_rope1(q, freqs), q, g)
    assert torch.allclose(got, want, atol=1e-6)
    # the pair form, and float64 (no fused kernel): ComfyUI's own formula
    qa, ka = rope(q, q * 2, freqs)
    assert torch.equal(qa, out)
    qd = q.detach().double().requires_grad_(True)
    (gd,) = torch.autograd.grad(rope1(qd, freqs.double()), qd, g.double())
    assert torch.allclose(gd.float(), want, atol=1e-6)


class _Block(torch.nn.Module):
    """Flux-style block: a norm saves its input, then the residual stream is updated in place."""

    def __init__(self, d=16):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.norm = torch.nn.LayerNorm(d)
        self.a = torch.nn.Linear(d, d)
        self.b = torch.nn.Linear(d, d)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x, in_place=True):
        h = x * 1.0
        if in_place:
            h += self.a(self.norm(h)).tanh()
            h += self.b(self.norm(h)).exp()
        else:
            h = h + self.a(self.norm(h)).tanh()
            h = h + self.b(self.norm(h)).exp()
        return h


def test_copy_on_write_makes_in_place_blocks_differentiable_with_the_same_values():
    blk = _Block()
    x = torch.randn(3, 16, requires_grad=True)
    with pytest.raises(RuntimeError, match="inplace"):
        blk(x).square().sum().backward()  # what Flux's `img += ...` does to a plain backward
    (want,) = torch.autograd.grad(blk(x, in_place=False).square().sum(), x)
    with comfy_grad.copy_on_write() as mode:
        out = blk(x)
        (got,) = torch.autograd.grad(out.square().sum(), x)
    assert torch.equal(out, blk(x, in_place=False))
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    assert mode.copies >= 1 and mode.copied_bytes > 0  # what was overwritten was copied, once each
    with torch.no_grad(), comfy_grad.copy_on_write() as idle:
        blk(x)
    assert idle.copies == 0  # no graph, nothing saved, nothing copied: inference untouched


def test_each_evaluation_is_covered_inside_a_custom_backward():
    """EDICT's reversible backward re-runs the network inside autograd.Function.backward, where torch function
    modes entered outside are off but saved-tensors hooks are on: evaluation() covers it, and an overwrite that no
    mode saw raises instead of giving a wrong gradient."""
    blk = _Block()

    class Twice(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            with torch.no_grad():
                return blk(x) * 2

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            with torch.enable_grad():
                leaf = x.detach().requires_grad_(True)
                with comfy_grad.evaluation():
                    y = blk(leaf)
                (gx,) = torch.autograd.grad(y, leaf, g * 2)
            return gx

    x = torch.randn(3, 16, requires_grad=True)
    g = torch.randn(3, 16)
    (want,) = torch.autograd.grad(blk(x, in_place=False) * 2, x, g)
    with comfy_grad.differentiable():
        (got,) = torch.autograd.grad(Twice.apply(x), x, g)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    assert not comfy_grad._ACTIVE

    with comfy_grad.copy_on_write():  # hooks on, the overwrite unseen: an error, never a silent wrong gradient
        h = x * 1.0
        y = h.sin()  # saves h
        with torch.overrides._pop_mode_temporarily():
            h.add_(1.0)
        with pytest.raises(RuntimeError, match="overwritten in place"):
            torch.autograd.grad(y.sum(), x)


def test_patched_rope_swaps_every_module_binding_and_restores_them_on_error(monkeypatch):
    """ComfyUI modules bind apply_rope/apply_rope1 at import (`from comfy.ldm.flux.math import apply_rope1`): every
    binding is swapped for the scope, and put back on exit, error included."""
    math_mod = types.ModuleType("comfy.ldm.flux.math")
    math_mod.apply_rope, math_mod.apply_rope1 = _fused_rope, _fused_rope1
    user = types.ModuleType("comfy.ldm.qwen_image.model")
    user.apply_rope1 = _fused_rope1
    other = types.ModuleType("not_comfy")
    other.apply_rope1 = _fused_rope1
    for m in (math_mod, user, other):
        monkeypatch.setitem(sys.modules, m.__name__, m)
    with pytest.raises(KeyError):
        with comfy_grad.differentiable():
            assert user.apply_rope1 is not _fused_rope1 and user.apply_rope1.__wrapped__ is _fused_rope1
            assert math_mod.apply_rope.__wrapped__ is _fused_rope
            assert other.apply_rope1 is _fused_rope1  # only ComfyUI's modules
            q = torch.randn(1, 1, 5, 8, requires_grad=True)
            user.apply_rope1(q, _freqs()).sum().backward()
            assert q.grad is not None
            raise KeyError("interrupted")
    assert user.apply_rope1 is _fused_rope1 and math_mod.apply_rope is _fused_rope
    assert math_mod.apply_rope1 is _fused_rope1 and not comfy_grad._ACTIVE


def test_block_checkpointing_composes_with_copy_on_write():
    """Blocks recomputed inside the backward pass update their residuals in place there too: without the
    recomputation's own guard (checkpoint's default context) the gradient comes out wrong without an error;
    with comfy_grad's (differentiable(..., checkpoint=True)) it is the plain gradient, and less is saved."""
    from iqa_map.core.models.checkpointing import checkpoint_blocks

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.double_blocks = torch.nn.ModuleList(_Block() for _ in range(4))

        def forward(self, x, in_place=True):
            for b in self.double_blocks:
                x = b(x, in_place=in_place)
            return x

    net = Net()
    x = torch.randn(3, 16, requires_grad=True)
    (want,) = torch.autograd.grad(net(x, in_place=False).square().sum(), x)
    with comfy_grad.differentiable(), checkpoint_blocks(net, True):  # no context_fn: the negative control
        with comfy_grad.evaluation():
            out = net(x)
            (got,) = torch.autograd.grad(out.square().sum(), x)
    assert not torch.allclose(got, want, rtol=1e-3, atol=1e-3)
    for ckpt in (True, False):
        with comfy_grad.differentiable(net, checkpoint=ckpt), comfy_grad.evaluation() as mode:
            saved = len(mode.saved)
            out = net(x)
            saved = len(mode.saved) - saved
            assert all(getattr(b, "_iqa_map_checkpointed", False) == ckpt for b in net.double_blocks)
            (got,) = torch.autograd.grad(out.square().sum(), x)
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
        if ckpt:
            saved_ckpt = saved
    assert 0 < saved_ckpt < saved
    assert not any(hasattr(b, "_iqa_map_checkpointed") for b in net.double_blocks)  # restored on exit
