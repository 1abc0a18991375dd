"""Exact EDICT inversion, DDIM parity with diffusers, and constant-memory gradients."""
import pytest
import torch
from diffusers import DDIMScheduler

from iqa_map.core.sampling import ddim, edict
from iqa_map.core.models import from_denoiser, from_diffusers
from iqa_map.core.models.archs import load_bfcnn

from helpers import BFCNN, dev_photo, need_shared, rel
from tiny_models import ddpm_scheduler, pixel_unet, sd_scheduler, sd_unet

TOL = {torch.float64: 1e-8, torch.float32: 1e-4}


def _text(dtype, b=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 6, 32, generator=g).to(dtype), torch.randn(b, 6, 32, generator=g).to(dtype) * 0.1


def _cases():
    """(name, denoiser factory, input factory, cond factory) for each kind of model."""
    def pix(pred):
        return lambda dt: from_diffusers(pixel_unet().to(dt), ddpm_scheduler(pred))

    def sd(pred, guidance):
        return lambda dt: from_diffusers(sd_unet().to(dt), sd_scheduler(pred), guidance=guidance)

    def img(dt):
        return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)).to(dt) * 2 - 1

    def lat(dt):
        return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).to(dt)

    def cond(dt):
        pos, neg = _text(dt)
        return {"positive": pos, "negative": neg}

    none = lambda dt: None  # noqa: E731
    return {
        "unet-eps": (pix("epsilon"), img, none),
        "unet-v": (pix("v_prediction"), img, none),
        "sd-eps-text": (sd("epsilon", 1.0), lat, cond),
        "sd-eps-cfg3": (sd("epsilon", 3.0), lat, cond),
        "sd-v-cfg2": (sd("v_prediction", 2.0), lat, cond),
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_edict_reconstructs_diffusers_models(case, dtype, strength):
    make_den, make_x, make_cond = _cases()[case]
    den, x, cond = make_den(dtype), make_x(dtype), make_cond(dtype)
    sig = den.sigmas(8, strength)
    pair = edict.invert(den, x, sig, cond=cond)
    out = edict.sample(den, pair, sig, cond=cond, grad=None)
    err = max(rel(out[0], x), rel(out[1], x))
    assert err <= TOL[dtype], f"{case}: EDICT reconstruction error {err:.2e}"
    # The latent is a different point, not the image (the inversion did something).
    assert rel(pair[0], x) > 1e-2


@pytest.mark.parametrize("case", list(_cases()))
def test_edict_reconstructs_in_pure_float32(case):
    """Everything float32, latent pair included (state_dtype=float32), at SD-like noise levels."""
    make_den, make_x, make_cond = _cases()[case]
    den, x, cond = make_den(torch.float32), make_x(torch.float32), make_cond(torch.float32)
    # The pixel UNet's linear-beta schedule reaches sigma ~157; cap it near SD's 14.6.
    sig = den.sigmas(8, 1.0 if case.startswith("sd") else 0.6)
    pair = edict.invert(den, x, sig, cond=cond, state_dtype=torch.float32)
    assert pair[0].dtype == torch.float32
    out = edict.sample(den, pair, sig, cond=cond, grad=None)
    assert out[0].dtype == torch.float32
    assert rel(out[0], x) <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_edict_reconstructs_real_photo_with_pretrained_denoiser(dtype):
    need_shared(BFCNN)
    den = from_denoiser(load_bfcnn(BFCNN, dtype=dtype), 0, 100 / 255, residual=True)
    x = dev_photo(crop=48, dtype=dtype)
    sig = den.sigmas(10)
    out = edict.sample(den, edict.invert(den, x, sig), sig, grad=None)
    err = rel(out[0], x)
    ddim_err = rel(ddim.sample(den, ddim.invert(den, x, sig), sig), x)
    print(f"\n[{dtype}] EDICT reconstruction {err:.2e}, DDIM inversion {ddim_err:.2e}")
    assert err <= TOL[dtype]
    assert ddim_err > 100 * max(err, 1e-7), "DDIM inversion should be far less exact than EDICT"


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_matches_diffusers_scheduler(pred, spacing):
    # "linspace" is left out on purpose: there diffusers' DDIMScheduler steps to
    # t - T/N, not to the next listed timestep; the core follows the listed schedule.
    unet = pixel_unet()
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                          prediction_type=pred, timestep_spacing=spacing, steps_offset=1)
    den = from_diffusers(unet, sched)
    steps = 10
    ref_sched = DDIMScheduler.from_config(sched.config)
    ref_sched.set_timesteps(steps)
    x_vp = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    ref = x_vp.clone()
    with torch.no_grad():
        for t in ref_sched.timesteps:
            out = unet(ref, t).sample
            ref = ref_sched.step(out, t, ref, eta=0.0).prev_sample

    sig = den.sigmas(steps)
    assert len(sig) == steps + 1
    # VE start: x = x_vp / sqrt(alpha_bar) = x_vp * sqrt(1 + sigma^2).
    with torch.no_grad():
        ours = ddim.sample(den, x_vp * (1 + sig[0] ** 2) ** 0.5, sig)
    # diffusers' last step lands on final_alpha_cumprod; back to VP coordinates there.
    ours_vp = ours / (1 + sig[-1] ** 2) ** 0.5
    assert rel(ours_vp, ref) <= 1e-5


