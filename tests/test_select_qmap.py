"""IQA-guided selection, spatial quality maps and quality-adaptive fidelity (core, nodes, CLI)."""
import json

import numpy as np
import pytest
import torch
from helpers import dev_photo
from PIL import Image

from iqa_map.nodes import NODES as N
from iqa_map.cli import main
from iqa_map.core import priors
from iqa_map.core.quality import select as S
from iqa_map.core.map import comparable_score
from iqa_map.core.priors.base import Prior
from iqa_map.core.priors.distortions import gaussian_blur, gaussian_noise, jpeg
from iqa_map.core.io.drawing import heatmap
from iqa_map.core.quality.metrics import roc_auc
from iqa_map.core.quality.qmap import otsu_threshold, quality_map


def _photo(crop=96):
    return (dev_photo(crop=crop, dtype=torch.float32) + 1) / 2


@pytest.fixture(scope="module")
def piqe():
    return priors.load("piqe")


@pytest.fixture(scope="module")
def candidates():
    x = _photo()
    return torch.cat([x, gaussian_blur(x, 1.0), gaussian_noise(x, 10, seed=1), gaussian_blur(x, 2.5)])


def test_ranking_is_consistent_with_the_scores(piqe, candidates):
    sel = S.select(piqe, candidates)
    with torch.no_grad():
        each = torch.stack([comparable_score(piqe, c[None])[0] for c in candidates]).float()
    assert torch.allclose(sel.scores, each, atol=1e-4)
    assert [float(sel.scores[i]) for i in sel.order] == sorted(sel.scores.tolist(), reverse=True)
    assert sel.index == sel.order[0] == int(each.argmax())
    assert float(sel.probabilities.sum()) == 1.0 and float(sel.probabilities[sel.index]) == 1.0


def test_softmax_temperature_limits():
    s = torch.tensor([40.0, 55.0, 52.0, 10.0])
    # T -> 0: always the argmax, whatever the seed.
    assert {S.select(None, torch.zeros(4, 3, 8, 8), "softmax", 1e-3, seed, precomputed=s).index
            for seed in range(50)} == {1}
    # Large T: close to uniform, checked with a chi-square test over 2000 seeded draws.
    counts = np.bincount([S.select(None, torch.zeros(4, 3, 8, 8), "softmax", 1e6, seed, precomputed=s).index
                          for seed in range(2000)], minlength=4)
    chi2 = float(((counts - 500.0) ** 2 / 500.0).sum())
    assert chi2 < 16.27, counts  # 3 degrees of freedom, p = 0.001
    # In between: the draw frequencies follow softmax(s / T).
    p = S.probabilities(s, 5.0)
    assert torch.allclose(p, torch.softmax(s / 5.0, 0), atol=1e-6)
    freq = np.bincount([S.select(None, torch.zeros(4, 3, 8, 8), "softmax", 5.0, seed, precomputed=s).index
                        for seed in range(2000)], minlength=4) / 2000
    assert np.abs(freq - p.numpy()).max() < 0.04
    with pytest.raises(ValueError, match="temperature"):
        S.probabilities(s, 0.0)


def test_candidates_of_different_sizes_are_refused(piqe):
    with pytest.raises(ValueError, match="same size.*64x64.*96x96"):
        S.select(piqe, [_photo(96), _photo(64)])


class MidGray(Prior):
    """Test prior: prefers tiles whose mean is 0.5 (so different tiles choose different candidates)."""
    name = "midgray"

    def _native(self, img):
        return -(img.mean(dim=(1, 2, 3)) - 0.5).abs() * 100


