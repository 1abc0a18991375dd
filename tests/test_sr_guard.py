"""The hack guard of SR fine-tuning (issue 39): periodic penalty, balanced IQA term, held-out judge with early
stop and the best step kept, flat-region texture, exact resume with the guard on; S-CNN; export permissions."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from helpers import DATA, need_shared
from iqa_map.core import priors, sr
from iqa_map.core.priors.base import Prior
from test_sr import photos, tiny_state

SCNN = DATA / "weights" / "dbcnn_scnn_synthetic.safetensors"


def test_periodic_penalty_zero_without_period_positive_for_grid():
    s, n = 4, 64
    y, x = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    # a change with no energy at the period's harmonics (k * n / s cycles): sinusoids of 3 and 5 cycles, a ramp-free
    # smooth change as a sharpening makes
    smooth = (0.02 * torch.sin(2 * torch.pi * 3 * x / n) + 0.01 * torch.cos(2 * torch.pi * 5 * y / n))[None, None]
    assert float(sr.periodic_energy(smooth, s)) < 1e-18 and float(sr.grid_share(smooth, s)) < 1e-12
    # a brightness shift is no grid either
    assert float(sr.periodic_energy(smooth + 0.1, s)) < 1e-18
    # an aperiodic random change: almost none of its energy (about 15/256 by chance) is periodic
    noise = torch.randn(1, 3, n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.01
    assert 0 < float(sr.grid_share(noise, s)) < 0.1
    # a grid at the scale's period: all of it, and the penalty is its energy in squared grey levels
    tile = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tile = (tile - tile.mean(dim=(-2, -1), keepdim=True)) / 255  # about one grey level
    grid = tile.repeat(1, 1, n // s, n // s)
    assert float(sr.grid_share(grid, s)) == pytest.approx(1.0)
    assert float(sr.periodic_energy(grid, s)) == pytest.approx(float((tile * 255).pow(2).mean()))
    mixed = grid + smooth
    share = float(sr.grid_share(mixed, s))
    assert 0 < share < 1 and share == pytest.approx(float(grid.pow(2).sum() / (mixed - mixed.mean()).pow(2).sum()))
    # a grid of another period (3 pixels) is not this scale's
    other = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    other = other.repeat(1, 1, 22, 22)
    assert float(sr.grid_share(other[..., :n, :n], s)) < 0.2


def test_balanced_term_scales_as_stated():
    g = torch.Generator().manual_seed(0)
    g_f, g_q = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    push = sr.balanced_gradient(g_f, g_q, 0.5)
    assert float(push.norm()) == pytest.approx(0.5 * float(g_f.norm()), rel=1e-5)
    assert torch.allclose(push / push.norm(), g_q / g_q.norm())  # the IQA direction, rescaled
    assert torch.allclose(sr.balanced_gradient(g_f, 1000 * g_q, 0.5), push, rtol=1e-5)  # a steeper prior: same push
    assert torch.allclose(sr.balanced_gradient(3 * g_f, g_q, 0.5), 3 * push, rtol=1e-5)  # follows fidelity
    assert torch.allclose(sr.balanced_gradient(g_f, g_q, 1.0), 2 * push, rtol=1e-5)


class Sharpness(Prior):
    """A toy prior: high-frequency energy of the image (higher = better), times ``k``; no calibration."""

    def __init__(self, k: float = 1.0, sign: float = 1.0):
        super().__init__(None)
        self.k, self.sign, self.name = k, sign, f"sharp{k:g}"

    def _native(self, img):
        hp = img[..., 1:, :] - img[..., :-1, :]
        return self.sign * self.k * hp.pow(2).mean(dim=(1, 2, 3)) * 100


def _settings(**kw):
    base = dict(crop=16, batch=2, lr=1e-2, rank=2, seed=3, judges="", grid_weight=0.0, checkpoint_every=2)
    return sr.SRSettings(**{**base, **kw})


def test_balanced_training_is_the_same_for_a_prior_1000_times_steeper(tmp_path):
    """In training: with balance on, Q x 1000 trains the same weights; with the raw weight it does not."""
    base = sr.load_upscaler(tiny_state())
    hr = photos(tmp_path / "hr")

    def run(k, **kw):
        smp = sr.PairSampler(sr.load_samples(hr), base.scale, crop=16, batch=2, seed=3)
        return sr.finetune(base, smp, Sharpness(k), _settings(steps=3, **kw)).merged_state_dict()

    a, b = run(1.0), run(1000.0)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    c, d = run(1.0, balance=False, iqa_weight=0.01), run(1000.0, balance=False, iqa_weight=0.01)
    assert any(not torch.allclose(c[k], d[k], atol=1e-4) for k in c)


def test_guard_stops_a_run_the_held_out_judge_says_gets_worse(tmp_path):
    """The optimised prior rewards sharpness, the judge penalises it: the guard stops early and keeps the base."""
    base = sr.load_upscaler(tiny_state())
    smp = sr.PairSampler(sr.load_samples(photos(tmp_path / "hr", n=6)), base.scale, crop=16, batch=2, seed=0,
                         holdout=2)
    assert len(smp.held) == 2 and not {s.name for s in smp.held} & {s.name for s in smp.samples}
    s = _settings(steps=20, judges="smooth", judge_every=2, patience=2, max_grid=1.0, max_psnr_drop=100.0,
                  balance=False, iqa_weight=0.2)
    res = sr.finetune(base, smp, Sharpness(), s, judges={"smooth": Sharpness(sign=-1.0)})
    g = res.record["guard"]
    assert g["stopped"] and g["stopped"]["step"] == 4 and len(res.history) == 4, g
    assert g["best_step"] == 0 and [e["step"] for e in g["curve"]] == [0, 2, 4]
    assert g["curve"][1]["judge"] < g["curve"][0]["judge"] and not g["holdout_from_training"]
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(res.model(x), base.model(x), atol=1e-6)  # the kept weights are the base's
    # the same run judged by the prior itself keeps going and keeps a later step
    res2 = sr.finetune(base, sr.PairSampler(sr.load_samples(tmp_path / "hr"), base.scale, crop=16, batch=2, seed=0,
                                            holdout=2), Sharpness(), s, judges={"sharp": Sharpness()})
    assert not res2.record["guard"]["stopped"] and res2.record["guard"]["best_step"] > 0


def test_a_grid_is_never_kept(tmp_path):
    """An evaluation whose change is mostly the scale's grid is not admissible, whatever the judge says."""
    guard = sr.JudgeGuard(every=1, patience=0, max_grid=0.15, max_psnr_drop=1.0)
    p = {"w": torch.zeros(2)}
    guard.update({"step": 0, "judge": 10.0, "grid": 0.0, "psnr_drop": 0.0}, p)
    p["w"] += 1
    guard.update({"step": 1, "judge": 50.0, "grid": 0.8, "psnr_drop": 0.1}, p)
    p["w"] += 1
    guard.update({"step": 2, "judge": 20.0, "grid": 0.1, "psnr_drop": 0.2}, p)
    guard.update({"step": 3, "judge": 30.0, "grid": 0.1, "psnr_drop": 2.0}, p)
    assert guard.best_step == 2 and torch.equal(guard.best_weights["w"], torch.full((2,), 2.0))
    assert [e["admissible"] for e in guard.curve] == [True, False, True, False]


