"""Flow-matching models: schedules equal diffusers', exact inversion, reversible gradients, Flux/SD3 adapters."""
import json
import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from iqa_map.core.sampling import ddim, edict
from iqa_map.core.models.flow import FlowSchedule, from_velocity
from iqa_map.core.models.flow_diffusers import FLOW_PIPELINES, encode_prompt, from_pipeline

from helpers import rel

from benchmarks import random_flow

# (scheduler config, the pipeline's ramp, image token count): SD3's static shift, schnell's none,
# Flux dev's dynamic shift, Qwen-Image's (dynamic, shift_terminal), and a linear time shift.
CONFIGS = {
    "sd3": (dict(shift=3.0), "train", None),
    "schnell": (dict(shift=1.0), "unit", None),
    "flux-dev": (random_flow.SCHEDULERS["flux-dev"], "unit", 1024),
    "flux-dev-1mp": (random_flow.SCHEDULERS["flux-dev"], "unit", 4096),
    "qwen-image": (dict(use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, max_image_seq_len=8192,
                        shift_terminal=0.02), "unit", 3000),
    "linear-shift": (dict(shift=3.0, use_dynamic_shifting=True, time_shift_type="linear"), "train", 300),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("n", [1, 4, 20, 50])
def test_schedule_equals_diffusers_scheduler(name, n):
    cfg, ramp, seq = CONFIGS[name]
    sched = FlowMatchEulerDiscreteScheduler(**cfg)
    ours = FlowSchedule.from_config(sched.config, ramp=ramp)
    if name == "qwen-image" and n == 1:
        # diffusers divides by zero stretching a one-step schedule (NaN); ours leaves t = 1 as it is.
        assert ours.sigmas(1, seq).tolist() == [1.0, 0.0]
        return
    sched.set_timesteps(n, sigmas=np.linspace(1.0, 1 / n, n) if ramp == "unit" else None,
                        mu=ours.mu(seq) if ours.dynamic else None)
    got = ours.sigmas(n, seq)
    assert got.dtype == torch.float64 and len(got) == n + 1
    assert torch.allclose(got, sched.sigmas.double(), rtol=0, atol=2e-7)  # diffusers computes in float32
    assert got[0] == pytest.approx(1.0) and got[-1] == 0


def test_dynamic_shift_follows_the_image_size():
    s = FlowSchedule.from_config(random_flow.SCHEDULERS["flux-dev"])
    assert s.mu(256) == pytest.approx(0.5) and s.mu(4096) == pytest.approx(1.15)
    small, large = s.sigmas(10, 256), s.sigmas(10, 4096)
    assert torch.all(large[1:-1] > small[1:-1])  # more tokens: more time at high noise
    assert torch.equal(s.sigmas(10), large)  # no size given: Flux's 1024x1024 (4096 tokens)


def test_unsupported_scheduler_options_are_refused():
    with pytest.raises(ValueError, match="use_karras_sigmas.*supported: shift"):
        FlowSchedule.from_config(FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True).config)


