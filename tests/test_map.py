"""Latent MAP ascent: the loop's guarantees, the latent (VAE) path, and real behaviour on a photo."""
import math

import pytest
import torch

from iqa_map.core.sampling import edict
from iqa_map.core import map as M
from iqa_map.core.models import from_diffusers
from iqa_map.core.models.codec import VAECodec
from iqa_map.core.priors.base import Prior

from helpers import dev_photo
from tiny_models import pixel_unet, sd_scheduler, sd_unet, sd_vae


class Brightness(Prior):
    """Toy prior: mean intensity (higher = better). Cheap and smooth."""

    name = "brightness"

    def _native(self, img):
        return img.mean(dim=(1, 2, 3))


class Darkness(Prior):
    name = "darkness"

    def _native(self, img):
        return 100 * (1 - img.mean(dim=(1, 2, 3)))


class FlakyBrightness(Brightness):
    """Returns NaN on its third evaluation, as a broken metric might."""

    name = "flaky"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def _native(self, img):
        self.calls += 1
        s = super()._native(img)
        return s * float("nan") if self.calls == 3 else s


def _pixel_model():
    return from_diffusers(pixel_unet(), sd_scheduler())


def _img(seed=0, size=16):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 0.6 + 0.2


FAST = dict(steps=3, strength=0.3, iterations=4, fidelity="mse", fidelity_weight=1.0, lr=0.01, optimizer="adam")


def test_ascent_raises_objective_and_is_deterministic():
    den, x = _pixel_model(), _img()
    a = M.ascend(den, x, Brightness(), **FAST, perturb=1e-3, seed=7)
    b = M.ascend(den, x, Brightness(), **FAST, perturb=1e-3, seed=7)
    h = a.report["history"]
    assert h[-1]["objective"] > h[0]["objective"]
    assert a.report["output_scores"]["brightness"] > a.report["input_scores"]["brightness"]
    assert torch.equal(a.image, b.image)
    assert [e["objective"] for e in h] == [e["objective"] for e in b.report["history"]]
    c = M.ascend(den, x, Brightness(), **FAST, perturb=1e-3, seed=8)
    assert not torch.equal(a.image, c.image)


def test_report_has_every_field():
    r = M.ascend(_pixel_model(), _img(), Brightness(), **FAST).report
    for key in ("settings", "history", "inversion_error", "denoiser_evals", "wall_seconds", "peak_memory_bytes",
                "input_scores", "output_scores", "psnr_vs_input", "ssim_vs_input"):
        assert key in r, key
    assert len(r["history"]) == FAST["iterations"] + 1
    assert r["inversion_error"] < 1e-5
    # inversion 2 per step, then per iteration 2 forward + 2 backward per step; the iterate that ends the run
    # is only evaluated (its gradient would be unused).
    assert r["denoiser_evals"] == 2 * 3 + FAST["iterations"] * 4 * 3 + 2 * 3
    assert r["settings"]["prior"] == "brightness"


def test_hack_guard_fires_and_keeps_pre_hack_iterate():
    res = M.ascend(_pixel_model(), _img(), Brightness(), **{**FAST, "iterations": 8, "lr": 0.2},
                   monitors=[Darkness()], hack_margin=0.5)
    r = res.report
    assert any("hack guard" in e for e in r["events"]), r["events"]
    stopped = next(e for e in r["history"] if "hack guard" in e.get("event", ""))
    assert r["best_iteration"] < stopped["iteration"]
    assert len(r["history"]) < 9
    warn = M.ascend(_pixel_model(), _img(), Brightness(), **{**FAST, "iterations": 8, "lr": 0.2},
                    monitors=[Darkness()], hack_margin=0.5, on_hack="warn")
    assert len(warn.report["history"]) == 9 and any("hack guard" in e for e in warn.report["events"])


class NearBrightness(Prior):
    """Toy monitor that peaks at one brightness: it rises, then falls as the ascent overshoots."""

    name = "near"

    def __init__(self, level):
        super().__init__()
        self.level = level

    def _native(self, img):
        return 100 - 1000 * (img.mean(dim=(1, 2, 3)) - self.level).abs()


