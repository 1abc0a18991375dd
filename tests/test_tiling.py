"""Tiled MAP ascent: the grid, seamless blending, and tiles that each behave as ascend on their crop."""
import dataclasses
import json
import types

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_map.cli import main
from iqa_map.core import map as M
from iqa_map.core.map import tiling
from iqa_map.core.map.tiling import ascend_tiled, tile_grid
from iqa_map.core.tiles import Grid

from test_map import FAST, Brightness, _pixel_model


def _img(h, w, seed=0):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 0.6 + 0.2


def test_builtin_model_tiles_start_on_its_pixel_grid():
    from iqa_map.core.models import load_builtin

    den = load_builtin(device="cpu")
    g = tile_grid(den, None, 481, 321, 192, 48)
    assert g.align == den.network.multiple == 8 and all(y % 8 == x % 8 == 0 for y, x, _, _ in g.boxes())


def test_tile_size_follows_the_models_grid_and_bad_overlaps_are_refused():
    latent = types.SimpleNamespace(factor=8)
    assert tile_grid(types.SimpleNamespace(multiple=2), latent, 300, 300, 100, 16).tile == 96
    assert tile_grid(object(), None, 300, 200, 300, 16) is None  # fits in one tile
    assert tile_grid(object(), latent, 100, 100, 100, 16) is None  # fits as asked, though not in a rounded tile
    with pytest.raises(ValueError, match="half the tile"):
        tile_grid(object(), None, 300, 300, 100, 60)


def test_an_image_within_one_tile_is_plain_ascend():
    den, x = _pixel_model(), _img(24, 20)
    a = M.ascend(den, x, Brightness(), **FAST)
    b = ascend_tiled(den, x, Brightness(), tile=32, overlap=8, **FAST)
    assert torch.equal(a.image, b.image) and "tiles" not in b.report


def test_each_tile_is_ascend_on_its_crop_and_the_report_adds_them_up():
    den, x = _pixel_model(), _img(40, 40)
    seen = []
    res = ascend_tiled(den, x, Brightness(), tile=24, overlap=6, callback=seen.append, **FAST)
    grid = Grid(40, 40, 24, 6)
    assert res.image.shape == x.shape and len(res.report["tiles"]) == len(grid) == 4
    own = []
    for y, xx, th, tw in grid.boxes():
        own.append(M.ascend(den, x[..., y:y + th, xx:xx + tw], Brightness(), **FAST))
    # Where only one tile covers a pixel the result is that tile's own ascent; elsewhere a blend of the covering ones.
    count = torch.zeros(40, 40, dtype=torch.int64)
    for y, xx, th, tw in grid.boxes():
        count[y:y + th, xx:xx + tw] += 1
    lo, hi = torch.full_like(x, 9.0), torch.full_like(x, -9.0)
    for (y, xx, th, tw), r in zip(grid.boxes(), own):
        mine = torch.zeros(40, 40, dtype=torch.bool)
        mine[y:y + th, xx:xx + tw] = True
        alone = mine & (count == 1)
        assert alone.any() and torch.equal(res.image[..., alone], r.image[..., alone[y:y + th, xx:xx + tw]])
        lo[..., y:y + th, xx:xx + tw] = torch.minimum(lo[..., y:y + th, xx:xx + tw], r.image)
        hi[..., y:y + th, xx:xx + tw] = torch.maximum(hi[..., y:y + th, xx:xx + tw], r.image)
    assert bool((res.image >= lo - 1e-6).all() and (res.image <= hi + 1e-6).all())
    rep = res.report
    assert rep["denoiser_evals"] == sum(r.report["denoiser_evals"] for r in own)
    assert [t["box"] for t in rep["tiles"]] == [list(b) for b in grid.boxes()]
    assert len(rep["history"]) == len(seen) == sum(len(r.report["history"]) for r in own)
    assert {e["tile"] for e in rep["history"]} == {i["tile"] for i in seen} == set(range(4))
    assert all(i["tiles"] == 4 for i in seen)
    assert rep["settings"]["tile"] == 24 and rep["output_scores"]["brightness"] > rep["input_scores"]["brightness"]
    assert rep["psnr_vs_input"] == pytest.approx(M.psnr(res.image, x))


def test_very_large_photos_are_scored_tile_by_tile(monkeypatch):
    """Beyond WHOLE_SCORE_TILES tiles' area the report's scores are the area-weighted mean over the tiles."""
    from iqa_map.core.map import tiling

    den, x = _pixel_model(), _img(40, 40)
    whole = ascend_tiled(den, x, Brightness(), tile=24, overlap=6, **FAST)
    assert whole.report["scores_over"] == "image"
    assert whole.report["output_scores"]["brightness"] == pytest.approx(float(whole.image.mean()), rel=1e-5)
    monkeypatch.setattr(tiling, "WHOLE_SCORE_TILES", 1)
    tiled = ascend_tiled(den, x, Brightness(), tile=24, overlap=6, **FAST)
    assert torch.equal(tiled.image, whole.image) and tiled.report["scores_over"] == "tiles"
    boxes = Grid(40, 40, 24, 6).boxes()
    mean = sum(h * w * float(tiled.image[..., y:y + h, xx:xx + w].mean()) for y, xx, h, w in boxes) / \
        sum(h * w for _, _, h, w in boxes)
    assert tiled.report["output_scores"]["brightness"] == pytest.approx(mean, rel=1e-5)
    assert mean != pytest.approx(float(whole.image.mean()), rel=1e-5)  # overlaps count twice: a different mean


