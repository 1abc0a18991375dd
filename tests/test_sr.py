"""IQA-augmented super-resolution (issue 24): LoRA, training, selection, export, resume, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import DATA, need_shared, rel
from iqa_map.core import priors, sr
from iqa_map.core.io.files import sha256_file


#: The mechanics of issue 24 without the hack guard (tests/test_sr_guard.py tests the guard): L1 only.
L1 = dict(iqa_ratio=0.0, iqa_weight=0.0, judges="", grid_weight=0.0)


def tiny_state(scale: int = 2, feat: int = 8, seed: int = 0) -> dict:
    """A random-weight Real-ESRGAN "compact" (SRVGGNetCompact) state dict: an architecture spandrel knows."""
    from spandrel.architectures.Compact import CompactArch

    torch.manual_seed(seed)
    net = CompactArch().load(_compact(scale, feat)).model
    return {k: v.clone() for k, v in net.state_dict().items()}


def _compact(scale, feat):
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact

    net = SRVGGNetCompact(num_feat=feat, num_conv=2, upscale=scale)
    with torch.no_grad():  # visible, non-trivial weights (the upsampler adds the nearest-upscaled input)
        for p in net.parameters():
            p.normal_(0, 0.05)
    return net.state_dict()


@pytest.fixture(scope="module")
def tiny():
    return sr.load_upscaler(tiny_state())


def photos(folder, n=3, size=96, seed=0):
    """Textured RGB photos (smooth gradients + noise) written as PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), xx * yy], -1) * 0.35 + 0.5
        arr = np.clip(base + rng.normal(0, 0.06, base.shape), 0, 1)
        Image.fromarray((arr * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_load_upscaler_errors(tmp_path):
    with pytest.raises(sr.UpscalerError, match="not found"):
        sr.load_upscaler(tmp_path / "none.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(sr.UpscalerError, match="cannot read"):
        sr.load_upscaler(junk)
    other = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(sr.UpscalerError, match="not a model architecture spandrel knows"):
        sr.load_upscaler(other)


def test_lora_starts_identical_and_trains_only_adapters(tiny, tmp_path):
    x = torch.rand(2, 3, 20, 20)
    with torch.no_grad():
        y0 = tiny.model(x)
    m = sr.add_lora(tiny.model, sr.LoraSpec(rank=4))
    with torch.no_grad():
        assert torch.equal(m(x), y0)
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    wrapped_before = {k: v.clone() for k, v in m.state_dict().items()}
    sampler = sr.PairSampler(sr.load_samples(photos(tmp_path / "hr")), tiny.scale, crop=16, batch=2, seed=0)
    res = sr.finetune(tiny, sampler, None, sr.SRSettings(steps=3, crop=16, batch=2, lr=1e-2, rank=4, **L1))
    after = res.lora.state_dict()
    changed = {k for k in after if not torch.equal(after[k], res.lora.state_dict()[k]) or
               (k in wrapped_before and not torch.equal(after[k], wrapped_before[k]))}
    assert changed and all("lora_" in k for k in changed), changed
    assert any("lora_B" in k for k in changed)
    # the caller's model is untouched
    assert all(torch.equal(v, tiny.model.state_dict()[k]) for k, v in before.items())


def test_merged_equals_unmerged_and_exports_through_spandrel(tiny, tmp_path):
    m = sr.add_lora(tiny.model, sr.LoraSpec(rank=4))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        y_lora = m(x)
        merged = sr.merged_state_dict(m)
        assert torch.equal(m(x), y_lora)  # left unmerged
        assert not torch.allclose(y_lora, tiny.model(x))
    assert set(merged) == set(tiny.model.state_dict())
    for suffix in (".safetensors", ".pth"):
        path = sr.save_upscaler(merged, tmp_path / f"tuned{suffix}", {"prior": "niqe", "steps": 3})
        d = sr.load_upscaler(path)
        assert type(d.architecture) is type(tiny.architecture) and d.scale == tiny.scale
        with torch.no_grad():
            assert rel(d.model(x), y_lora) < 1e-5
        assert sr.read_metadata(path)["steps"] == 3
    with pytest.raises(FileExistsError):
        sr.save_upscaler(merged, tmp_path / "tuned.pth")


def test_lora_file_is_small_and_applies(tiny, tmp_path):
    hr = photos(tmp_path / "hr")
    sampler = sr.PairSampler(sr.load_samples(hr), tiny.scale, crop=16, batch=2, seed=0)
    s = sr.SRSettings(steps=2, crop=16, batch=2, lr=1e-2, rank=2, **L1)
    res = sr.finetune(tiny, sampler, None, s)
    lp = sr.save_lora(res.lora_state_dict(), s.lora_spec(), tmp_path / "a_lora.safetensors", res.record)
    applied = sr.apply_lora(tiny, lp)
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        assert rel(applied.model(x), res.model(x)) < 1e-5
    other = sr.load_upscaler(tiny_state(seed=1))
    other.model.load_state_dict({k: v + 0.01 for k, v in other.model.state_dict().items()})
    with pytest.raises(ValueError, match="another base"):
        sr.apply_lora(other, lp)


def test_grouped_convs_stay_frozen():
    """peft cannot merge a grouped conv's adapter (the export must be the base architecture)."""
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=4), torch.nn.Conv2d(4, 8, 1), torch.nn.Linear(8, 8))
    assert sr.target_layers(net, sr.LoraSpec(rank=4)) == ["1", "2"]
    assert sr.target_layers(net, sr.LoraSpec(rank=4, targets="conv")) == ["1"]
    assert sr.target_layers(net, sr.LoraSpec(rank=4, targets="linear", exclude="^2$")) == []


def test_selection_probabilities():
    s = torch.tensor([50.0, 70.0, 40.0, 69.0])
    assert sr.target_probabilities("orig", s, 5.0).tolist() == [1, 0, 0, 0]
    assert torch.allclose(sr.target_probabilities("random", s, 5.0), torch.full((4,), 0.25))
    cold = sr.target_probabilities("sma", s, 1e-4)
    assert cold.argmax() == 1 and cold[1] > 0.999
    hot = sr.target_probabilities("sma", s, 1e6)
    assert torch.allclose(hot, torch.full((4,), 0.25), atol=1e-4)
    smp = sr.target_probabilities("smp", s, 5.0)
    assert smp[2] == 0 and smp.sum() == pytest.approx(1)  # below the photo's own score: not positive


class _Brightness(torch.nn.Module):
    """A prior for selection tests: brighter = better (mean intensity x 100)."""
    name = "brightness"
    calibration = None

    def forward(self, img):
        return img.mean(dim=(1, 2, 3)) * 100


def _sampler_with_candidates(tmp_path, selection, temperature=5.0, seed=0):
    hr = photos(tmp_path / "hr", n=2, size=64)
    for p in sorted(hr.glob("p?.png")):
        a = np.asarray(Image.open(p), dtype=np.float32)
        Image.fromarray(np.clip(a * 0.6, 0, 255).astype(np.uint8)).save(hr / f"{p.stem}_dark.png")
        Image.fromarray(np.clip(a * 0.6 + 90, 0, 255).astype(np.uint8)).save(hr / f"{p.stem}_bright.png")
    samples = sr.load_samples(hr)
    assert [len(x.candidates) for x in samples] == [3, 3]  # orig + 2, candidates are not photos of their own
    return sr.PairSampler(samples, 2, crop=8, batch=50, selection=selection, temperature=temperature,
                          prior=_Brightness(), seed=seed), samples


def test_target_selection_modes(tmp_path):
    bright = 1 + sorted(["p0_bright.png", "p0_dark.png"]).index("p0_bright.png")
    for mode in ("amo", "sma"):
        smp, samples = _sampler_with_candidates(tmp_path / mode, mode, temperature=1e-3)
        assert samples[0].labels[bright] == "p0_bright.png"
        smp.next()
        assert smp.picked[bright] == 50, (mode, smp.picked)
    orig, _ = _sampler_with_candidates(tmp_path / "orig", "orig")
    orig.next()
    assert orig.picked[0] == 50
    # large T: close to uniform (chi-square, 2 dof, p = 0.001 critical value 13.8)
    hot, _ = _sampler_with_candidates(tmp_path / "hot", "sma", temperature=1e6, seed=3)
    for _ in range(6):
        hot.next()
    counts = hot.picked[:3]
    chi2 = float(((counts - counts.sum() / 3) ** 2 / (counts.sum() / 3)).sum())
    assert chi2 < 13.8, counts


def test_targets_align_with_inputs(tmp_path, tiny):
    """The LR crop is the bicubic downscale of the target crop (orig): crops, flips and transposes agree."""
    samples = sr.load_samples(photos(tmp_path / "hr", n=2, size=64))
    smp = sr.PairSampler(samples, 2, crop=12, batch=16, seed=5)
    lr, hr, weight = smp.next()
    assert weight is None and lr.shape == (16, 3, 12, 12) and hr.shape == (16, 3, 24, 24)
    inner = slice(3, -3)  # away from the crop border, where the downscale saw the neighbours
    err = (sr.downscale(hr, 2)[..., inner, inner] - lr[..., inner, inner]).abs().mean()
    assert err < 0.01, err


def test_resume_is_exact(tiny, tmp_path):
    hr = photos(tmp_path / "hr")
    s = dict(crop=16, batch=2, lr=1e-2, rank=2, **L1, checkpoint_every=2, seed=4)

    def run(steps, ckpt=None, resume=False):
        smp = sr.PairSampler(sr.load_samples(hr), tiny.scale, crop=16, batch=2, seed=4)
        return sr.finetune(tiny, smp, None, sr.SRSettings(steps=steps, **s), checkpoint=ckpt, resume=resume)

    whole = run(5)
    ck = tmp_path / "run.ckpt"
    run(3, ck)
    resumed = run(5, ck, resume=True)
    a, b = whole.merged_state_dict(), resumed.merged_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in resumed.history]
    with pytest.raises(ValueError, match="another run"):
        smp = sr.PairSampler(sr.load_samples(hr), tiny.scale, crop=16, batch=2, seed=4)
        sr.finetune(tiny, smp, None, sr.SRSettings(steps=6, **{**s, "rank": 3}), checkpoint=ck, resume=True)