class TinyVelocity(torch.nn.Module):
    """A small nonlinear time-conditioned velocity field: enough to make inversion non-trivial."""

    def __init__(self, c=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Parameter(torch.randn(16, c + 1, 3, 3, generator=g) * 0.3)
        self.b = torch.nn.Parameter(torch.randn(c, 16, 3, 3, generator=g) * 0.3)

    def forward(self, x, t):
        tt = t.reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        h = torch.tanh(torch.nn.functional.conv2d(torch.cat([x, tt], 1), self.a, padding=1))
        return torch.nn.functional.conv2d(h, self.b, padding=1) + x * (1 - t.reshape(-1, 1, 1, 1))


def _latent(dtype=torch.float64, shape=(1, 4, 8, 8)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("schedule", ["sd3", "flux-dev"])
def test_few_step_flow_inversion_is_exact(steps, strength, schedule):
    """Full and partial inversion at 1-8 steps (distilled models): sample(invert(x)) == x to rounding."""
    cfg, ramp, _ = CONFIGS[schedule]
    den = from_velocity(TinyVelocity().double(), FlowSchedule.from_config(cfg, ramp=ramp))
    x = _latent()
    sig = den.sigmas(steps, strength, latent_shape=x.shape)
    assert len(sig) == steps + 1 and (sig[0] == 1.0) == (strength == 1.0)
    pair = edict.invert(den, x, sig)
    out = edict.sample(den, pair, sig, grad=None)
    assert max(rel(out[0], x), rel(out[1], x)) < 1e-12
    assert rel(pair[0], x) > 1e-2  # the latent is elsewhere: the inversion did something


def test_flow_inversion_in_float32_and_the_velocity_is_the_noise_estimate():
    den = from_velocity(TinyVelocity(), shift=3.0, ramp="train")
    x = _latent(torch.float32)
    sig = den.sigmas(8)
    pair = edict.invert(den, x, sig, state_dtype=torch.float32)
    assert rel(edict.sample(den, pair, sig, grad=None)[0], x) < 1e-5
    # D(x, t) = x - t v; eps = (x - D) / t = v, returned without forming D (exact at t = 1 too).
    t = torch.tensor(0.7, dtype=torch.float64)
    xd = x.double()
    d64 = from_velocity(TinyVelocity().double())
    v = d64.velocity(xd, t)
    assert torch.equal(d64.eps(xd, t), v) and torch.allclose(d64(xd, t), xd - 0.7 * v)
    assert torch.allclose((xd - d64(xd, 1.0)) / 1.0, d64.eps(xd, 1.0))


def test_unit_scale_is_the_variance_preserving_point():
    """The optimiser's vp units for a flow state: the same point as SD's x_ve / sqrt(1 + sigma^2)."""
    den = from_velocity(TinyVelocity())
    assert den.unit_scale(1.0) == 1.0
    for t in (0.3, 0.5, 0.9):
        sigma_ve = t / (1 - t)  # x_ve = x_t / (1 - t)
        assert den.unit_scale(t) == pytest.approx(1 / (1 - t) / math.sqrt(1 + sigma_ve ** 2))


def _loss(a, b):
    w = torch.linspace(-1, 1, a.numel(), dtype=a.dtype).reshape(a.shape)
    return (a * w).sum() + 0.5 * (b ** 2).mean()


def test_reversible_gradients_equal_autograd_for_a_flow_model():
    den = from_velocity(TinyVelocity().double(), shift=3.0)
    x = _latent()
    sig = den.sigmas(6)
    pair = edict.invert(den, x, sig)
    l1, g1 = edict.value_and_grad(den, pair, sig, _loss, grad="reversible")
    l2, g2 = edict.value_and_grad(den, pair, sig, _loss, grad="autograd")
    assert torch.allclose(l1, l2, rtol=1e-12)
    assert rel(g1[0], g2[0]) < 1e-5 and rel(g1[1], g2[1]) < 1e-5
    assert g2[0].abs().sum() > 0 and g2[1].abs().sum() > 0


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    """The random-weight Flux dev, Flux schnell and SD3 pipelines, loaded once."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    root, out = tmp_path_factory.mktemp("flow"), {}
    for fam in random_flow.FAMILIES:
        cls = StableDiffusion3Pipeline if fam == "sd3" else FluxPipeline
        pipe = cls.from_pretrained(random_flow.save_random_pipeline(root, fam), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        pipe.transformer.requires_grad_(False)  # as load_model leaves it: gradients reach the latents only
        out[fam] = pipe
    return out


def _adapter(pipe, fam):
    family, ramp = FLOW_PIPELINES["StableDiffusion3Pipeline" if fam == "sd3" else "FluxPipeline"]
    return from_pipeline(pipe, family, ramp), encode_prompt(pipe, family, "", "cpu"), family


@pytest.mark.parametrize("fam", random_flow.FAMILIES)
def test_adapters_reproduce_the_diffusers_pipelines(pipes, fam):
    """Euler sampling through the adapter = the pipeline's own loop (packing, ids, time scale, guidance, shift)."""
    pipe = pipes[fam]
    den, cond, family = _adapter(pipe, fam)
    x = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(0))
    kw = dict(num_inference_steps=4, height=64, width=96, output_type="latent")
    if family == "flux":
        ref = pipe("", latents=pipe._pack_latents(x, 1, 16, 8, 12), **kw).images
        ref = pipe._unpack_latents(ref, 64, 96, 8).detach()
        assert (den.guidance is not None) == (fam == "flux-dev")
    else:
        ref = pipe("", latents=x, guidance_scale=1.0, **kw).images
    with torch.no_grad():
        ours = ddim.sample(den, x, den.sigmas(4, latent_shape=x.shape), cond)
    assert rel(ours, ref) < 1e-5


@pytest.mark.parametrize("fam", random_flow.FAMILIES)
def test_adapters_invert_exactly_and_give_reversible_gradients(pipes, fam):
    den, cond, _ = _adapter(pipes[fam], fam)
    den.transformer.to(torch.float64)
    try:
        cond = {k: v.double() for k, v in cond.items()}
        z = _latent(shape=(1, 16, 4, 6))
        sig = den.sigmas(3, 0.7, latent_shape=z.shape)
        pair = edict.invert(den, z, sig, cond=cond)
        out = edict.sample(den, pair, sig, cond=cond, grad=None)
        assert rel(out[0], z) < 1e-12 and rel(pair[0], z) > 1e-2
        _, g1 = edict.value_and_grad(den, pair, sig, _loss, cond=cond, grad="reversible")
        _, g2 = edict.value_and_grad(den, pair, sig, _loss, cond=cond, grad="autograd")
        assert rel(g1[0], g2[0]) < 1e-5 and rel(g1[1], g2[1]) < 1e-5
    finally:
        den.transformer.to(torch.float32)


def test_flux_needs_an_even_latent_and_text_cond(pipes):
    den, cond, _ = _adapter(pipes["flux-dev"], "flux-dev")
    with pytest.raises(ValueError, match="even latent"):
        den(torch.zeros(1, 16, 5, 6), 0.5, cond)
    with pytest.raises(ValueError, match="text-conditioned"):
        den(torch.zeros(1, 16, 4, 6), 0.5, None)


def test_unsupported_pipelines_name_what_is_supported(tmp_path):
    from iqa_map.core.models.loading import load_model

    for name in ("WanPipeline", "CogVideoXPipeline", "FluxKontextPipeline"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_index.json").write_text(json.dumps({"_class_name": name}))
        with pytest.raises(ValueError, match=f"{name} pipeline.*FluxPipeline.*StableDiffusion3Pipeline"):
            load_model(str(tmp_path / name), device="cpu")


def test_momentum_steps_are_unit_scale_for_a_flow_model(monkeypatch):
    """The optimiser's vp step in the flow state x_t: 1/unit_scale(t0) times its size in unit coordinates
    (1 at full inversion, where x_1 is the noise itself)."""
    from iqa_map.core import map as M
    from iqa_map.core.priors.base import Prior

    class SteepBrightness(Prior):
        name = "steep"

        def _native(self, img):
            return 1000 * img.mean(dim=(1, 2, 3))

    den = from_velocity(TinyVelocity(c=3).double(), shift=3.0)
    img = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))

    def first_step(strength, units):
        seen, inner = [], edict.value_and_lazy_grad
        monkeypatch.setattr(edict, "value_and_lazy_grad", lambda d, params, *a, **k: (
            seen.append([p.clone() for p in params]), inner(d, params, *a, **k))[1])
        M.ascend(den, img, SteepBrightness(), steps=3, strength=strength, iterations=1, fidelity="none",
                 optimizer="momentum", lr=2.0, units=units)
        return float((seen[1][0] - seen[0][0]).abs().max()), float(den.sigmas(3, strength)[0])

    full, t_full = first_step(1.0, "vp")
    assert t_full == 1.0 and full == pytest.approx(2e-3, rel=1e-6)
    part, t0 = first_step(0.5, "vp")
    assert t0 < 1 and part == pytest.approx(2e-3 / den.unit_scale(t0), rel=1e-6)
    assert first_step(0.5, "ve")[0] == pytest.approx(2e-3, rel=1e-6)
