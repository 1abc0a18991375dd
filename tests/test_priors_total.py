"""Every prior is total: a finite score and gradient for flat, degenerate and elongated images.

The flat-image cases crash or give NaN with pyiqa's NIQE/BRISQUE and the earlier PIQE
(SVD failure, an assertion, 0/0); the seeded fuzz test covers sizes from each prior's
minimum up, aspect ratios to 1:30 and five kinds of content.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from iqa_map.core import priors
from iqa_map.core.priors.base import textureless
from iqa_map.core.quality.qmap import quality_map

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHOTO = SHARED / "images" / "dev" / "101085.png"
CNNIQA = SHARED / "weights" / "cnniqa_live_gray.safetensors"
needs_photo = pytest.mark.skipif(not PHOTO.is_file(), reason=f"shared data not found at {PHOTO}")
BUILTIN = ("niqe", "brisque", "piqe", "cnniqa-builtin", "hybrid-builtin")


@pytest.fixture(scope="module")
def loaded():
    out = {n: priors.load(n) for n in BUILTIN + ("ms-niqe", "ms-brisque")}
    out["geometric"] = priors.fuse([(out["niqe"], 1.0), (out["piqe"], 1.0)], mode="geometric")
    out["softmin"] = priors.fuse([(out["brisque"], 1.0), (out["cnniqa-builtin"], 2.0)], mode="softmin")
    if CNNIQA.is_file():
        out["cnniqa"] = priors.load(f"cnniqa:{CNNIQA}")
    return out


def content(kind: str, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """One synthetic [1,3,h,w] image of a named kind."""
    rand = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    if kind == "constant":
        return rand(1, 3, 1, 1).expand(1, 3, h, w).clone()
    if kind == "near-constant":  # one small textured patch on a flat field
        x = rand(1, 3, 1, 1).expand(1, 3, h, w).clone()
        p = max(4, min(h, w) // 8)
        top, left = int(rand(1) * (h - p)), int(rand(1) * (w - p))
        x[..., top:top + p, left:left + p] = rand(1, 3, p, p)
        return x
    if kind == "gradient":
        ramp = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(1, 3, h, w)
        return (ramp * rand(1, 3, 1, 1)).clone()
    if kind == "checkerboard":
        cell = 1 + int(rand(1) * 16)
        yy, xx = torch.meshgrid(torch.arange(h) // cell, torch.arange(w) // cell, indexing="ij")
        return (((yy + xx) % 2).float() * 0.8 + 0.1).expand(1, 3, h, w).clone()
    if kind == "noise":
        return rand(1, 3, h, w)
    raise ValueError(kind)


def named_cases(h: int = 200, w: int = 240) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    two_tone = torch.full((1, 3, h, w), 0.2)
    two_tone[..., w // 2:] = 0.8
    dark = torch.rand(1, 3, h, w, generator=gen) * 0.02
    saturated = torch.rand(1, 3, h, w, generator=gen).mul(3).clamp(0, 1)  # mostly clipped to white
    return {"constant grey": torch.full((1, 3, h, w), 0.5), "black": torch.zeros(1, 3, h, w),
            "white": torch.ones(1, 3, h, w), "near-constant": content("near-constant", h, w, gen),
            "two-tone": two_tone, "saturated": saturated, "very dark": dark,
            "noise": torch.rand(1, 3, h, w, generator=gen)}


def score_grad(prior, img):
    x = img.clone().requires_grad_(True)
    s = prior.calibrated(x) if prior.calibration is not None or hasattr(prior, "priors") else prior(x)
    (g,) = torch.autograd.grad(s.sum(), x)
    return s.detach(), g


@pytest.mark.parametrize("name", BUILTIN + ("ms-niqe", "ms-brisque", "geometric", "softmin", "cnniqa"))
def test_finite_score_and_gradient_on_degenerate_images(loaded, name):
    if name not in loaded:
        pytest.skip(f"CNNIQA weights not found at {CNNIQA}")
    for case, img in named_cases().items():
        s, g = score_grad(loaded[name], img)
        assert torch.isfinite(s).all(), f"{name} on {case}: score {s}"
        assert torch.isfinite(g).all(), f"{name} on {case}: non-finite gradient"


@pytest.mark.parametrize("name", ["niqe", "brisque"])
def test_a_flat_image_scores_the_calibration_centre(loaded, name):
    """No texture to judge: calibrated 50 (a typical photo), never a crash, NaN or automatic 'worst'.

    0.5 and 0.7 put the luma on a rounding boundary (127.5, 178.5 of 255): a size under the
    prior's minimum is resized first, whose float error then rounds to two tones."""
    p = loaded[name]
    for value in (0.0, 0.5, 0.7, 0.73, 1.0):
        for size in ((200, 200), (128, 128), (97, 143)):
            img = torch.full((1, 3, *size), value)
            assert float(p.native(img)) == pytest.approx(p.flat_score), (value, size)
            assert float(p.calibrated(img)) == pytest.approx(50.0, abs=1e-3), (value, size)
    assert p.flat_score == pytest.approx(p.calibration.C)


