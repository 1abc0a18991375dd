"""Training of the learned built-in prior ``cnniqa-builtin`` (training/nriqa.py)."""
import numpy as np
import pytest
import torch
from PIL import Image

from iqa_map.core import priors
from iqa_map.training import nriqa


def _photos(folder, n=3, size=(96, 80)):
    """Smooth random colour images with some texture: enough structure for SSIM to react to damage."""
    folder.mkdir()
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        low = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 10, generator=g), size=size[::-1], mode="bicubic")
        img = (low + 0.05 * torch.rand(low.shape, generator=g)).clamp(0, 1)
        Image.fromarray((img[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_ssim_target_is_zero_for_clean_and_grows_with_damage():
    x = torch.rand(1, 1, 40, 40)
    assert torch.allclose(nriqa.ssim_map(x, x), torch.ones(1, 1, 30, 30))
    smooth = torch.nn.functional.avg_pool2d(x, 5, 1, 2)
    damage = [float(1 - nriqa.ssim_map(smooth, (smooth + s * torch.randn_like(smooth)).clamp(0, 1)).mean())
              for s in (0.01, 0.05, 0.2)]
    assert 0 < damage[0] < damage[1] < damage[2]


def test_dataset_labels_follow_the_damage(tmp_path):
    from iqa_map.training.data import load_images
    images = load_images(_photos(tmp_path / "photos"), 72)
    clean_only = {**nriqa.DEFAULTS, "p_clean": 1.0}
    _, ys = nriqa.make_dataset(images, clean_only, 20, torch.Generator().manual_seed(0), progress=False)
    assert torch.allclose(ys, torch.zeros(20), atol=1e-4)
    noisy = {**nriqa.DEFAULTS, "p_clean": 0.0, "p_chain": 0.0, "blur_sigma": [0.3, 0.3001],
             "noise_std": [40.0, 40.01], "jpeg_quality": [90, 90]}
    xs, ys = nriqa.make_dataset(images, noisy, 30, torch.Generator().manual_seed(0), progress=False)
    assert xs.dtype == torch.uint8 and xs.shape == (30, 3, 32, 32)
    assert float(ys.max()) > 20  # std-40 noise on a smooth patch is heavy damage to SSIM


def test_training_is_deterministic_and_exports_a_loadable_prior(tmp_path):
    data = _photos(tmp_path / "photos")
    for run in ("a", "b"):
        nriqa.main(["--data", str(data), "--out", str(tmp_path / run), "--samples", "200", "--epochs", "1",
                    "--batch", "32", "--seed", "5"])
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert all(torch.equal(t, b["net"][k]) for k, t in a["net"].items())
    assert (tmp_path / "a" / "config.json").is_file() and a["log"][0]["epoch"] == 1

    nriqa.main(["--out", str(tmp_path / "a"), "--export", "--export-dir", str(tmp_path / "ship")])
    path = tmp_path / "ship" / nriqa.EXPORT_NAME
    assert path.with_suffix(".sha256").read_text().split()[1] == path.name
    p = priors.load_local(path, arch="cnniqa")
    net = nriqa.CNNIQANet()
    net.load_state_dict(a["net"])
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(p.native(x), net(x), atol=0.05, rtol=1e-2)  # fp16 weights


def test_training_without_data_says_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match="--data is required"):
        nriqa.main(["--out", str(tmp_path / "r")])