def test_ssim_in_strips_is_the_whole_image_ssim():
    import torch.nn.functional as F

    a = _img(300, 70)
    b = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    k = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    win = ((k / k.sum())[:, None] * (k / k.sum())[None, :]).expand(3, 1, 11, 11)
    f = lambda t: F.conv2d(t.double(), win.double(), groups=3)  # noqa: E731
    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    want = float((((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))).mean())
    for rows in (512, 64, 7):
        assert M.ssim(a, b, rows=rows) == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match="11x11"):
        M.ssim(a[..., :10, :], b[..., :10, :])


def test_adaptive_fidelity_draws_one_map_from_the_whole_photo(monkeypatch):
    """Every tile gets its crop of the whole photo's map, not a map normalised within the tile."""
    den, x = _pixel_model(), _img(40, 44)
    x[..., :, 22:] = x[..., :, 22:] * 0.2 + 0.4  # a flat half: the map differs across the photo
    calls = []
    real = M.ascend

    def spy(den_, img, prior, s, **kw):
        calls.append((img.shape, kw["weight_map"], s.adaptive_fidelity))
        return real(den_, img, prior, s, **kw)

    monkeypatch.setattr(tiling, "ascend", spy)
    s = dataclasses.replace(M.MapSettings(**FAST), adaptive_fidelity="prior", adaptive_window=8, adaptive_stride=4)
    ascend_tiled(den, x, Brightness(), s, tile=24, overlap=6)
    whole = M.adaptive_weight(Brightness(), s, x, (40, 44))
    assert len(calls) == len(Grid(40, 44, 24, 6).boxes()) > 1
    for (y, xx, th, tw), (shape, wmap, adaptive) in zip(Grid(40, 44, 24, 6).boxes(), calls):
        assert adaptive is None and shape[-2:] == (th, tw)
        assert torch.allclose(wmap, whole[..., y:y + th, xx:xx + tw])
    assert float(whole.max() - whole.min()) > 0.5  # the map is not uniform, so the crops could have differed


def test_cli_tiles_large_photos_and_says_so(tmp_path, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((90, 140, 3)) * 255).astype(np.uint8)).save(tmp_path / "p.png")
    fast = ["--prior", "brisque", "--steps", "2", "--strength", "0.3", "--iterations", "1", "--fidelity", "mse"]
    assert main(["enhance", str(tmp_path / "p.png"), "-o", str(tmp_path / "t"), "--tile", "64", "--tile-overlap",
                 "16", "--report", str(tmp_path / "t.json"), *fast]) == 0
    assert "140x90 is larger than --tile 64: 6 tiles of 64 pixels" in capsys.readouterr().out
    out = np.asarray(Image.open(tmp_path / "t" / "p_enhanced.png"))
    assert out.shape == (90, 140, 3)
    rep = json.loads((tmp_path / "t.json").read_text())
    assert len(rep["tiles"]) == 6 and rep["settings"]["tile_overlap"] == 16
    assert main(["enhance", str(tmp_path / "p.png"), "-o", str(tmp_path / "w"), "--tile", "0",
                 "--report", str(tmp_path / "w.json"), *fast]) == 0
    assert "tiles" not in json.loads((tmp_path / "w.json").read_text())
    # Refused before anything loads: the missing model would otherwise be the error.
    for bad, msg in ((["--tile", "32"], "at least 64"), (["--tile", "64", "--tile-overlap", "40"], "half of --tile")):
        for cmd in (["enhance", str(tmp_path / "p.png"), "-o", str(tmp_path / "x")],
                    ["compare", str(tmp_path / "p.png"), "-o", str(tmp_path / "x"), "--prior", "piqe"]):
            assert main([*cmd, *bad, *fast, "--model", str(tmp_path / "no_model")]) != 0
            assert msg in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_latent_model_tiles_on_the_vae_grid():
    """A random SD-architecture UNet + VAE: tiles are whole latent pixels and the photo comes back at its size."""
    from iqa_map.core.models import from_diffusers
    from iqa_map.core.models.codec import VAECodec
    from tiny_models import sd_scheduler, sd_unet, sd_vae

    codec = VAECodec(sd_vae("tiny").eval().requires_grad_(False))
    den = from_diffusers(sd_unet(), sd_scheduler())
    x = _img(60, 90)
    res = ascend_tiled(den, x, Brightness(), tile=70, overlap=16, codec=codec, cond=torch.randn(1, 6, 32),
                       steps=2, strength=0.5, iterations=1, fidelity="mse", lr=0.01)
    assert res.image.shape == x.shape and torch.isfinite(res.image).all()
    assert res.report["settings"]["tile"] == 64  # 70 rounded down to the VAE's factor of 8
    # one row (the height is 60); the second column starts on the latent grid (x = 32) and is cut short
    assert [t["box"] for t in res.report["tiles"]] == [[0, 0, 60, 64], [0, 32, 60, 58]]
    assert max(t["inversion_error"] for t in res.report["tiles"]) == res.report["inversion_error"] < 1e-4
