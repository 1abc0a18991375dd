"""The built-in denoiser: shipped weights, denoising quality, exact EDICT inversion, training + resume."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from iqa_map.core import edict
from iqa_map.core.models.builtin import (WEIGHTS_DIR, WEIGHTS_NAME, BuiltinDenoiser, load_builtin, sha256_file,
                                         verify_weights)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEV = SHARED / "data" / "images" / "dev"
TRAIN = SHARED / "data" / "images" / "train"
needs_dev = pytest.mark.skipif(not DEV.is_dir(), reason=f"dev images not found at {DEV} (../shared is absent)")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The inputs here are tiny: one thread avoids OpenMP barrier stalls on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def den() -> BuiltinDenoiser:
    return load_builtin()


def dev_crop(size: int = 96) -> torch.Tensor:
    """A [1, 3, size, size] crop of a CBSD68 image in [-1, 1] (float64)."""
    from PIL import Image

    im = np.array(Image.open(DEV / "101085.png").convert("RGB"))
    t = torch.from_numpy(im).permute(2, 0, 1)[None].double() / 127.5 - 1
    return t[..., 100:100 + size, 150:150 + size].contiguous()


def test_shipped_checksum_matches():
    st, cfg = verify_weights()
    recorded = (WEIGHTS_DIR / f"{WEIGHTS_NAME}.sha256").read_text()
    assert f"{sha256_file(st)}  {st.name}" in recorded
    assert f"{sha256_file(cfg)}  {cfg.name}" in recorded
    assert st.stat().st_size + cfg.stat().st_size <= 20 * 2 ** 20


def test_corrupt_or_missing_weights_give_clear_errors(tmp_path):
    for p in WEIGHTS_DIR.glob(f"{WEIGHTS_NAME}.*"):
        shutil.copy(p, tmp_path / p.name)
    with open(tmp_path / f"{WEIGHTS_NAME}.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_builtin(weights_dir=tmp_path)
    (tmp_path / f"{WEIGHTS_NAME}.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_builtin(weights_dir=tmp_path)


def test_interface_any_size_and_sigma_zero(den):
    assert 0 < den.sigma_min < den.sigma_max
    x = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = den(x, torch.tensor([0.1, 0.5]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(den(x, 0.0), x)  # c_skip = 1, c_out = 0 at sigma 0
    s = den.sigmas(10, 0.5)
    assert len(s) == 11 and s[-1] == 0 and s[0] < den.sigma_max


@needs_dev
def test_denoises_dev_crop_at_std25(den):
    x = dev_crop(128).float()
    sigma = 2 * 25 / 255
    y = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))

    def psnr(a):  # on [-1, 1]: peak-to-peak 2
        return 10 * math.log10(4 / (a.clamp(-1, 1) - x).pow(2).mean().item())

    with torch.inference_mode():
        out = den(y, sigma)
    assert psnr(out) >= psnr(y) + 6.0, (psnr(y), psnr(out))


@needs_dev
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-8)])
@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_edict_roundtrip_is_exact(dtype, tol, strength):
    den = load_builtin(dtype=dtype)  # network and sampler state both in `dtype`
    x = dev_crop(32).to(dtype)
    sigmas = den.sigmas(10, strength)
    latents = edict.invert(den, x, sigmas, mix=0.93, state_dtype=dtype)
    rec, _ = edict.sample(den, latents, sigmas, mix=0.93, grad=None, state_dtype=dtype)
    assert latents[0].dtype == rec.dtype == dtype
    assert (latents[0] - x).abs().max() > 0.1  # the inversion did go somewhere
    rel = ((rec - x).norm() / x.norm()).item()
    assert rel <= tol, rel


def _tiny_photo_folder(folder: Path) -> Path:
    """Three small photos: crops of training photos where ../shared is present, else smooth synthetic images."""
    from PIL import Image

    folder.mkdir()
    sources = sorted(TRAIN.iterdir())[:3] if TRAIN.is_dir() else []
    for i in range(3):
        if sources:
            im = Image.open(sources[i]).convert("RGB").crop((0, 0, 48, 40))
        else:
            g = torch.Generator().manual_seed(i)
            low = torch.nn.functional.interpolate(torch.rand(1, 3, 5, 6, generator=g), size=(40, 48), mode="bicubic")
            im = Image.fromarray((low[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        im.save(folder / f"img{i}.png")
    return folder


def test_training_runs_and_resumes_exactly(tmp_path):
    from iqa_map.training.__main__ import main

    data = _tiny_photo_folder(tmp_path / "photos")
    tiny = ["--data", str(data), "--crop", "16", "--batch", "2", "--channels", "8,16", "--enc-blocks", "1",
            "--dec-blocks", "1", "--mid-blocks", "1", "--lr-warmup", "0", "--lr-final", "1.0", "--seed", "3",
            "--log-every", "1", "--no-progress", "--no-snapshots"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main([*tiny, "--out", str(straight), "--steps", "4"]) == 0
    assert main([*tiny, "--out", str(split), "--steps", "2"]) == 0
    assert torch.load(split / "checkpoint.pt", weights_only=False)["step"] == 2
    with pytest.raises(ValueError, match="cannot change batch"):
        main(["--out", str(split), "--resume", "--steps", "4", "--batch", "3"])
    assert main(["--out", str(split), "--resume", "--steps", "4", "--no-progress"]) == 0

    a = torch.load(straight / "checkpoint.pt", weights_only=False)
    b = torch.load(split / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    assert "step 3 " in (split / "train.log").read_text()  # the counter went on from 2
    for key in ("net", "ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name} differs after resume"
    for pid, st in a["opt"]["state"].items():
        assert torch.equal(st["exp_avg"], b["opt"]["state"][pid]["exp_avg"])
        assert torch.equal(st["exp_avg_sq"], b["opt"]["state"][pid]["exp_avg_sq"])
    assert torch.equal(a["gen"], b["gen"])

    # The export is loadable through the public loader.
    den = load_builtin(weights_dir=split / "export")
    x = torch.zeros(1, 3, 20, 20)
    assert den(x, 0.3).shape == x.shape