def test_resume_is_exact_with_the_guard_on(tmp_path):
    base = sr.load_upscaler(tiny_state())
    hr = photos(tmp_path / "hr", n=6)
    s = dict(judges="prior", judge_every=2, patience=0, grid_weight=1.0, trust_weight=0.01, max_grid=1.0,
             max_psnr_drop=100.0)
    smp = lambda: sr.PairSampler(sr.load_samples(hr), base.scale, crop=16, batch=2, seed=3, holdout=2)  # noqa: E731
    whole = sr.finetune(base, smp(), Sharpness(), _settings(steps=5, **s))
    ck = tmp_path / "g.ckpt"

    def stop(info):
        if info["step"] == 3:
            raise sr.Interrupted("stop")

    with pytest.raises(sr.Interrupted):
        sr.finetune(base, smp(), Sharpness(), _settings(steps=5, **s), checkpoint=ck, callback=stop)
    assert "guard" in torch.load(ck, weights_only=False)
    resumed = sr.finetune(base, smp(), Sharpness(), _settings(steps=5, **s), checkpoint=ck, resume=True)
    a, b = whole.merged_state_dict(), resumed.merged_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole.record["guard"]["curve"] == resumed.record["guard"]["curve"]
    assert [e["step"] for e in whole.record["guard"]["curve"]] == [0, 2, 4, 5]
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in resumed.history]
    assert all(np.isfinite([h["grid"], h["trust"], h["iqa_scale"]]).all() for h in whole.history)


def test_flat_texture_sees_added_grain():
    g = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    hr = torch.stack([0.3 + 0.4 * x, 0.5 + 0.0 * y, 0.4 + 0.2 * y])[None]  # smooth: a sky
    hr[..., :, 40:] += 0.2 * torch.rand(1, 3, 64, 24, generator=g)  # a textured part
    grain = (hr + torch.randn(hr.shape, generator=g) * 3 / 255).clamp(0, 1)
    t = sr.flat_texture({"same": hr, "grain": grain}, hr)
    assert float(t["same"]) == pytest.approx(float(t["hr"])) and float(t["hr"]) < 0.1
    # 3 grey levels of noise per channel are 2 in the luma, most of it above the high-pass's cut
    assert float(t["grain"]) > float(t["hr"]) + 1.5