def test_peak_referenced_hack_guard_catches_a_judge_that_rises_then_falls():
    x = _img()
    monitor = NearBrightness(float(x.mean()) + 0.03)  # 70 at the start, 100 at +0.03
    run = dict(iterations=6, fidelity="mse", fidelity_weight=1.0, lr=0.01, optimizer="adam",
               monitors=[monitor], hack_margin=10.0)
    start = M.ascend_pixels(x, Brightness(), **run, hack_reference="start").report
    peak = M.ascend_pixels(x, Brightness(), **run).report  # the default
    # The run overshoots the monitor's peak, but never falls 10 points below where the monitor started ...
    near = [e["monitors"]["near"] for e in start["history"]]
    assert max(near) > near[0] + 10 and near[-1] < max(near) - 10 and min(near) >= near[0] - 10
    assert not any("hack guard" in e for e in start["events"]) and len(start["history"]) == 7
    # ... so only the peak reference stops it, and keeps an iterate from before the fall.
    stopped = next(e for e in peak["history"] if "hack guard" in e.get("event", ""))
    assert "from its peak" in stopped["event"]
    assert peak["best_iteration"] < stopped["iteration"] < 6
    kept = peak["history"][peak["best_iteration"]]["monitors"]["near"]
    assert kept > max(near) - 10


def test_nan_guard_reverts_and_says_so():
    res = M.ascend(_pixel_model(), _img(), FlakyBrightness(), **FAST)
    r = res.report
    assert any("non-finite" in e for e in r["events"])
    assert torch.isfinite(res.image).all()
    assert all(math.isfinite(e["objective"]) for e in r["history"] if "event" not in e)


def test_works_under_inference_mode():
    den = _pixel_model()
    ref = M.ascend(den, _img(), Brightness(), **FAST)
    with torch.inference_mode():
        x = _img()
        res = M.ascend(den, x, Brightness(), **FAST)
    assert torch.allclose(res.image, ref.image)


def test_callback_can_interrupt():
    seen = []

    def cb(info):
        seen.append(info["iteration"])
        if info["iteration"] == 1:
            raise M.Interrupted("user pressed cancel")

    with pytest.raises(M.Interrupted):
        M.ascend(_pixel_model(), _img(), Brightness(), **FAST, callback=cb)
    assert seen == [0, 1]


def test_sd_architecture_latent_model_full_loop_64px():
    """Random-weight SD-style UNet + VAE from diffusers configs, 64x64 photo, text conditioning."""
    codec = VAECodec(sd_vae("tiny").eval().requires_grad_(False))
    assert codec.factor == 8 and codec.scale == pytest.approx(0.18215)
    den = from_diffusers(sd_unet(), sd_scheduler())
    x = _img(size=60)  # not a multiple of 8: padded and cropped back
    res = M.ascend(den, x, Brightness(), steps=2, strength=0.5, iterations=2, fidelity="mse", lr=0.01,
                   codec=codec, cond=torch.randn(1, 6, 32))
    assert res.image.shape == x.shape
    assert torch.isfinite(res.image).all()
    assert len(res.report["history"]) == 3
    assert res.pair[0].shape == (1, 4, 8, 8)
    # The sampler's round trip is exact; the (random) VAE's is not, and is reported apart from it.
    assert res.report["inversion_error"] < 1e-5
    assert res.report["codec_error"] > 0.1


class SteepBrightness(Brightness):
    """Brightness x 1000: gradients large enough that the momentum update's clip binds everywhere."""

    name = "steep"

    def _native(self, img):
        return 1000 * img.mean(dim=(1, 2, 3))


def _first_step(monkeypatch, **settings):
    """The VE pair the sampler sees at iterates 0 and 1."""
    seen, inner = [], edict.value_and_lazy_grad
    monkeypatch.setattr(edict, "value_and_lazy_grad", lambda den, params, *a, **k: (
        seen.append([p.clone() for p in params]), inner(den, params, *a, **k))[1])
    M.ascend(_pixel_model(), _img(), SteepBrightness(), steps=4, strength=1.0, iterations=1, fidelity="none",
             optimizer="momentum", lr=2.0, **settings)
    return seen[1][0] - seen[0][0]