def test_interrupt_keeps_a_checkpoint_that_resumes_exactly(tiny, tmp_path):
    hr = photos(tmp_path / "hr")
    s = dict(crop=16, batch=2, lr=1e-2, rank=2, **L1, checkpoint_every=100, seed=2)
    smp = lambda: sr.PairSampler(sr.load_samples(hr), tiny.scale, crop=16, batch=2, seed=2)  # noqa: E731
    whole = sr.finetune(tiny, smp(), None, sr.SRSettings(steps=4, **s))

    def stop(info):
        if info["step"] == 2:
            raise sr.Interrupted("stop")

    ck = tmp_path / "i.ckpt"
    with pytest.raises(sr.Interrupted):
        sr.finetune(tiny, smp(), None, sr.SRSettings(steps=4, **s), checkpoint=ck, callback=stop)
    resumed = sr.finetune(tiny, smp(), None, sr.SRSettings(steps=4, **s), checkpoint=ck, resume=True)
    a, b = whole.merged_state_dict(), resumed.merged_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_few_steps_raise_q_on_a_training_crop(tmp_path):
    """L1 - lQ Q with a real prior (the built-in CNNIQA): Q of the output on a fixed training crop rises."""
    base = sr.load_upscaler(tiny_state(feat=8))
    prior = priors.load("cnniqa-builtin")
    hr = photos(tmp_path / "hr", n=1, size=96)
    samples = sr.load_samples(hr)
    lr = samples[0].lr if samples[0].lr is not None else sr.downscale(samples[0].candidates[0][None], 2)[0]
    crop = lr[None, :, :32, :32]
    from iqa_map.core.map import comparable_score
    with torch.no_grad():
        q0 = float(comparable_score(prior, base.model(crop).clamp(0, 1)))
    smp = sr.PairSampler(samples, 2, crop=32, batch=2, seed=0)
    res = sr.finetune(base, smp, prior, sr.SRSettings(steps=8, crop=32, batch=2, lr=5e-3, rank=4, balance=False,
                                                   iqa_weight=0.05, judges="", grid_weight=0.0))
    with torch.no_grad():
        q1 = float(comparable_score(prior, res.model(crop).clamp(0, 1)))
    assert q1 > q0 + 1.0, (q0, q1)
    assert all(np.isfinite(h["q"]) for h in res.history)


