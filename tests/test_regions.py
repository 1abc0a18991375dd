"""Quality-adaptive conditioning (issue 25): partition, C_p, pools, phrases, strength, preview."""
import json

import pytest
import torch

from iqa_map.core.quality import regions as R


def known_map():
    """Three known regions of a third each: left 80 (good), top-right 30, bottom-right 10, mild noise."""
    q = torch.full((64, 96), 80.0)
    q[:, 32:] = 30.0
    q[21:, 64:] = 10.0
    q[:21, 64:] = 30.0
    q[:, 32:64] = 30.0
    q[:, 64:] = 10.0
    return q + torch.randn(64, 96, generator=torch.Generator().manual_seed(0))


def test_partition_recovers_known_regions():
    q = known_map()
    part = R.partition(q, method="quantiles", levels=3, min_area=0.05, smooth=1.0)
    assert len(part.regions) == 3
    truth = torch.zeros(64, 96, dtype=torch.long)
    truth[:, 32:64], truth[:, 64:] = 1, 2
    # worst first: region 0 is the right third, 2 the left
    want = {0: (truth == 2), 1: (truth == 1), 2: (truth == 0)}
    for i, m in want.items():
        agree = (part.labels == i)[m].float().mean()
        assert agree > 0.95, (i, agree)
    assert [round(r.quality) for r in part.regions] == [10, 30, 80]
    # Otsu: two classes, the good third against the rest (the two damaged thirds are one connected region)
    two = R.partition(q, method="otsu", min_area=0.05)
    assert len(two.regions) == 2 and two.regions[1].area == pytest.approx(1 / 3, abs=0.03)


def test_masks_cover_the_image_once():
    part = R.partition(known_map(), method="quantiles", levels=3)
    total = torch.stack([r.mask for r in part.regions]).sum(0)
    assert torch.equal(total, torch.ones_like(total))
    assert sum(r.area for r in part.regions) == pytest.approx(1.0)


def test_min_area_merges_small_components_and_constant_map_is_one_region():
    q = torch.full((50, 50), 70.0)
    q[10:14, 10:14] = 5.0          # 16 px = 0.6 % of the image
    q[30:45, 30:45] = 5.0          # 225 px = 9 %
    part = R.partition(q, min_area=0.05, smooth=0.0)
    assert len(part.regions) == 2
    assert part.regions[0].mask[35, 35] and not part.regions[0].mask[12, 12]  # the speck went to the background
    assert all(r.area >= 0.05 for r in part.regions)
    assert len(R.partition(q, min_area=0.0, smooth=0.0).regions) == 3
    flat = R.partition(torch.full((40, 30), 42.0))
    assert len(flat.regions) == 1 and flat.regions[0].area == 1.0 and flat.regions[0].quality == pytest.approx(42)


def test_prompt_complexity_is_monotone_and_bounded():
    cs = [R.prompt_complexity(q, 1, 5) for q in range(0, 101, 5)]
    assert cs[0] == 5 and cs[-1] == 1 and all(a >= b for a, b in zip(cs, cs[1:]))
    assert all(1 <= c <= 5 for c in cs)
    assert R.prompt_complexity(-20, 1, 5) == 5 and R.prompt_complexity(150, 1, 5) == 1
    with pytest.raises(ValueError, match="C_min"):
        R.prompt_complexity(50, 4, 2)


def test_pool_follows_tau_and_phrases_rank():
    assert R.choose_pool(60, 50) == "high" and R.choose_pool(50, 50) == "low" and R.choose_pool(10, 50) == "low"
    pool = ["alpha", "beta", "gamma"]
    assert R.rank_phrases(pool, 2) == ["alpha", "beta"]
    vec = {"ref": torch.tensor([1.0, 0.0]), "alpha": torch.tensor([0.0, 1.0]), "beta": torch.tensor([0.7, 0.7]),
           "gamma": torch.tensor([1.0, 0.1])}
    assert R.rank_phrases(pool, 2, "ref", encoder=vec.__getitem__) == ["gamma", "beta"]
    assert R.rank_phrases(pool, 0) == [] and R.rank_phrases(pool, 9) == pool
    assert R.parse_pool("  a \n\n b\n") == ["a", "b"]