def _seam_ratio(out, base, choice, tile, overlap):
    """Mean gradient magnitude near borders between tiles that chose differently, over elsewhere,
    relative to the same ratio of the base image (1.0 = no seam)."""
    from iqa_map.core.map.tiling import Grid
    h, w = out.shape[-2:]
    grid = Grid(h, w, tile, overlap)
    ys, xs = grid.rows, grid.cols
    band = torch.zeros(h, w, dtype=torch.bool)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            if j + 1 < len(xs) and choice[i, j] != choice[i, j + 1]:
                band[y:y + tile, max(xs[j + 1] - 2, 0):min(x + tile + 2, w)] = True
            if i + 1 < len(ys) and choice[i, j] != choice[i + 1, j]:
                band[max(ys[i + 1] - 2, 0):min(y + tile + 2, h), x:x + tile] = True

    def grad(img):
        g = img.mean(1)[0]
        gx = (g[:, 1:] - g[:, :-1]).abs()[:-1]
        gy = (g[1:] - g[:-1]).abs()[:, :-1]
        return gx + gy

    b = band[:-1, :-1]
    go, gb = grad(out), grad(base)
    return float((go[b].mean() / go[~b].mean()) / (gb[b].mean() / gb[~b].mean())), int(b.sum())


def test_tile_selection_blends_without_seams():
    # Constant content: a fixed fine texture on a gentle left-to-right ramp; the candidates are that
    # content at shifted levels, and MidGray makes the left and right tiles choose differently.
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0.3, 0.7, 192, dtype=torch.float64).expand(1, 3, 192, 192)
    base = ramp + 0.02 * torch.randn(1, 1, 192, 192, generator=g, dtype=torch.float64)
    offsets = (-0.06, -0.02, 0.02, 0.06)
    cands = torch.cat([(base + d).clamp(0, 1) for d in offsets]).float()
    blended, choice = S.select_tiles(MidGray(), cands, tile=64, overlap=32)
    assert blended.shape == (1, 3, 192, 192) and len(set(choice.flatten().tolist())) >= 2
    ratio, n = _seam_ratio(blended, base, choice, 64, 32)
    assert n > 0 and abs(ratio - 1) < 0.10, ratio
    # Where neighbouring tiles agree the result is that candidate exactly.
    if (choice == choice[0, 0]).all():
        assert torch.allclose(blended, cands[choice[0, 0]][None], atol=1e-6)
    # Without blending (hard tile cuts) the same test shows the seams: the check can fail.
    hard, hard_choice = S.select_tiles(MidGray(), cands, tile=32, overlap=0)
    assert len(set(hard_choice.flatten().tolist())) >= 2
    ratio_hard, _ = _seam_ratio(hard, base, hard_choice, 32, 0)
    assert ratio_hard > 1.10, ratio_hard


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, 200).astype(float)  # many ties
    label = rng.random(200) < 0.3
    pos, neg = score[label], score[~label]
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert roc_auc(score, label) == pytest.approx(brute)
    assert roc_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0


def test_otsu_threshold_splits_two_classes():
    gen = torch.Generator().manual_seed(0)
    low = 0.1 + 0.05 * torch.randn(3000, generator=gen)
    high = 0.7 + 0.05 * torch.randn(1000, generator=gen)
    x = torch.cat([low, high]).clamp(0, 1).view(1, 1, 40, 100)
    t = float(otsu_threshold(x))
    assert 0.25 < t < 0.55  # in the gap between the classes
    # Between-class variance is maximal at t: no other split of these values separates them better.

    def between(th):
        a, b = x[x < th], x[x >= th]
        return len(a) * len(b) * float(a.mean() - b.mean()) ** 2 if len(a) and len(b) else 0.0
    assert all(between(t) >= between(th) * (1 - 1e-6) for th in torch.linspace(0.05, 0.95, 19).tolist())
    # Two clean classes with an empty gap: the middle of the gap, not its edge.
    gap = torch.cat([torch.full((300,), 0.1), torch.full((100,), 0.9)]).view(1, 1, 20, 20)
    assert float(otsu_threshold(gap)) == pytest.approx(0.5, abs=0.01)
    assert float(otsu_threshold(torch.zeros(1, 1, 8, 8))) == 0.0  # a constant map has no split