def test_sigmas_follow_scheduler_and_strength():
    den = from_diffusers(pixel_unet(), sd_scheduler())
    s = den.sigmas(10)
    assert s.dtype == torch.float64 and len(s) == 11
    assert torch.all(s[1:] < s[:-1])
    ref = DDIMScheduler.from_config(sd_scheduler().config)
    ref.set_timesteps(10)
    ac = ref.alphas_cumprod.double()
    expect = ((1 - ac[ref.timesteps]) / ac[ref.timesteps]).sqrt()
    assert torch.allclose(s[:-1], expect)
    # Partial inversion: same number of steps, starting lower, and the tail of a longer schedule.
    half = den.sigmas(10, strength=0.5)
    assert len(half) == 11 and half[0] < s[0]
    assert torch.allclose(half, den.sigmas(20)[-11:])
    with pytest.raises(ValueError, match="strength"):
        den.sigmas(10, strength=0.0)
    with pytest.raises(ValueError, match="steps"):
        den.sigmas(0)


def _loss(a, b):
    w = torch.linspace(-1, 1, a.numel(), dtype=a.dtype).reshape(a.shape)
    return (a * w).sum() + 0.5 * (b ** 2).mean()


@pytest.mark.parametrize("case", ["unet-eps", "sd-v-cfg2"])
def test_reversible_gradients_equal_autograd(case):
    make_den, make_x, make_cond = _cases()[case]
    den, x, cond = make_den(torch.float64), make_x(torch.float64), make_cond(torch.float64)
    sig = den.sigmas(6)
    pair = edict.invert(den, x, sig, cond=cond)
    l1, g1 = edict.value_and_grad(den, pair, sig, _loss, cond=cond, grad="reversible")
    l2, g2 = edict.value_and_grad(den, pair, sig, _loss, cond=cond, grad="autograd")
    assert torch.allclose(l1, l2, rtol=1e-12)
    assert rel(g1[0], g2[0]) < 1e-5 and rel(g1[1], g2[1]) < 1e-5
    assert g2[0].abs().sum() > 0 and g2[1].abs().sum() > 0


def test_reversible_gradients_real_denoiser_and_inference_mode():
    need_shared(BFCNN)
    den = from_denoiser(load_bfcnn(BFCNN, dtype=torch.float64), 0, 100 / 255, residual=True)
    x = dev_photo(crop=32)
    sig = den.sigmas(5, strength=0.6)
    pair = edict.invert(den, x, sig)
    _, ref = edict.value_and_grad(den, pair, sig, _loss, grad="autograd")
    _, rev = edict.value_and_grad(den, pair, sig, _loss, grad="reversible")
    assert rel(rev[0], ref[0]) < 1e-5 and rel(rev[1], ref[1]) < 1e-5
    # ComfyUI calls nodes under inference mode with inference tensors.
    with torch.inference_mode():
        xi = x.clone()
        assert xi.is_inference()
        pair_i = edict.invert(den, xi, sig)
        _, g_i = edict.value_and_grad(den, pair_i, sig, _loss, grad="reversible")
        out_i = edict.sample(den, pair_i, sig, grad=None)
    assert rel(g_i[0], ref[0]) < 1e-5 and rel(g_i[1], ref[1]) < 1e-5
    assert rel(out_i[0], x) < 1e-8


def test_sample_with_grad_through_autograd_function():
    """``sample(grad="reversible")`` composes with ordinary autograd code around it."""
    make_den, make_x, _ = _cases()["unet-eps"]
    den, x = make_den(torch.float64), make_x(torch.float64)
    sig = den.sigmas(4)
    zx, zy = edict.invert(den, x, sig)
    zx.requires_grad_(True)
    zy.requires_grad_(True)
    out = edict.sample(den, (zx * 1.0, zy), sig, grad="reversible")
    _loss(*out).backward()
    _, ref = edict.value_and_grad(den, (zx.detach(), zy.detach()), sig, _loss, grad="autograd")
    assert rel(zx.grad, ref[0]) < 1e-5 and rel(zy.grad, ref[1]) < 1e-5


def test_bad_arguments_are_clear():
    den = from_diffusers(pixel_unet(), ddpm_scheduler())
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="decreasing"):
        edict.invert(den, x, [0.0, 1.0])
    with pytest.raises(ValueError, match="mix"):
        edict.invert(den, x, den.sigmas(2), mix=0.2)
    with pytest.raises(ValueError, match="grad"):
        edict.sample(den, (x, x), den.sigmas(2), grad="magic")
    sd = from_diffusers(sd_unet(), sd_scheduler())
    with pytest.raises(ValueError, match="text-conditioned"):
        sd(torch.zeros(1, 4, 8, 8), 1.0)
    cfg = from_diffusers(sd_unet(), sd_scheduler(), guidance=4.0)
    with pytest.raises(ValueError, match="negative"):
        cfg(torch.zeros(1, 4, 8, 8), 1.0, {"positive": torch.zeros(1, 6, 32)})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cuda(dtype):
    den = from_diffusers(pixel_unet().to("cuda", dtype), ddpm_scheduler())
    x = torch.rand(1, 3, 16, 16, device="cuda") * 2 - 1
    sig = den.sigmas(6)
    out = edict.sample(den, edict.invert(den, x, sig), sig, grad=None)
    assert torch.isfinite(out[0]).all()
    assert rel(out[0], x) < 5e-2