def test_plan_strength_and_preview():
    part = R.plan(known_map(), "a photo", tau=50, c_min=1, c_max=4, method="quantiles", levels=3)
    worst, mid, best = part.regions
    assert worst.pool == mid.pool == "low" and best.pool == "high"
    assert worst.complexity >= mid.complexity >= best.complexity
    assert worst.prompt("a photo").startswith("a photo, ") and len(worst.phrases) == worst.complexity
    assert worst.strength > mid.strength > best.strength and 0.2 <= best.strength <= 1
    s = R.strength_map(part)
    assert float(s[50, 80]) == pytest.approx(worst.strength) and float(s[10, 10]) == pytest.approx(best.strength)
    soft = R.strength_map(part, feather=4)
    assert soft.shape == s.shape and 0 <= float(soft.min()) and float(soft.max()) <= 1
    img = R.preview(part, torch.rand(1, 3, 64, 96))
    assert img.shape == (1, 3, 64, 96)
    with pytest.raises(ValueError, match="pools"):
        R.plan(known_map(), high_pool=[], low_pool=["x"])
    with pytest.raises(ValueError, match="C_min"):
        R.plan(known_map(), c_min=5, c_max=2)


# --- the node, outside ComfyUI (a stand-in CLIP; the real one is tested inside ComfyUI) -------------------------

class FakeCLIP:
    """Deterministic 'text encoder': a bag of hashed words, with ComfyUI's CLIP methods."""

    def tokenize(self, text):
        return [w.strip(",").lower() for w in text.split()]

    def encode_from_tokens(self, tokens, return_pooled=False):
        v = torch.zeros(1, 4, 16)
        for t in tokens:
            g = torch.Generator().manual_seed(sum(map(ord, t)))
            v[0, 0] += torch.randn(16, generator=g)
        return (v, v[:, 0]) if return_pooled else v

    def encode_from_tokens_scheduled(self, tokens):
        c, p = self.encode_from_tokens(tokens, return_pooled=True)
        return [[c, {"pooled_output": p}]]


def test_regional_prompt_node_from_a_mask_and_from_a_prior():
    from iqa_map.nodes import NODES
    from iqa_map.core import priors

    node = NODES["IQAMAP_IQARegionalPrompt"]
    spec = node.INPUT_TYPES()
    defaults = {k: v[1]["default"] for sec in spec.values() for k, v in sec.items() if "default" in v[1]}
    image = torch.rand(1, 64, 96, 3)
    bad = 1 - known_map()[None] / 100  # a MASK as IQA Quality Map gives it: 1 = worst
    with torch.inference_mode():
        out = node.execute(FakeCLIP(), image, **{**defaults, "method": "quantiles", "levels": 3,
                                                 "quality_map": bad})
    cond, strength, preview, listing = out["result"]
    assert len(cond) == 4 and "mask" not in cond[0][1]  # the global entry, then one masked entry per region
    masks = torch.stack([c[1]["mask"][0] for c in cond[1:]])
    assert masks.shape == (3, 64, 96) and torch.equal(masks.sum(0), torch.ones(64, 96))
    assert all(c[1]["set_area_to_bounds"] is False and c[1]["mask_strength"] == 1.0 for c in cond[1:])
    regions = json.loads(listing)
    assert [r["pool"] for r in regions] == ["low", "low", "high"]
    assert all(r["prompt"].startswith("a photo") for r in regions)
    assert strength.shape == (1, 64, 96) and float(strength[0, 32, 90]) > float(strength[0, 32, 5])
    assert preview.shape == (1, 64, 96, 3) and "3 region(s)" in out["ui"]["text"][0]
    with torch.inference_mode():
        out = node.execute(FakeCLIP(), image, **{**defaults, "prior": priors.load("cnniqa-builtin"),
                                                 "window": 32, "stride": 16})
    assert len(out["result"][0]) == 1 + len(json.loads(out["result"][3]))
    for bad_args, msg in (({"high_pool": "  \n"}, "high_pool"), ({"c_min": 5, "c_max": 2}, "c_min"),
                          ({"quality_map": torch.zeros(1, 10, 10)}, "10x10"), ({}, "connect a prior")):
        with pytest.raises(ValueError, match=msg):
            node.execute(FakeCLIP(), image, **{**defaults, **bad_args})
