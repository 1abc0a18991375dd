"""NR-IQA priors: built-ins, CNNIQA, calibration, fusion, multi-scale, fidelity, inference mode."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from iqa_map.core import priors
from iqa_map.core.priors import Calibration, MultiScalePrior, fit_calibration, fit_constants, fuse, score_and_grad
from iqa_map.core.priors.calibration import read_image
from iqa_map.core.priors.distortions import distort

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEV = SHARED / "images" / "dev"
CALIB = SHARED / "iqa_calibration"
CNNIQA = SHARED / "weights" / "cnniqa_live_gray.safetensors"
needs_shared = pytest.mark.skipif(not DEV.is_dir(), reason=f"shared data not found at {SHARED} (../shared/data)")

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="module")
def loaded():
    """Each built-in (and CNNIQA, when its weights are present) loaded once."""
    out = {n: priors.load(n) for n in priors.BUILTINS}
    if CNNIQA.is_file():
        out["cnniqa"] = priors.load(f"cnniqa:{CNNIQA}")
    return out


def dev_images(n: int) -> list[torch.Tensor]:
    files = sorted(DEV.glob("*.png"))
    return [read_image(f) for f in files[:: len(files) // n][:n]]


def crop(img: torch.Tensor, size: int = 224) -> torch.Tensor:
    return img[..., :size, :size]


# ---- interface -------------------------------------------------------------------------
@needs_shared
@pytest.mark.parametrize("name", ["niqe", "brisque", "piqe", "cnniqa-builtin", "cnniqa"])
def test_prior_interface_and_determinism(loaded, name):
    p = loaded[name]
    img = torch.cat([crop(i) for i in dev_images(2)])
    s1, s2 = p(img), p(img)
    assert s1.shape == (2,) and torch.isfinite(s1).all()
    assert torch.equal(s1, s2), "same image must give the same score"
    assert torch.allclose(p(img[:1]), s1[:1], rtol=1e-3), "batching must not change a score (beyond float32 noise)"
    assert torch.allclose(p(img), -p.native(img) if p.lower_better else p.native(img))
    assert p.lower_better is True and isinstance(p.name, str) and len(p.native_range) == 2
    c = p.calibrated(img)
    assert ((c >= 0) & (c <= 100)).all()


@needs_shared
@pytest.mark.parametrize("name", ["niqe", "brisque", "piqe", "cnniqa-builtin", "cnniqa"])
def test_gradient_ascent_raises_score(loaded, name):
    """A few signed pixel-gradient steps must raise the (oriented) score on a real photo."""
    p = loaded[name]
    x = crop(dev_images(1)[0], 256)
    before = float(p(x))
    for _ in range(4):
        _, g = score_and_grad(p, x)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
        x = (x + 1e-3 * g.sign()).clamp(0, 1)
    assert float(p(x)) > before


@pytest.fixture(scope="module")
def distortion_scores(loaded):
    """Native scores of 5 dev photos (centre 321x320), clean and degraded at level 3: {prior: {kind: [(clean, bad), ...]}}."""
    out = {n: {k: [] for k in ("blur", "noise", "jpeg")} for n in ("niqe", "brisque", "piqe", "cnniqa-builtin")}
    with torch.no_grad():
        for img in dev_images(5):
            img = img[..., :, 80:400]  # 321x320: 3x3 NIQE blocks, 2/3 of the cost of the full photo
            clean = {n: loaded[n].native(img) for n in out}
            for kind in ("blur", "noise", "jpeg"):
                bad = distort(img, kind, 3)
                for n in out:
                    out[n][kind].append((clean[n], loaded[n].native(bad)))
    return out


@needs_shared
@pytest.mark.parametrize("kind", ["blur", "noise", "jpeg"])
def test_distortion_lowers_builtin_scores(loaded, distortion_scores, kind):
    """Each built-in (and the hybrid) scores >= 80 % of the degraded photos below the clean ones."""
    for name in ("niqe", "brisque", "piqe", "cnniqa-builtin", "hybrid-builtin"):
        if name == "hybrid-builtin":  # same arithmetic as load("hybrid-builtin"), from the cached scores
            def fused(i, which):
                cs = [loaded[n].calibration(distortion_scores[n][kind][i][which], True) * w
                      for n, w in priors.HYBRID_BUILTIN["members"]]
                return sum(cs) / sum(w for _, w in priors.HYBRID_BUILTIN["members"])
            pairs = [(fused(i, 0), fused(i, 1)) for i in range(5)]
        else:
            pairs = [(-c, -b) for c, b in distortion_scores[name][kind]]  # oriented: higher = better
        lowered = sum(float(b) < float(c) for c, b in pairs)
        assert lowered / len(pairs) >= 0.8, f"{name}: {kind} lowered the score on only {lowered}/{len(pairs)} images"


@needs_shared
def test_cnniqa_matches_documented_behaviour(loaded):
    """The README's measurements: clean ~23-26 DMOS, noise std 30 ~58-60 (higher = worse)."""
    p = loaded["cnniqa"]
    img = dev_images(1)[0]
    clean, noisy = float(p.native(img)), float(p.native(distort(img, "noise", 4)))
    assert 10 < clean < 40 and noisy > clean + 15