def test_exported_models_follow_the_umask(tmp_path):
    """safetensors 0.8 writes 0600; an exported model gets what the umask gives any other new file."""
    old = os.umask(0o022)
    try:
        state = tiny_state()
        m = sr.save_upscaler(state, tmp_path / "m.safetensors")
        p = sr.save_upscaler(state, tmp_path / "m.pth")
        ref = tmp_path / "plain.txt"
        ref.write_text("x")
        for f in (m, p, p.with_suffix(".pth.json")):
            assert stat.S_IMODE(f.stat().st_mode) == stat.S_IMODE(ref.stat().st_mode) == 0o644, f
        os.umask(0o077)
        q = sr.save_upscaler(state, tmp_path / "private.safetensors")
        assert stat.S_IMODE(q.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_scnn_prior_prefers_clean_photos():
    need_shared(SCNN)
    from helpers import dev_photo
    from iqa_map.core.priors.distortions import gaussian_blur, jpeg

    p = priors.load_local(SCNN, arch="scnn")
    assert p.name == "scnn:dbcnn_scnn_synthetic" and not p.lower_better
    clean = (dev_photo("105025.png", crop=224, dtype=torch.float32) + 1) / 2
    s = [float(p.native(x)) for x in (clean, gaussian_blur(clean, 2.0), jpeg(clean, 10))]
    assert s[0] > 0.5 and s[1] < 0.05 and s[2] < 0.05, s
    x = clean.clone().requires_grad_(True)
    p(x).sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    assert priors.load("scnn", weights_dir=SCNN.parent).name == "scnn"


def test_scnn_without_its_file_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights folder"):
        priors.load("scnn", weights_dir=tmp_path)


def test_cli_sr_finetune_help_explains_every_option():
    import argparse

    from iqa_map.cli import parser

    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    ft = sub.choices["sr-finetune"]
    undocumented = [a.option_strings for a in ft._actions if a.option_strings and not (a.help or "").strip()]
    assert not undocumented
    text = ft.format_help()
    for flag in ("--iqa-ratio", "--grid-weight", "--judges", "--patience", "--trust-weight", "--max-grid",
                 "--no-balance"):
        assert flag in text


def test_cli_upscale_prints_results_through_tqdm_write(tmp_path, monkeypatch, capsys):
    """Result lines go through tqdm.write (above the bar), not print (across it)."""
    from tqdm import tqdm

    from iqa_map.cli import main
    from test_sr import photos

    base = tmp_path / "base.pth"
    torch.save(tiny_state(), base)
    hr = photos(tmp_path / "hr", n=2, size=32)
    written = []
    monkeypatch.setattr(tqdm, "write", classmethod(lambda cls, s, *a, **k: written.append(s)))
    assert main(["upscale", str(hr), "--model", str(base), "-o", str(tmp_path / "up")]) == 0
    assert sorted(w.split(":")[0] for w in written) == ["p0.png", "p1.png"]
    assert "p0.png:" not in capsys.readouterr().out


def test_cli_sr_finetune_guard_options_reach_the_settings(tmp_path, capsys):
    from iqa_map.cli import main
    from test_sr import photos

    base = tmp_path / "base.pth"
    torch.save(tiny_state(), base)
    hr = photos(tmp_path / "hr", n=3, size=48)
    out = tmp_path / "t.safetensors"
    rc = main(["sr-finetune", "--model", str(base), "-o", str(out), "--data", str(hr), "--prior", "cnniqa-builtin",
               "--steps", "2", "--crop", "16", "--batch", "1", "--judges", "prior", "--judge-every", "1",
               "--grid-weight", "0.5", "--iqa-ratio", "1.5", "--no-balance", "--iqa-weight", "0.001"])
    assert rc == 0, capsys.readouterr().err
    meta = sr.read_metadata(out)
    assert (meta["judges"], meta["judge_every"], meta["grid_weight"], meta["iqa_ratio"], meta["balance"],
            meta["iqa_weight"]) == ("prior", 1, 0.5, 1.5, False, 0.001)
    assert [e["step"] for e in meta["guard"]["curve"]] == [0, 1, 2]
    assert "hack guard: kept step" in capsys.readouterr().out
    assert main(["sr-finetune", "--model", str(base), "-o", str(tmp_path / "u.pth"), "--data", str(hr),
                 "--max-grid", "2"]) == 2
    assert "--max-grid must be between 0 and 1" in capsys.readouterr().err
