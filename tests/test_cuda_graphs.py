"""CUDA graphs for the denoiser's eps and VJP: same values as eager, scoped to pure calls, safe fallback.

The CUDA tests run where a GPU is present (the speed issue's device check runs them). On a CPU the
cache's own logic runs against an emulated graph whose replay recomputes into the captured output
buffers, as a real replay does.
"""
import pytest
import torch

from iqa_map.core.sampling import edict
from iqa_map.core.sampling.inversion import CountingDenoiser
from iqa_map.core.models import cuda_graphs, from_diffusers

from tiny_models import ddpm_scheduler, pixel_unet, sd_scheduler, sd_unet

from helpers import rel

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


class _FakeGraph:
    """A replay that recomputes ``fn`` and writes into the outputs recorded at capture."""

    def __init__(self, fn, out):
        self.fn, self.out = fn, out

    def replay(self):
        new = self.fn()
        for o, n in zip(_leaves(self.out), _leaves(new)):
            o.copy_(n)


def _leaves(v):
    return [t for x in v for t in _leaves(x)] if isinstance(v, (tuple, list)) else [v]


@pytest.fixture
def emulated(monkeypatch):
    captures = []

    def capture(fn, pool):
        out = fn()
        captures.append(out)
        return _FakeGraph(fn, out), out

    monkeypatch.setattr(cuda_graphs, "_capture", capture)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    monkeypatch.setattr(cuda_graphs.CudaGraphs, "usable", lambda self, x: self.failed is None)
    return captures


def _sd(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    cond = {"positive": torch.randn(1, 6, 32, generator=g, dtype=dtype),
            "negative": torch.randn(1, 6, 32, generator=g, dtype=dtype) * 0.1}
    return from_diffusers(sd_unet().to(dtype), sd_scheduler(), guidance=2.0), cond


def test_graphs_are_off_by_default_and_do_nothing_on_cpu():
    den, cond = _sd()
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    ref = den.eps(x, 3.0, cond)
    assert den.accel is None
    den.use_cuda_graphs()
    assert not den.accel.usable(x)  # a CPU tensor: the eager path
    assert torch.equal(den.eps(x, 3.0, cond), ref)
    assert den.use_cuda_graphs(False).accel is None


def test_emulated_replay_equals_eager_and_returns_fresh_tensors(emulated):
    den, cond = _sd()
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = torch.randn_like(x)
    ref_e = den.eps(x, 3.0, cond)
    ref_e2, ref_v = den.eps_and_vjp(x, 3.0, cond, g)
    den.use_cuda_graphs()
    e1 = den.eps(x, 3.0, cond)
    e2 = den.eps(x * 0.5, 1.0, cond)  # a second replay must not change the first result
    assert torch.equal(e1, ref_e)
    assert not torch.equal(e1, e2)
    e3, v3 = den.eps_and_vjp(x, 3.0, cond, g)
    assert rel(e3, ref_e2) < 1e-12 and rel(v3, ref_v) < 1e-12
    # One entry (forward and VJP graph) for this signature; a new shape or a new cond captures again.
    assert len(den.accel.entries) == 1 and len(emulated) == 2
    den.eps(torch.randn(2, 4, 8, 8, dtype=torch.float64), 3.0, cond)
    den.eps(x, 3.0, {k: v.clone() for k, v in cond.items()})
    assert len(den.accel.entries) == 3
    assert den.accel.replays == 5


def test_gradients_through_eps_never_use_a_graph(emulated):
    """Plain autograd through eps (grad='autograd') needs the eager graph of each call."""
    den, cond = _sd()
    den.use_cuda_graphs()
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    den.eps(x, 3.0, cond).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert den.accel.replays == 0


def test_reversible_gradient_with_emulated_graphs_equals_autograd(emulated):
    den, cond = _sd()
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sig = den.sigmas(4)
    pair = edict.invert(den, x, sig, cond=cond)
    loss = lambda a, b: (a * torch.linspace(-1, 1, a.numel(), dtype=a.dtype).reshape(a.shape)).sum()  # noqa: E731
    _, ref = edict.value_and_grad(den, pair, sig, loss, cond=cond, grad="autograd")
    den.use_cuda_graphs()
    counting = CountingDenoiser(den)
    _, got = edict.value_and_grad(counting, pair, sig, loss, cond=cond, grad="reversible")
    assert rel(got[0], ref[0]) < 1e-5 and rel(got[1], ref[1]) < 1e-5
    assert counting.count == 4 * 4  # 2 evaluations per step forward, 2 VJPs per step back
    assert den.accel.replays == 16


def test_failed_capture_falls_back_to_eager_once(monkeypatch, caplog):
    den, cond = _sd()
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    ref = den.eps(x, 3.0, cond)

    def broken(fn, pool):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cuda_graphs, "_capture", broken)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    monkeypatch.setattr(cuda_graphs.CudaGraphs, "usable", lambda self, x: self.failed is None)
    den.use_cuda_graphs()
    with caplog.at_level("WARNING", logger="iqa_map"):
        assert torch.equal(den.eps(x, 3.0, cond), ref)
    assert "capture failed" in caplog.text and den.accel.failed
    assert torch.equal(den.eps(x, 3.0, cond), ref)  # stays eager, no second attempt


