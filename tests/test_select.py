"""core/quality/select.py: IQA-guided selection among candidates (ranking, argmax, softmax, per tile)."""
import numpy as np
import pytest
import torch
from helpers import photo01

from iqa_map.core.quality import select as S
from iqa_map.core.map import comparable_score
from iqa_map.core.priors.base import Prior


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
        S.select(piqe, [photo01(96), photo01(64)])


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
