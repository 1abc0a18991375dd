"""The built-in denoiser: shipped weights, denoising quality, exact EDICT inversion, training + resume."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from iqa_map.core.sampling import edict
from iqa_map.core.io.files import sha256_file
from iqa_map.core.models.builtin import (WEIGHTS_DIR, WEIGHTS_NAME, BuiltinDenoiser, load_builtin,
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


def test_own_blocks_equal_diffusers_and_the_shipped_weights_load_strictly():
    """core/models/blocks.py against diffusers' blocks in the configurations the built-in model used: same
    parameter names, same outputs (float32 and float64); the shipped weights load with strict keys and the
    whole network gives the diffusers-built network's output."""
    pytest.importorskip("diffusers", reason="diffusers not installed: nothing to compare with")
    from diffusers.models import embeddings as de
    from diffusers.models import resnet as dr

    from iqa_map.core.models import blocks as B
    from iqa_map.core.models.builtin import load_builtin

    g = torch.Generator().manual_seed(0)
    pairs = [(B.Timesteps(64), de.Timesteps(64, flip_sin_to_cos=True, downscale_freq_shift=0),
              lambda: 1000 * torch.randn(5, generator=g)),
             (B.Timesteps(7), de.Timesteps(7, flip_sin_to_cos=True, downscale_freq_shift=0),
              lambda: torch.randn(3, generator=g)),
             (B.TimestepEmbedding(64, 128), de.TimestepEmbedding(64, 128), lambda: torch.randn(5, 64, generator=g)),
             (B.Downsample2D(16, 32), dr.Downsample2D(16, use_conv=True, out_channels=32, kernel_size=2, padding=0,
                                                      name="op"), lambda: torch.randn(2, 16, 12, 10, generator=g)),
             (B.Downsample2D(16, 32), dr.Downsample2D(16, use_conv=True, out_channels=32, kernel_size=2, padding=0,
                                                      name="op"), lambda: torch.randn(1, 16, 7, 9, generator=g)),
             (B.Upsample2D(32, 16), dr.Upsample2D(32, use_conv_transpose=True, out_channels=16, kernel_size=2,
                                                  padding=0), lambda: torch.randn(2, 32, 6, 5, generator=g))]
    torch.set_grad_enabled(False)
    try:
        _compare(pairs)
    finally:
        torch.set_grad_enabled(True)
    den = load_builtin(device="cpu")  # strict load of the shipped weights into our blocks
    assert all("Conv2d_0" not in k for k in den.network.state_dict())
    x, c = torch.rand(1, 3, 32, 40, generator=g) * 2 - 1, torch.tensor([0.3])
    ref = _diffusers_unet(den.network)
    with torch.no_grad():
        assert torch.allclose(den.network(x, c), ref(x, c), rtol=0, atol=1e-6)


def _compare(pairs):
    for ours, theirs, make in pairs:
        assert list(ours.state_dict()) == list(theirs.state_dict()), type(ours).__name__
        ours.load_state_dict(theirs.state_dict())
        for dtype in (torch.float32, torch.float64):
            x = make().to(dtype)
            a, b = ours.to(dtype)(x), theirs.to(dtype)(x)
            assert a.dtype == b.dtype and a.shape == b.shape
            assert torch.allclose(a, b, rtol=0, atol=1e-6 * max(1.0, float(b.abs().max()))), type(ours).__name__


def _diffusers_unet(net):
    """The built-in network with diffusers' four blocks in place of ours, the same weights."""
    import copy

    from diffusers.models import embeddings as de
    from diffusers.models import resnet as dr

    ref = copy.deepcopy(net)
    ref.time_proj = de.Timesteps(net.time_proj.num_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
    ref.time_embed = de.TimestepEmbedding(net.time_embed.linear_1.in_features, net.time_embed.linear_1.out_features)
    ref.down = torch.nn.ModuleList(dr.Downsample2D(d.conv.in_channels, use_conv=True, out_channels=d.conv.out_channels,
                                                   kernel_size=2, padding=0, name="op") for d in net.down)
    ref.up = torch.nn.ModuleList(dr.Upsample2D(u.conv.in_channels, use_conv_transpose=True,
                                               out_channels=u.conv.out_channels, kernel_size=2, padding=0)
                                 for u in net.up)
    ref.load_state_dict(net.state_dict())
    return ref.eval()


def test_nodes_and_the_builtin_model_run_without_diffusers():
    """What ComfyUI-Manager installs (requirements.txt) has no diffusers: every node registers, the built-in
    model loads its shipped weights and denoises, EDICT inverts; loading a Stable Diffusion folder says what to
    install."""
    import subprocess
    import sys

    from helpers import REPO
    code = (
        "import sys; sys.modules['diffusers'] = None\n"
        "import torch\n"
        "from iqa_map.nodes import NODES as N\n"
        "model, vae = N['IQAMAP_LoadBuiltinPriorModel'].execute('cpu')\n"
        "x = torch.rand(1, 3, 24, 24)\n"
        "from iqa_map.core import map as M\n"
        "inv = M.invert(model.denoiser, x * 2 - 1, steps=3, strength=0.3)\n"
        "print('OK', len(N), tuple(inv.pair[0].shape))\n"
        "from iqa_map.core.models.loading import _load_sd\n"
        "from pathlib import Path\n"
        "try:\n"
        "    _load_sd(Path('nowhere'), 'cpu', torch.float32)\n"
        "except ImportError as e:\n"
        "    print('ERR', e)\n"
        "assert sys.modules['diffusers'] is None\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO.parent, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK " in out.stdout and "(1, 3, 24, 24)" in out.stdout, out.stdout
    assert "need diffusers" in out.stdout and "pip install 'diffusers>=0.30'" in out.stdout, out.stdout