def test_momentum_steps_are_in_variance_preserving_units(monkeypatch):
    """The recipe's step (lr 2 x clip 1e-3 per element) is in SD's unit-scale latent, i.e. sqrt(1 + sigma0^2)
    times larger in the sampler's VE coordinates; units="ve" takes it in VE coordinates."""
    sigma0 = float(_pixel_model().sigmas(4, 1.0)[0])
    assert sigma0 > 4  # SD's schedule at 4 steps (diffusers' leading spacing) starts at t = 751
    vp, ve = _first_step(monkeypatch), _first_step(monkeypatch, units="ve")
    assert float(ve.abs().max()) == pytest.approx(2e-3, rel=1e-6)
    assert float(vp.abs().max()) == pytest.approx(2e-3 * math.sqrt(1 + sigma0 ** 2), rel=1e-6)
    assert M.vp_scale(sigma0) == pytest.approx(1 / math.sqrt(1 + sigma0 ** 2))


def test_units_change_the_step_not_the_objective():
    """Adam is invariant to the gradient's scale, so VP units at lr * scale retrace VE units at lr: the
    reparametrisation changes only how far a step goes."""
    den, x = _pixel_model(), _img()
    scale = M.vp_scale(den.sigmas(3, 1.0)[0])
    kw = {**FAST, "strength": 1.0, "iterations": 3}
    ve = M.ascend(den, x, Brightness(), **{**kw, "units": "ve"})
    vp = M.ascend(den, x, Brightness(), **{**kw, "lr": FAST["lr"] * scale})
    assert [e["objective"] for e in vp.report["history"]] == pytest.approx(
        [e["objective"] for e in ve.report["history"]], rel=1e-4)
    assert torch.allclose(vp.pair[0], ve.pair[0], atol=1e-4 * float(ve.pair[0].abs().max()))
    with pytest.raises(ValueError, match="units"):
        M.ascend(den, x, Brightness(), **{**kw, "units": "pixels"})


def test_report_records_the_learning_rate_taken():
    den, x, kw = _pixel_model(), _img(), {**FAST, "iterations": 0, "lr": None}
    assert M.ascend(den, x, Brightness(), **kw).report["settings"]["lr"] == 0.003  # adam's own
    assert M.ascend(den, x, Brightness(), **{**kw, "optimizer": "momentum"}).report["settings"]["lr"] == 2.0
    assert M.ascend(den, x, Brightness(), **{**kw, "optimizer": "momentum", "lr": 1.0}).report["settings"]["lr"] == 1.0
    assert M.ascend_pixels(x, Brightness(), **{**kw, "optimizer": "momentum"}).report["settings"]["lr"] == 2.0


def test_cosine_schedule_anneals_each_step():
    """Adam on a constant-sign gradient moves every pixel by lr per step, so the steps trace the schedule."""
    from iqa_map.core.map.optim import lr_factor

    def steps(schedule):
        seen = []
        M.ascend_pixels(_img(), SteepBrightness(), **{**FAST, "fidelity": "none", "lr_schedule": schedule},
                        callback=lambda info: seen.append(info["image"].clone()))
        return [float((b - a).mean()) for a, b in zip(seen, seen[1:])]

    n = FAST["iterations"]
    assert steps("constant") == pytest.approx([FAST["lr"]] * n, rel=1e-3)
    cosine = [FAST["lr"] * lr_factor("cosine", k, n) for k in range(n)]
    assert cosine[0] == FAST["lr"] and cosine == sorted(cosine, reverse=True) and cosine[-1] < 0.2 * FAST["lr"]
    assert steps("cosine") == pytest.approx(cosine, rel=1e-3)
    with pytest.raises(ValueError, match="lr_schedule"):
        M.ascend_pixels(_img(), Brightness(), **{**FAST, "lr_schedule": "step"})


def test_pixel_baseline_runs_the_same_objective():
    x = _img()
    r = M.ascend_pixels(x, Brightness(), **FAST).report
    assert r["history"][-1]["objective"] > r["history"][0]["objective"]
    assert r["denoiser_evals"] == 0