def test_cnniqa_builtin_ships_with_checksum():
    """The learned built-in loads from the package alone (no ../shared, no download) and matches its checksum."""
    import hashlib
    f = priors.CNNIQA_BUILTIN_FILE
    assert f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}" in f.with_suffix(".sha256").read_text()
    p = priors.load("cnniqa-builtin")
    assert p.name == "cnniqa-builtin" and p.lower_better and p.calibration is not None


@needs_shared
def test_cnniqa_builtin_is_local():
    """Patch-level: noise added to one half of a photo raises the damage predicted for that half only."""
    p = priors.load("cnniqa-builtin")
    img = crop(dev_images(1)[0], 128)
    bad = img.clone()
    bad[..., :, 64:] = distort(img[..., :, 64:], "noise", 3)
    with torch.no_grad():
        (clean_l, clean_r), (bad_l, bad_r) = ([float(p.native(x[..., :, :64])), float(p.native(x[..., :, 64:]))]
                                              for x in (img, bad))
    assert abs(bad_l - clean_l) < 1e-4, "the untouched half must score the same"
    assert bad_r > clean_r + 10, f"noise std 20 must read as damage: {clean_r:.1f} -> {bad_r:.1f}"


# ---- reference scores ----------------------------------------------------------------------
def _reference_rows() -> dict[str, list[float]]:
    with open(CALIB / "reference_scores.csv") as f:
        rows = list(csv.reader(f))
    return {r[0]: [float(v) for v in r[1:]] for r in rows[1:]}, rows[0][1:]


@pytest.mark.skipif(not CALIB.is_dir(), reason=f"calibration data not found at {CALIB}")
@pytest.mark.parametrize("name", ["niqe", "brisque", "piqe"])
def test_builtin_reproduces_reference_scores(loaded, name):
    """Within 2 % (absolute floor 0.01 for scores near 0) of pyiqa's row or the original's, per image."""
    ref, files = _reference_rows()
    ours = [float(loaded[name].native(read_image(CALIB / "dist_dir" / f))) for f in files]
    for i, f in enumerate(files):
        ok = [abs(ours[i] - ref[row][i]) <= 0.02 * abs(ref[row][i]) + 0.01 for row in (name, f"{name}(ours)")]
        assert any(ok), f"{name} on {f}: {ours[i]:.4f} vs original {ref[name][i]} / pyiqa {ref[name + '(ours)'][i]}"