def test_data_errors(tmp_path, tiny):
    with pytest.raises(ValueError, match="not found"):
        sr.load_samples(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        sr.load_samples(tmp_path / "empty")
    small = sr.load_samples(photos(tmp_path / "small", n=2, size=20))
    with pytest.raises(ValueError, match="smaller than one crop"):
        sr.PairSampler(small, 2, crop=16, batch=2)
    hr = photos(tmp_path / "hr", n=1, size=64)
    lr = tmp_path / "lr"
    lr.mkdir()
    Image.new("RGB", (30, 30)).save(lr / "p0.png")
    with pytest.raises(ValueError, match="scale mismatch"):
        sr.load_lr(sr.load_samples(hr), lr, hr, 2)
    with pytest.raises(ValueError, match="needs a prior"):
        sr.PairSampler(sr.load_samples(hr), 2, crop=8, batch=1, selection="amo")


def test_tiled_upscale_matches_whole(tiny):
    x = torch.rand(1, 3, 70, 90)
    with torch.no_grad():
        whole = sr.upscale(tiny, x, tile=0)
        tiled = sr.upscale(tiny, x, tile=40, overlap=16)
    assert whole.shape == (1, 3, 140, 180)
    # the model sees 4 LR pixels around each; the outer quarter of an overlap (4 pixels) is not blended
    assert (whole - tiled).abs().max() < 1e-4


# --- command line -----------------------------------------------------------------------------------------------

def _run(argv):
    from iqa_map.cli import main
    return main([str(a) for a in argv])


def test_cli_finetune_then_upscale(tmp_path, capsys):
    base = tmp_path / "base.pth"
    torch.save(tiny_state(), base)
    hr = photos(tmp_path / "hr", n=2, size=64)
    out = tmp_path / "models" / "tuned.safetensors"
    rc = _run(["sr-finetune", "--model", base, "-o", out, "--data", hr, "--prior", "cnniqa-builtin", "--steps", 3,
               "--crop", 16, "--batch", 2, "--lora-rank", 2, "--report", tmp_path / "ft.json"])
    assert rc == 0, capsys.readouterr().err
    assert out.is_file() and (tmp_path / "models" / "tuned_lora.safetensors").is_file()
    assert not (tmp_path / "models" / "tuned.safetensors.ckpt").exists()
    meta = sr.read_metadata(out)
    assert meta["steps"] == 3 and meta["prior"] == "cnniqa-builtin" and meta["base_sha256"] == sha256_file(base)
    assert len(json.loads((tmp_path / "ft.json").read_text())["history"]) == 3
    # the same command again: refuses to overwrite
    assert _run(["sr-finetune", "--model", base, "-o", out, "--data", hr, "--steps", 3, "--crop", 16]) == 2
    assert "exists" in capsys.readouterr().err
    ups = tmp_path / "ups"
    assert _run(["upscale", hr / "p0.png", "--model", out, "-o", ups, "--prior", "niqe",
                 "--report", tmp_path / "up.json"]) == 0
    im = Image.open(ups / "p0_x2.png")
    assert im.size == (128, 128)
    assert "p0_x2.png" in capsys.readouterr().out
    assert "already upscaled" in (_run(["upscale", hr / "p0.png", "--model", out, "-o", ups]) == 0
                                  and capsys.readouterr().out)
    # LoRA on the base gives the tuned model's output
    assert _run(["upscale", hr / "p1.png", "--model", base, "--lora", tmp_path / "models" / "tuned_lora.safetensors",
                 "-o", tmp_path / "ups2"]) == 0
    assert _run(["upscale", hr / "p1.png", "--model", out, "-o", ups]) == 0
    a = np.asarray(Image.open(tmp_path / "ups2" / "p1_x2.png"), dtype=np.int16)
    b = np.asarray(Image.open(ups / "p1_x2.png"), dtype=np.int16)
    assert np.abs(a - b).max() <= 1


def test_cli_errors(tmp_path, capsys):
    base = tmp_path / "base.pth"
    torch.save(tiny_state(), base)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\0" * 100)
    hr = photos(tmp_path / "hr", n=1, size=64)
    (tmp_path / "empty").mkdir()
    (tmp_path / "lr").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "lr" / "p0.png")  # x2 of 64 is 32
    cases = [
        (["sr-finetune", "--model", base, "-o", tmp_path / "o.pth", "--data", hr, "--lr-data", tmp_path / "lr"],
         "scale mismatch"),
        (["sr-finetune", "--model", junk, "-o", tmp_path / "o.safetensors", "--data", hr], "cannot read"),
        (["sr-finetune", "--model", base, "-o", tmp_path / "o.txt", "--data", hr], "must end in"),
        (["sr-finetune", "--model", base, "-o", tmp_path / "o.pth", "--data", tmp_path / "empty"], "no images"),
        (["sr-finetune", "--model", base, "-o", tmp_path / "o.pth", "--data", hr, "--crop", 64], "smaller than one"),
        (["sr-finetune", "--model", base, "-o", tmp_path / "o.pth", "--data", hr, "--select", "amo"], "give --prior"),
        (["upscale", hr / "p0.png", "--model", junk, "-o", tmp_path / "u"], "cannot read"),
        (["upscale", tmp_path / "missing.png", "--model", base, "-o", tmp_path / "u"], "none of the inputs"),
    ]
    for argv, msg in cases:
        assert _run(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (argv, err)


def test_real_upscalers_load_and_take_lora():
    """The pretrained test models: spandrel reads them; LoRA at the default rank stays under 10 % of the base."""
    for name in ("swift_srgan_x4.pth", "dctlsa_x4.pt"):
        path = DATA / "weights" / "sr" / name
        need_shared(path)
        d = sr.load_upscaler(path)
        assert d.scale == 4
        assert len(sr.state_sha256(d.model.state_dict())) == 64  # batch-norm counters are 0-dim tensors
        m = sr.add_lora(d.model, sr.SRSettings().lora_spec())
        n_lora = sum(p.numel() for n, p in m.named_parameters() if "lora_" in n)
        assert n_lora < 0.1 * sum(p.numel() for p in d.model.parameters()), (name, n_lora)
        x = torch.rand(1, 3, 24, 24)
        with torch.no_grad():
            assert torch.equal(m(x), d.model(x))


# --- ComfyUI node (outside ComfyUI, under inference mode as ComfyUI's executor runs nodes) -----------------------

def test_finetune_node_returns_a_working_upscaler(tmp_path):
    from iqa_map.nodes import NODES

    node = NODES["IQAMAP_IQAFineTuneUpscaler"]
    prior = priors.load("cnniqa-builtin")
    folder = photos(tmp_path / "hr", n=2, size=64)
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255)
                          for p in sorted(folder.glob("*.png"))])  # IMAGE [B,H,W,C]
    with torch.inference_mode():
        base = sr.load_upscaler(tiny_state())
        before = {k: v.clone() for k, v in base.model.state_dict().items()}
        x = torch.rand(1, 3, 16, 16)
        tuned, report = node.execute(base, images, prior, steps=3, rank=2, iqa_ratio=1.0, selection="amo", judges="",
                                     crop=16, batch=2, learning_rate=1e-2)
        y_base, y_tuned = base.model(x), tuned.model(x)
    assert type(tuned.architecture) is type(base.architecture) and tuned.scale == base.scale
    assert y_tuned.shape == y_base.shape and not torch.allclose(y_tuned, y_base)
    assert all(torch.equal(v, base.model.state_dict()[k]) for k, v in before.items())  # base untouched
    info = json.loads(report)
    assert len(info["history"]) == 3 and info["record"]["selection"] == "amo"
    assert sum(info["record"]["picked"]) == 6 and len(info["record"]["picked"]) == 4  # orig + 3 sharpened
    with torch.inference_mode(), pytest.raises(ValueError, match="pixel-aligned"):
        node.execute(base, images, prior, steps=1, candidates=images[:, :32, :32], crop=16)
    with torch.inference_mode(), pytest.raises(ValueError, match="smaller than one crop"):
        node.execute(base, images, prior, steps=1, crop=48)
    with torch.inference_mode(), pytest.raises(ValueError, match="upscale_models"):
        node.execute(base, images, prior, steps=1, crop=16, batch=1, save_name="mine")


