"""Activation checkpointing of transformer blocks: same gradients, less saved memory, always restored."""
import pytest
import torch

from iqa_map.core.sampling import edict
from iqa_map.core.models import checkpointing as C
from iqa_map.core.models.flow import from_velocity

from helpers import rel


class Block(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.a, self.b = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x, scale=1.0):
        return x + scale * self.b(torch.nn.functional.gelu(self.a(x)))


class Deep(torch.nn.Module):
    """Tiny but deep: the saved activations grow with depth, as in a DiT."""

    def __init__(self, d=32, n=8, name="stack"):
        super().__init__()
        torch.manual_seed(0)
        setattr(self, name, torch.nn.ModuleList(Block(d) for _ in range(n)))
        self.name, self.out = name, torch.nn.Linear(d, d)

    def forward(self, x):
        for b in getattr(self, self.name):
            x = b(x, scale=0.5)
        return self.out(x)


def _grad_and_saved_bytes(m, x):
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    leaf = x.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = m(leaf)
    (g,) = torch.autograd.grad((y ** 2).sum(), leaf)
    return g, sum(saved)


def test_gradients_identical_and_saved_activations_smaller():
    m, x = Deep().double(), torch.randn(64, 32, dtype=torch.float64)
    g0, b0 = _grad_and_saved_bytes(m, x)
    with C.checkpoint_blocks(m) as n:
        assert n == 8
        g1, b1 = _grad_and_saved_bytes(m, x)
    assert torch.equal(g0, g1)
    # Plain: every block's hidden, 4x-wide MLP activations. Checkpointed: one block input each.
    assert b1 * 5 < b0, (b0, b1)
    assert _grad_and_saved_bytes(m, x)[1] == b0  # restored


def test_restored_after_an_exception_and_not_nested_twice():
    m = Deep()
    forwards = [b.forward for b in m.stack]
    with pytest.raises(RuntimeError, match="boom"):
        with C.checkpoint_blocks(m):
            with C.checkpoint_blocks(m) as inner:
                assert inner == 0  # already wrapped by the enclosing call
            raise RuntimeError("boom")
    assert all("forward" not in b.__dict__ for b in m.stack)
    assert [b.forward for b in m.stack] == forwards
    with C.checkpoint_blocks(m, enabled=False) as n:
        assert n == 0


@pytest.mark.parametrize("name", ["double_blocks", "single_blocks", "joint_blocks", "transformer_blocks", "layers"])
def test_generic_over_block_list_names(name):
    """ComfyUI's DiTs keep blocks under these names; a known name counts even when the list is short."""
    short = Deep(n=2, name=name)
    assert len(C.find_blocks(short)) == 2
    anon_short = Deep(n=2, name="other")
    assert C.find_blocks(anon_short) == []  # an anonymous list of two is not taken for a block stack
    wrapper = torch.nn.Module()
    wrapper.diffusion_model = Deep(n=6, name=name)  # at depth, as ComfyUI's BaseModel holds its network
    with C.checkpoint_blocks(wrapper) as n:
        assert n == 6


def test_automatic_above_a_parameter_count():
    small = Deep()
    assert not C.use_checkpointing("auto", small) and C.use_checkpointing("on", small)
    assert not C.use_checkpointing("off", small)
    with torch.device("meta"):
        big = torch.nn.Linear(40000, 30000)  # 1.2e9 parameters, no memory
    assert C.use_checkpointing("auto", big)
    with pytest.raises(ValueError, match="checkpointing must be one of"):
        C.use_checkpointing("yes", small)


def test_reversible_gradient_through_a_checkpointed_model_is_unchanged():
    class Velocity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = Deep(d=16, n=4)

        def forward(self, x, t):
            b = x.shape[0]
            return self.net(x.reshape(b, -1, 16)).reshape(x.shape) * (1 + t.reshape(-1, 1, 1, 1))

    den = from_velocity(Velocity().double(), shift=3.0)
    x = torch.randn(1, 4, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sig = den.sigmas(4)
    pair = edict.invert(den, x, sig)
    loss = lambda a, b: (a * a.detach().sign()).sum()  # noqa: E731
    _, g0 = edict.value_and_grad(den, pair, sig, loss)
    with C.checkpoint_blocks(den.network) as n:
        assert n == 4
        _, g1 = edict.value_and_grad(den, pair, sig, loss)
    assert rel(g1[0], g0[0]) < 1e-12 and rel(g1[1], g0[1]) < 1e-12


def test_vae_decoder_resnets_are_checkpointed_with_the_same_gradient():
    from iqa_map.core.models.codec import VAECodec

    from benchmarks.random_flow import vae16

    codec = VAECodec(vae16("flux").double())
    z = torch.randn(1, 16, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g0, b0 = _grad_and_saved_bytes(codec.decode, z)
    with C.checkpoint_codec(codec) as n:
        assert n == 2 + 4 * 2  # the mid block's two ResNets and each up block's (layers_per_block + 1)
        g1, b1 = _grad_and_saved_bytes(codec.decode, z)
    assert torch.equal(g0, g1) and b1 < b0 / 2, (b0, b1)
    with C.checkpoint_codec(object()) as n:  # a pixel codec has no VAE: nothing to do
        assert n == 0