def test_textureless_threshold_is_one_grey_level():
    base = torch.full((1, 3, 64, 64), 0.5)
    faint, visible = base.clone(), base.clone()
    faint[..., :8, :8] += 0.5 / 255
    visible[..., :8, :8] += 2 / 255
    assert textureless(torch.cat([base, faint])).all()
    assert not textureless(visible).any()


@needs_photo
@pytest.mark.parametrize("name", ["niqe", "brisque"])
def test_same_value_as_pyiqa_on_a_photo(loaded, name):
    """Where pyiqa's metric is defined, the total version is pyiqa's (checked on all 68 dev photos
    when this was written; one photo here)."""
    import pyiqa

    from iqa_map.core.priors.calibration import read_image
    from iqa_map.core.priors.pyiqa_backend import BUILTIN_FILES

    img = read_image(PHOTO)
    ref = pyiqa.create_metric(name, device="cpu", **BUILTIN_FILES[name])
    with torch.no_grad():
        assert float(loaded[name].native(img)) == pytest.approx(float(ref(img)), rel=1e-6)


@needs_photo
def test_half_flat_photo_scores_its_textured_half(loaded):
    """A photo whose top half is a flat colour: NIQE judges the textured blocks, so the score stays that of a
    natural photo (pyiqa's NIQE mixed the flat blocks' undefined features in) and the gradient is finite."""
    from iqa_map.core.priors.calibration import read_image

    img = read_image(PHOTO)
    img[..., : img.shape[-2] // 2, :] = torch.tensor([0.47, 0.67, 0.88]).view(1, 3, 1, 1)
    for name in ("niqe", "brisque", "hybrid-builtin"):
        s, g = score_grad(loaded[name], img)
        assert torch.isfinite(s).all() and torch.isfinite(g).all(), name
        assert g[..., img.shape[-2] // 2 + 8:, :].abs().sum() > 0, f"{name}: no gradient on the textured half"
    assert float(loaded["niqe"].calibrated(img)) > 50, "the natural half of a clean photo is better than typical"


def test_seeded_fuzz_finite_scores_gradients_and_maps(loaded):
    """Sizes from each prior's minimum upward, aspect ratios up to 1:30, five kinds of content."""
    rng = np.random.default_rng(2026)
    kinds = ("constant", "near-constant", "gradient", "checkerboard", "noise")
    aspects = (1.0, 1.7, 4.0, 30.0)
    gen = torch.Generator().manual_seed(2026)
    for name in BUILTIN:
        p = loaded[name]
        low = max(p.min_size, 32)
        for i in range(10):
            kind, aspect = kinds[i % len(kinds)], aspects[int(rng.integers(len(aspects)))]
            short = int(rng.integers(low, low + 48))
            long = min(int(short * aspect), 30 * short)
            h, w = (short, long) if rng.random() < 0.5 else (long, short)
            img = content(kind, h, w, gen)
            s, g = score_grad(p, img)
            assert torch.isfinite(s).all() and torch.isfinite(g).all(), f"{name}: {kind} {w}x{h}"
    for kind in kinds:  # quality maps over flat and degenerate windows
        img = content(kind, 72, 120, gen)
        for name in ("cnniqa-builtin", "brisque"):
            qm = quality_map(loaded[name], img, window=48, stride=24)
            assert torch.isfinite(qm.badness).all() and torch.isfinite(qm.scores).all(), f"{name}: {kind}"


def test_quality_map_flat_region_reads_as_the_photos_median():
    """Windows without texture take the median of the textured windows' scores: neither worst nor best."""
    gen = torch.Generator().manual_seed(3)
    img = torch.rand(1, 3, 96, 192, generator=gen)
    img[..., :, :96] = 0.6  # the left half is a flat colour
    img[..., :, 96:] = torch.nn.functional.avg_pool2d(img[..., :, 96:], 5, 1, 2)  # varied quality on the right
    img[..., :48, 144:] = torch.rand(1, 3, 48, 48, generator=gen)
    prior = priors.load("cnniqa-builtin")
    qm = quality_map(prior, img, window=32, stride=16)
    flat_part = qm.flat[..., :, :80] == 1
    assert flat_part.all(), "every window over the flat half is marked as not judged"
    assert (qm.flat[..., :, 112:] == 0).all()
    judged = qm.scores[..., :, 112:]
    inside = qm.scores[..., :, :80]
    assert float(judged.min()) < float(inside.mean()) < float(judged.max()), "flat reads as typical"
    assert torch.allclose(inside, inside.flatten()[0].expand_as(inside)), "one value over the flat part"
    whole = quality_map(prior, torch.full((1, 3, 64, 64), 0.3), window=32, stride=16)
    assert (whole.flat == 1).all() and (whole.badness == 0).all(), "an all-flat image gives a uniform map"


@needs_photo
def test_cli_score_and_qmap_on_a_half_flat_photo(tmp_path, capsys):
    """The issue's case: `iqa-map score` and `iqa-map qmap --prior niqe` on a dev photo whose top half is
    a flat colour succeed (they stopped with an SVD error), and the map says what it did with the flat part."""
    from PIL import Image

    from iqa_map.cli import main

    a = np.asarray(Image.open(PHOTO).convert("RGB"))[:200, :200].copy()
    a[:100] = (120, 170, 225)
    Image.fromarray(a).save(tmp_path / "sky.png")
    assert main(["score", str(tmp_path / "sky.png"), "--json"]) == 0
    import json
    rows = json.loads(capsys.readouterr().out)
    assert all(np.isfinite(v["native"]) for v in next(iter(rows.values())).values())
    assert main(["qmap", str(tmp_path / "sky.png"), "-o", str(tmp_path / "maps"), "--prior", "niqe",
                 "--window", "96", "--stride", "48"]) == 0
    out = capsys.readouterr().out
    assert "flat: not judged, shown at the photo's median" in out
    mask = np.asarray(Image.open(tmp_path / "maps" / "sky_qmap_niqe.png"))
    assert mask.shape[:2] == (200, 200) and len(np.unique(mask[:40])) == 1, "one value over the flat part"


def test_quality_map_node_reports_flat_regions():
    from iqa_map.nodes import NODES as N

    img = torch.rand(1, 64, 128, 3, generator=torch.Generator().manual_seed(5))
    img[:, :, :64] = 0.4
    with torch.inference_mode():
        mask, heat, summary = N["IQAMAP_IQAQualityMap"].execute(img, priors.load("brisque"), 32, 16)
    assert torch.isfinite(mask).all() and torch.isfinite(heat).all()
    assert "flat: not judged" in summary