def test_quality_weight_follows_w_of_q(tmp_path):
    from iqa_map.core.quality.qmap import loss_weight

    q = torch.tensor([[10.0, 20.0], [30.0, 50.0]]).view(1, 1, 2, 2)
    assert torch.allclose(loss_weight(q), torch.tensor([[1.0, 0.75], [0.5, 0.0]]).view(1, 1, 2, 2))
    assert torch.equal(loss_weight(torch.full((1, 1, 3, 3), 7.0)), torch.ones(1, 1, 3, 3))
    assert torch.allclose(loss_weight(q, q_min=0.0, q_max=100.0), (100 - q) / 100)
    # in the sampler: damaged half of a photo (noise) weighs more than the clean half, mean 1, aligned crops
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128] / 128
    arr = np.stack([np.sin(4 * xx), np.cos(3 * yy), xx * yy], -1) * 0.3 + 0.5
    arr[:, 64:] = np.clip(arr[:, 64:] + rng.normal(0, 0.15, arr[:, 64:].shape), 0, 1)
    (tmp_path / "hr").mkdir()
    Image.fromarray((arr * 255).astype(np.uint8)).save(tmp_path / "hr" / "half.png")
    smp = sr.PairSampler(sr.load_samples(tmp_path / "hr"), 2, crop=16, batch=4, seed=0,
                         weight_prior=priors.load("cnniqa-builtin"), weight_floor=0.1)
    w = smp.samples[0].weight
    assert w.shape == (1, 128, 128) and float(w.mean()) == pytest.approx(1.0, abs=1e-5)
    assert float(w[:, :, 72:].mean()) > 1.5 * float(w[:, :, :56].mean())
    b = smp.next()
    assert b.weight.shape == (4, 1, 32, 32)
    with pytest.raises(ValueError, match="weight_prior"):
        sr.finetune(sr.load_upscaler(tiny_state()), smp, None, sr.SRSettings(steps=1, crop=16, **L1))
    res = sr.finetune(sr.load_upscaler(tiny_state()), smp, None,
                      sr.SRSettings(steps=2, crop=16, batch=4, **L1, quality_weight_prior="cnniqa-builtin"))
    assert res.record["quality_weight_prior"] == "cnniqa-builtin" and len(res.history) == 2