def test_cache_is_bounded(emulated):
    den = from_diffusers(pixel_unet().double(), ddpm_scheduler())
    den.use_cuda_graphs()
    for n in range(cuda_graphs.MAX_ENTRIES + 2):
        den.eps(torch.randn(1, 3, 8 + 8 * n, 8, dtype=torch.float64), 1.0)
    assert len(den.accel.entries) == cuda_graphs.MAX_ENTRIES


# -- on a GPU -------------------------------------------------------------------------------------

@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_graph_replay_matches_eager(dtype):
    den, cond = _sd(torch.float32)
    den.unet.to("cuda", dtype)
    cond = {k: v.to("cuda", dtype) for k, v in cond.items()}
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64, device="cuda")
    g = torch.randn_like(x)
    eager = den.eps(x, 3.0, cond), *den.eps_and_vjp(x, 3.0, cond, g)
    den.use_cuda_graphs()
    for _ in range(2):
        got = den.eps(x, 3.0, cond), *den.eps_and_vjp(x, 3.0, cond, g)
    assert den.accel.failed is None and den.accel.replays == 4
    # Not bit-identical: cuDNN may pick other (TF32) convolution kernels under capture than eagerly.
    # Measured on an H200: 1.9e-5 relative in float32.
    tol = 1e-4 if dtype == torch.float32 else 2e-3
    for a, b in zip(got, eager):
        assert rel(a, b) < tol


@CUDA
def test_edict_exact_and_gradients_with_cuda_graphs():
    """The EDICT exactness and gradient-parity checks, on CUDA, with the graphs on."""
    den, cond = _sd(torch.float64)
    den.unet.to("cuda")
    cond = {k: v.cuda() for k, v in cond.items()}
    den.use_cuda_graphs()
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64, device="cuda")
    sig = den.sigmas(6)
    pair = edict.invert(den, x, sig, cond=cond)
    out = edict.sample(den, pair, sig, cond=cond, grad=None)
    assert rel(out[0], x) < 1e-8
    loss = lambda a, b: (a * torch.linspace(-1, 1, a.numel(), dtype=a.dtype, device=a.device).reshape(a.shape)).sum()  # noqa: E731,E501
    _, rev = edict.value_and_grad(den, pair, sig, loss, cond=cond, grad="reversible")
    den.use_cuda_graphs(False)
    _, ref = edict.value_and_grad(den, pair, sig, loss, cond=cond, grad="autograd")
    assert rel(rev[0], ref[0]) < 1e-5 and rel(rev[1], ref[1]) < 1e-5


# -- torch.compile (opt-in), through the same accelerator slot ----------------------------------

def test_compile_gives_eager_values_and_gradients():
    """The "eager" dynamo backend traces the denoiser like inductor does but runs it as is: same values."""
    den, cond = _sd()
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = torch.randn_like(x)
    ref = den.eps(x, 3.0, cond), *den.eps_and_vjp(x, 3.0, cond, g)
    from iqa_map.core.models.compiled import Compiled
    den.accel = Compiled(den._eps, backend="eager")
    with torch.no_grad():
        e = den.eps(x, 3.0, cond)
    got = e, *den.eps_and_vjp(x, 3.0, cond, g)
    assert den.accel.failed is None and den.accel.replays == 2
    for a, b in zip(got, ref):
        assert rel(a, b) < 1e-12


def test_compile_failure_falls_back_to_eager(caplog):
    def broken(gm, example_inputs):
        raise RuntimeError("no C++ compiler found")

    den, cond = _sd()
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    ref = den.eps(x, 3.0, cond)
    from iqa_map.core.models.compiled import Compiled
    den.accel = Compiled(den._eps, backend=broken)
    with caplog.at_level("WARNING", logger="iqa_map"), torch.no_grad():
        assert torch.equal(den.eps(x, 3.0, cond), ref)
    assert "torch.compile failed" in caplog.text and "C++ compiler" in den.accel.failed
    e, v = den.eps_and_vjp(x, 3.0, cond, torch.ones_like(x))  # eager from now on
    assert torch.equal(e, ref) and den.accel.replays == 0


def test_load_model_options_choose_the_accelerator():
    from iqa_map.core.models.compiled import Compiled
    from iqa_map.core.models.loading import load_model
    assert load_model("builtin", device="cpu").denoiser.accel is None  # graphs are for CUDA devices
    assert isinstance(load_model("builtin", device="cpu", compile=True).denoiser.accel, Compiled)