def test_bad_input_is_rejected_clearly():
    with pytest.raises(ValueError, match="RGB image batch"):
        M.ascend(_pixel_model(), torch.rand(3, 16, 16), Brightness())
    with pytest.raises(ValueError, match="NaN"):
        M.ascend(_pixel_model(), torch.full((1, 3, 16, 16), float("nan")), Brightness())
    with pytest.raises(ValueError, match="fidelity"):
        M.ascend(_pixel_model(), _img(), Brightness(), fidelity="l7")
    with pytest.raises(ValueError, match="optimizer must be one of adam, momentum"):
        M.ascend(_pixel_model(), _img(), Brightness(), optimizer="lbfgs", iterations=1)
    with pytest.raises(ValueError, match="hack_reference"):
        M.ascend(_pixel_model(), _img(), Brightness(), hack_reference="end")


@pytest.mark.slow
def test_builtin_model_and_builtin_prior_enhance_a_real_photo():
    from iqa_map.core import priors
    from iqa_map.core.models import load_builtin

    x = (dev_photo(crop=96, dtype=torch.float32) + 1) / 2
    noisy = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    prior = priors.load("niqe")
    res = M.ascend(load_builtin(), noisy, prior, steps=4, strength=0.4, iterations=4, fidelity="mse", lr=0.002)
    r = res.report
    h = r["history"]
    assert r["best_iteration"] > 0
    best = h[r["best_iteration"]]
    assert best["objective"] > h[0]["objective"] and best["score"] > h[0]["score"]
    assert r["output_scores"]["niqe"] < r["input_scores"]["niqe"]  # NIQE: lower is better
    assert r["psnr_vs_input"] > 25


def test_pixel_baseline_with_nlpd_starts_finite():
    """At x == x_init NLPD's sqrt has no gradient; the fidelity must give 0, not NaN."""
    x = _img(size=32)
    r = M.ascend_pixels(x, Brightness(), iterations=2, fidelity="nlpd", lr=0.003).report
    assert not r["events"]
    assert all(math.isfinite(e["objective"]) for e in r["history"])
    assert r["history"][-1]["fidelity"] > 0


def test_smooth_nlpd_matches_pyiqa_and_has_a_gradient_at_zero():
    from pyiqa.archs.nlpd_arch import NLPD

    from iqa_map.core.map.objective import SmoothNLPD

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g)
    y = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert torch.allclose(SmoothNLPD()(y, x), NLPD()(y, x), atol=1e-5)
    z = x.clone().requires_grad_(True)
    SmoothNLPD()(z, x).sum().backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("name", ["nlpd", "mse", "ssim"])
def test_fidelity_weights_above_one_add_a_hold_without_loosening_the_rest(name):
    """A weight > 1 on one half adds to the penalty of changes there and leaves the other half's cost alone.

    Scaling the deviation inside NLPD's band norm instead would make a change in the
    weight-1 half cheaper once the other half has moved (sqrt of the band mean).
    """
    from iqa_map.core.map.objective import Fidelity

    g = torch.Generator().manual_seed(1)
    ref = torch.rand(1, 3, 64, 64, generator=g)
    left = torch.zeros(1, 1, 64, 64)
    left[..., :32] = 1
    w = 1 + 4 * (1 - left)  # 1 on the left half, 5 on the right
    step = 0.03 * torch.randn(ref.shape, generator=g)
    moved_right = (ref + step * (1 - left)).clamp(0, 1)
    both = (moved_right + step * left).clamp(0, 1)
    uni, held = Fidelity(name), Fidelity(name, weight_map=w)
    assert float(held(ref, ref)) == pytest.approx(0.0, abs=1e-5)
    assert float(held(moved_right, ref)) > 1.5 * float(uni(moved_right, ref))  # the right half is held tighter
    # The marginal cost of also moving the left half is the uniform one, or more: never less.
    extra_uni = float(uni(both, ref) - uni(moved_right, ref))
    extra_held = float(held(both, ref) - held(moved_right, ref))
    assert extra_held >= 0.95 * extra_uni > 0
    assert torch.allclose(Fidelity(name, weight_map=torch.ones(1, 1, 64, 64))(both, ref), uni(both, ref))