def _cli_base(tmp_path):
    """A tiny upscaler file and one 64-pixel training photo for the command-line tests."""
    base = tmp_path / "base.pth"
    torch.save(tiny_state(), base)
    return base, photos(tmp_path / "hr", n=1, size=64)


def test_cli_quality_weighted(tmp_path, capsys):
    base, hr = _cli_base(tmp_path)
    out = tmp_path / "q.pth"
    assert _run(["sr-finetune", "--model", base, "-o", out, "--data", hr, "--steps", 2, "--crop", 16, "--batch", 1,
                 "--quality-weighted", "--quality-floor", 0.2]) == 0, capsys.readouterr().err
    meta = sr.read_metadata(out)  # .pth: the metadata beside it
    assert meta["quality_weight_prior"] == "cnniqa-builtin" and meta["quality_floor"] == 0.2
    assert meta["iqa_weight"] == 0.0  # no --prior: L1 only
    assert _run(["sr-finetune", "--model", base, "-o", tmp_path / "r.pth", "--data", hr, "--quality-floor", 0]) == 2
    assert "--quality-floor must be between" in capsys.readouterr().err


def test_perceptual_and_adversarial_terms_train_and_resume_exactly(tiny, tmp_path):
    """NLPD and the patch discriminator: finite terms, the discriminator in the checkpoint, exact resume."""
    hr = photos(tmp_path / "hr")
    s = dict(crop=16, batch=2, lr=1e-3, rank=2, **L1, perceptual_weight=0.5, adversarial_weight=0.01,
             checkpoint_every=2, seed=1)
    smp = lambda: sr.PairSampler(sr.load_samples(hr), tiny.scale, crop=16, batch=2, seed=1)  # noqa: E731
    whole = sr.finetune(tiny, smp(), None, sr.SRSettings(steps=4, **s))
    assert all(np.isfinite([h["nlpd"], h["adv"], h["disc"]]).all() for h in whole.history)
    ck = tmp_path / "adv.ckpt"
    sr.finetune(tiny, smp(), None, sr.SRSettings(steps=2, **s), checkpoint=ck)
    assert "disc" in torch.load(ck, weights_only=False)
    resumed = sr.finetune(tiny, smp(), None, sr.SRSettings(steps=4, **s), checkpoint=ck, resume=True)
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in resumed.history]


def test_cli_lora_exclude_leaves_layers_without_adapters(tmp_path, capsys):
    from safetensors.torch import load_file

    base, hr = _cli_base(tmp_path)
    out = tmp_path / "x.safetensors"
    assert _run(["sr-finetune", "--model", base, "-o", out, "--data", hr, "--steps", 1, "--crop", 16, "--batch", 1,
                 "--lora-exclude", r"^body\.0$"]) == 0, capsys.readouterr().err
    keys = [k.removeprefix("model.") for k in load_file(str(tmp_path / "x_lora.safetensors"))]
    assert keys and not any(k.startswith("body.0.") for k in keys) and any(k.startswith("body.2.") for k in keys)
    assert sr.read_metadata(out)["exclude"] == r"^body\.0$"
    applied = sr.apply_lora(sr.load_upscaler(base), tmp_path / "x_lora.safetensors")  # the spec travels with it
    assert applied.scale == 2