# ---- inference mode ----------------------------------------------------------------------
@needs_shared
def test_gradients_under_inference_mode(loaded):
    p = loaded["brisque"]
    base = crop(dev_images(1)[0])
    with torch.inference_mode():
        inf_img = base.clone()  # an inference tensor, as in a ComfyUI node
        s, g = score_and_grad(p, inf_img)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
        x = base.clone().requires_grad_(True)
        score = p(x)
    score.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.allclose(s, p(base))


def test_prior_loaded_under_inference_mode_still_differentiable():
    with torch.inference_mode():
        p = priors.load("brisque")
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    p(x).sum().backward()
    assert x.grad.abs().sum() > 0


# ---- calibration ---------------------------------------------------------------------------
def test_calibration_monotone_and_direction_aware():
    cal = Calibration(C=5.0, S=2.0)
    s = torch.linspace(-10, 20, 61)
    up, down = cal(s, lower_better=False), cal(s, lower_better=True)
    assert (up.diff() > 0).all() and (down.diff() < 0).all()
    assert torch.allclose(up + down, torch.full_like(up, 100.0))
    assert float(cal(torch.tensor(5.0))) == pytest.approx(50.0)
    assert ((up >= 0) & (up <= 100)).all()


def test_fit_constants_maps_quantiles_to_25_75():
    scores = torch.arange(1.0, 101.0)
    cal = fit_constants(scores)
    lo, hi = torch.quantile(scores, torch.tensor([0.25, 0.75]))
    assert float(cal(hi)) == pytest.approx(75.0, abs=1e-4) and float(cal(lo)) == pytest.approx(25.0, abs=1e-4)
    assert float(cal(lo, lower_better=True)) == pytest.approx(75.0, abs=1e-4)
    with pytest.raises(ValueError, match="hardly vary"):
        fit_constants(torch.ones(10))