def _step(it, score, monitors=None):
    return M.Step(iteration=it, objective=score, score=score, fidelity=0.0, seconds=0.0, image=torch.zeros(1),
                  monitors=monitors)


def test_hack_guard_function_fires_only_when_the_monitor_falls_while_the_prior_rises():
    from iqa_map.core.map.loop import hack_guard

    s = M.MapSettings(hack_margin=1.0, hack_reference="start")
    ref, msg = hack_guard(_step(0, 50.0, {"judge": 40.0}), None, s, "p")
    assert msg is None and ref == {"judge": (40.0, 50.0)}
    assert hack_guard(_step(1, 49.0, {"judge": 30.0}), ref, s, "p")[1] is None  # the prior fell too: no hack
    assert hack_guard(_step(1, 55.0, {"judge": 39.5}), ref, s, "p")[1] is None  # within the margin
    _, msg = hack_guard(_step(2, 55.0, {"judge": 38.0}), ref, s, "p")
    assert msg == "iteration 2: hack guard: 'p' rose while monitor(s) 'judge' fell by 2.0 from the start"
    peak = M.MapSettings(hack_margin=1.0, hack_reference="peak")
    ref, _ = hack_guard(_step(1, 52.0, {"judge": 45.0}), ref, peak, "p")  # the reference follows the judge up
    assert ref == {"judge": (45.0, 52.0)}
    assert "from its peak" in hack_guard(_step(2, 53.0, {"judge": 43.0}), ref, peak, "p")[1]


def test_early_stop_and_nan_revert_functions():
    from iqa_map.core.map.loop import Best, early_stop, revert

    s = M.MapSettings(target=60.0, patience=2)
    assert early_stop(_step(3, 61.0), s, 5) == "target 60.0 reached"  # the target is named first
    assert early_stop(_step(3, 59.0), s, 2) == "no improvement for 2 iterations"
    assert early_stop(_step(3, 59.0), s, 1) is None
    events, step = [], _step(4, float("nan"))
    assert revert(step, events, None, 1)  # nothing to revert to: stop
    assert step.event == events[0] and "(iteration None)" in events[0] and events[-1].startswith("stopped")
    best = Best(_step(2, 10.0), [torch.zeros(1)])
    events = []
    assert not revert(_step(5, float("nan")), events, best, 2) and "(iteration 2)" in events[0]
    assert revert(_step(6, float("nan")), events, best, 4)  # the fourth revert stops the run


def test_step_records_are_the_history_and_the_loop_returns_them():
    res = M.ascend(_pixel_model(), _img(), Brightness(), **FAST, monitors=[Darkness()], hack_margin=100.0)
    h = res.report["history"]
    assert list(h[0]) == ["iteration", "objective", "score", "fidelity", "seconds", "monitors"]
    assert all(isinstance(e["score"], float) and set(e["monitors"]) == {"darkness"} for e in h)
    assert res.report.best_iteration == max(h, key=lambda e: e["objective"])["iteration"]


def test_adaptive_prior_is_resolved_at_the_entry_not_in_the_math(monkeypatch):
    """A named quality-map prior is loaded once by the entry point; one passed in is used as is."""
    from iqa_map.core import priors

    loads = []
    monkeypatch.setattr(priors, "load", lambda name, **kw: loads.append(name) or Brightness())
    s = M.MapSettings(**FAST, adaptive_fidelity="niqe", adaptive_window=8, adaptive_stride=4)
    assert M.resolve_adaptive_prior(Darkness(), s, "cpu") is not None and loads == ["niqe"]
    assert M.resolve_adaptive_prior(Darkness(), M.MapSettings(), "cpu") is None
    own = Brightness()
    assert M.resolve_adaptive_prior(Darkness(), s, "cpu", own) is own and loads == ["niqe"]
    M.ascend(_pixel_model(), _img(size=24), Brightness(), s, adaptive_prior=own)
    assert loads == ["niqe"]  # given: nothing loaded
    M.ascend(_pixel_model(), _img(size=24), Brightness(), s)
    assert loads == ["niqe", "niqe"]  # by name: loaded once, at the entry