def test_quality_map_finds_a_damaged_region(piqe):
    clean = _photo(128)
    mask = torch.zeros(1, 1, 128, 128)
    mask[..., 16:80, 40:104] = 1  # a quarter of the area
    img = clean * (1 - mask) + gaussian_noise(clean, 20, seed=3) * mask
    qm = quality_map(piqe, img, window=32, stride=8)
    assert qm.badness.shape == (1, 1, 128, 128)
    assert float(qm.badness.min()) == 0.0 and float(qm.badness.max()) == 1.0
    assert roc_auc(qm.badness.numpy(), mask.numpy()) > 0.85
    # Batching the windows does not change the map.
    assert torch.allclose(quality_map(piqe, img, window=32, stride=8, batch=5).scores, qm.scores, atol=1e-4)
    w = qm.weight_map(floor=0.2, normalise="mean")
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-5)
    assert float(w.min()) / float(w.max()) == pytest.approx(0.2, abs=1e-4)
    worst = qm.weight_map(floor=0.2, normalise="worst")  # the worst region keeps the uniform weight
    assert float(worst.min()) == pytest.approx(1.0) and float(worst.max()) == pytest.approx(5.0, rel=1e-4)
    assert torch.allclose(worst / worst.mean(), w, atol=1e-5)
    with pytest.raises(ValueError, match="floor > 0"):
        qm.weight_map(floor=0.0, normalise="worst")
    # 'damaged': the whole region the map classes as damaged keeps the uniform weight, not just its worst window.
    damaged = qm.weight_map(floor=0.2, normalise="damaged")
    bad = mask.expand_as(damaged).bool()
    assert float(damaged.min()) == pytest.approx(1.0) and float(damaged.max()) == pytest.approx(5.0, rel=1e-4)
    assert float((damaged[bad] - 1).mean()) < 0.5 * float((worst[bad] - 1).mean())
    assert float((damaged[bad] == 1).float().mean()) > 0.5
    assert float(damaged[~bad].mean()) > 1.5 * float(damaged[bad].mean())
    with pytest.raises(ValueError, match="unknown normalise"):
        qm.weight_map(normalise="median")
    heat = heatmap(qm, img, alpha=1.0)
    assert heat.shape[0] == 1 and heat.shape[1] == 3 and heat.shape[-1] == 128 and heat.shape[-2] > 128
    worst = (qm.badness[0, 0] == 1).nonzero()[0]
    best = (qm.badness[0, 0] == 0).nonzero()[0]
    assert heat[0, 0, worst[0], worst[1]] > 0.4 + heat[0, 0, best[0], best[1]]  # red where worst
    assert heat[0, 2, best[0], best[1]] > heat[0, 2, worst[0], worst[1]]  # bluer where best
    raw = priors.load("piqe")
    raw.calibration = None
    with pytest.raises(ValueError, match="calibrated"):
        quality_map(raw, img, normalise="absolute")


@pytest.mark.parametrize("kind", ["blur", "noise", "jpeg"])
def test_learned_builtin_maps_every_kind_of_damage(kind):
    """cnniqa-builtin, the default map prior, locates blur, noise and JPEG damage alike."""
    clean = _photo(160)
    mask = torch.zeros(1, 1, 160, 160)
    mask[..., 24:104, 64:144] = 1  # a quarter of the area
    bad = {"blur": lambda x: gaussian_blur(x, 2.0), "noise": lambda x: gaussian_noise(x, 15, seed=5),
           "jpeg": lambda x: jpeg(x, 12)}[kind](clean)
    img = clean * (1 - mask) + bad * mask
    qm = quality_map(priors.load("cnniqa-builtin"), img)
    assert roc_auc(qm.badness.numpy(), mask.numpy()) > 0.8


