"""core/quality/qmap.py: spatial quality maps and quality-adaptive fidelity weights."""
import pytest
import torch
from helpers import photo01

from iqa_map.core import priors
from iqa_map.core.priors.distortions import gaussian_blur, gaussian_noise, jpeg
from iqa_map.core.io.drawing import heatmap
from iqa_map.core.quality.metrics import roc_auc
from iqa_map.core.quality.qmap import otsu_threshold, quality_map


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
    clean = photo01(128)
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
    clean = photo01(160)
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
    clean = photo01(64)
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