@needs_shared
def test_fit_calibration_on_folder_is_saved_and_reused(tmp_path):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(dev_images(3)):
        for kind in ("blur", "noise"):
            arr = (distort(crop(img, 128), kind, 1 + i) [0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            Image.fromarray(arr).save(folder / f"{i}_{kind}.png")
    p = priors.load("brisque")
    cal = fit_calibration(p, folder, save_to=tmp_path / "w")
    assert p.calibration == cal and (tmp_path / "w" / "iqa_map_calibration.json").is_file()
    again = priors.load("brisque", weights_dir=tmp_path / "w")
    assert again.calibration == cal
    assert priors.load("brisque").calibration != cal  # shipped defaults untouched
    from iqa_map.cli import main
    assert main(["calibrate", str(folder), "--prior", "brisque", "--weights-dir", str(tmp_path / "cli")]) == 0
    assert priors.load("brisque", weights_dir=tmp_path / "cli").calibration == cal


def test_shipped_calibrations_present():
    for name in ("liqe", "ms-liqe", "musiq", "clipiqa", "niqe", "brisque", "piqe", "cnniqa:cnniqa_live_gray"):
        assert priors.lookup_calibration(name) is not None, name
    assert priors.lookup_calibration("liqe") == Calibration(2.0776, 1.1019)


# ---- fusion and multi-scale ----------------------------------------------------------------
@needs_shared
def test_fusion_weights(loaded):
    a, b = loaded["brisque"], loaded["piqe"]
    img = torch.cat([crop(i, 128) for i in dev_images(3)])
    ca, cb = a.calibrated(img), b.calibrated(img)
    assert torch.allclose(fuse([(a, 1.0), (b, 0.0)])(img), ca)
    assert torch.allclose(fuse([(a, 2.0), (b, 2.0)])(img), (ca + cb) / 2, atol=1e-4)
    assert torch.allclose(fuse([(a, 3.0), (b, 1.0)])(img), 0.75 * ca + 0.25 * cb, atol=1e-4)
    mean = fuse([(a, 1), (b, 1)])(img)
    geo = fuse([(a, 1), (b, 1)], mode="geometric")(img)
    soft = fuse([(a, 1), (b, 1)], mode="softmin", temperature=5.0)(img)
    assert torch.allclose(geo, (ca * cb).sqrt(), rtol=1e-4) and (geo <= mean + 1e-4).all()
    assert (soft <= mean + 1e-4).all() and (soft >= torch.minimum(ca, cb) - 1e-4).all()
    with pytest.raises(ValueError, match="non-zero weight"):
        fuse([(a, 0.0)])


@needs_shared
def test_hybrid_builtin_and_multiscale(loaded):
    img = crop(dev_images(1)[0], 256)
    h = priors.load("builtin")
    assert h.name == "hybrid-builtin" and not h.lower_better
    assert 0 <= float(h(img)) <= 100 and torch.equal(h(img), h.calibrated(img))
    ms = MultiScalePrior(loaded["brisque"], scales=(1.0, 0.5))
    half = torch.nn.functional.interpolate(img, scale_factor=0.5, mode="bicubic", antialias=True)
    expected = (loaded["brisque"].native(img) + loaded["brisque"].native(half)) / 2
    assert torch.allclose(ms.native(img), expected)
    ms_loaded = priors.load("ms-brisque")
    assert ms_loaded.scales == (1.0, 0.75) and ms_loaded.calibration == loaded["brisque"].calibration
    _, g = score_and_grad(ms_loaded, img)
    assert g.abs().sum() > 0


# ---- names, local models, fidelity -------------------------------------------------------
def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match="niqe"):
        priors.load("nique")
    with pytest.raises(ValueError, match="Available"):
        priors.load("no-such-metric-at-all")
    with pytest.raises(ValueError, match="full-reference"):
        priors.load_fidelity("nique")
    assert {"niqe", "brisque", "piqe", "musiq", "liqe", "hybrid-builtin"} <= set(priors.available())
    assert "fid" not in priors.available()


def test_local_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        priors.load_local(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="does not hold 'cnniqa' weights"):
        priors.load(f"cnniqa:{tmp_path / 'bad.safetensors'}")


@needs_shared
@pytest.mark.parametrize("name", ["ssim", "nlpd"])
def test_fidelity_distance(name):
    f = priors.load_fidelity(name)
    x = crop(dev_images(1)[0], 128)
    y = distort(x, "noise", 3)
    same, far = f(x, x), f(y, x)
    assert same.shape == (1,) and float(same) < 1e-3 and float(far) > float(same)
    yg = y.clone().requires_grad_(True)
    f(yg, x).sum().backward()
    assert yg.grad.abs().sum() > 0


def test_one_answer_to_is_calibrated_for_fused_and_multiscale_priors():
    """A fused prior is calibrated (its native score is 0-100): it can be fused again and wrapped multi-scale,
    and every caller (comparable score, quality maps) treats it as calibrated."""
    from iqa_map.core import priors
    from iqa_map.core.map import comparable_score
    from iqa_map.core.quality.qmap import quality_map

    niqe, piqe = priors.load("niqe"), priors.load("piqe")
    fused = priors.fuse([(niqe, 1.0), (piqe, 1.0)])
    assert niqe.is_calibrated and fused.is_calibrated
    again = priors.fuse([(fused, 1.0), (niqe, 1.0)], mode="softmin")
    ms = priors.MultiScalePrior(fused)
    assert again.is_calibrated and ms.is_calibrated
    img = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(ms.calibrated(img), ms.native(img))
        assert torch.allclose(comparable_score(fused, img), fused.native(img))
        assert 0 <= float(again.calibrated(img)) <= 100
        m = quality_map(ms, img, window=48, stride=48, normalise="absolute")
    assert m.badness.shape == (1, 1, 96, 96)
    niqe_raw = priors.load("niqe")
    niqe_raw.calibration = None
    assert not niqe_raw.is_calibrated
    with pytest.raises(ValueError, match="no calibration"):
        priors.fuse([(niqe_raw, 1.0), (piqe, 1.0)])