def test_adaptive_fidelity_lets_damaged_regions_change_more():
    from iqa_map.core import map as M
    from iqa_map.core.models import load_builtin
    clean = _photo(64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :32, :32] = 1
    img = clean * (1 - mask) + gaussian_noise(clean, 25, seed=4) * mask
    den, prior = load_builtin(), priors.load("brisque")
    kw = dict(steps=2, strength=0.5, iterations=4, optimizer="momentum")  # moves the photo by ~2 levels in 255
    uni = M.ascend(den, img, prior, **kw)
    runs = {norm: M.ascend(den, img, prior, **kw, adaptive_fidelity="piqe", adaptive_window=24, adaptive_stride=4,
                           adaptive_normalise=norm) for norm in ("mean", "worst", "damaged")}
    assert runs["worst"].report["settings"]["adaptive_fidelity"] == "piqe"
    assert runs["worst"].report["settings"]["adaptive_normalise"] == "worst"

    def change(res, where):
        return float((res.image - img).abs().mean(1, keepdim=True)[where].mean())
    inside, outside = mask.bool(), ~mask.bool()
    for res in runs.values():
        assert change(res, inside) / change(res, outside) > change(uni, inside) / change(uni, outside)
    # "worst" never lowers a weight below the uniform one: the undamaged part moves less than under uniform.
    assert change(runs["worst"], outside) < change(uni, outside)
    with pytest.raises(ValueError, match="adaptive_normalise"):
        M.ascend(den, img, prior, **kw, adaptive_fidelity="piqe", adaptive_normalise="median")
    with pytest.raises(ValueError, match="adaptive_floor"):
        M.ascend(den, img, prior, **kw, adaptive_fidelity="piqe", adaptive_floor=0.0)


def test_select_and_quality_map_nodes(piqe, candidates):
    images = candidates.movedim(1, -1)
    out = N["IQAMAP_IQASelect"].execute(images[:2], piqe, images_2=images[2:])
    img, index, ranking = out["result"]
    info = json.loads(ranking)
    assert index == info["order"][0] and torch.equal(img, images[index:index + 1])
    assert out["ui"]["text"][0].startswith("#1: candidate")
    tiled, idx, _ = N["IQAMAP_IQASelect"].execute(images, piqe, "tiles", tile=64, overlap=16)["result"]
    assert idx == -1 and tiled.shape == (1, 96, 96, 3)
    with pytest.raises(ValueError, match="IQA Select: .*same size"):
        N["IQAMAP_IQASelect"].execute(images, piqe, images_2=torch.rand(1, 64, 64, 3))
    with torch.inference_mode():
        mask, heat, summary = N["IQAMAP_IQAQualityMap"].execute(images[:1], piqe, 32, 16)
        inv, _, _ = N["IQAMAP_IQAQualityMap"].execute(images[:1], piqe, 32, 16, invert=True)
    assert mask.shape == (1, 96, 96) and 0 <= float(mask.min()) and float(mask.max()) <= 1
    assert torch.allclose(inv, 1 - mask) and heat.shape[-1] == 3 and heat.shape[2] == 96
    assert "piqe" in summary


def _save(path, t):
    Image.fromarray((t[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    return path


def test_cli_rank_and_qmap(tmp_path, capsys, candidates):
    files = [_save(tmp_path / f"cand{i}.png", candidates[i:i + 1]) for i in range(4)]
    assert main(["rank", *map(str, files), "--prior", "piqe", "-o", str(tmp_path / "best.png"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.split("wrote")[0])
    assert [r["rank"] for r in out["ranking"]] == [1, 2, 3, 4] and (tmp_path / "best.png").is_file()
    scores = [r["score"] for r in out["ranking"]]
    assert scores == sorted(scores, reverse=True)
    assert set(out["ranking"][0]) == {"rank", "file", "score", "probability"}
    assert sorted(r["file"] for r in out["ranking"]) == sorted(map(str, files)) and out["selected"] in map(str, files)
    small = _save(tmp_path / "small.png", candidates[:1, :, :64, :64])
    assert main(["rank", str(files[0]), str(small), "--prior", "piqe"]) == 2
    assert "same size" in capsys.readouterr().err
    assert main(["qmap", str(files[2]), "-o", str(tmp_path / "maps"), "--window", "32", "--stride", "16"]) == 0
    assert {p.name for p in (tmp_path / "maps").iterdir()} == {"cand2_qmap_cnniqa-builtin.png", "cand2_qmap_cnniqa-builtin_heatmap.png"}
