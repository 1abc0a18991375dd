"""core/models/spandrel_denoiser.py: a spandrel Gaussian denoiser file as a pixel diffusion model (library, CLI)."""
import pytest
import torch

spandrel = pytest.importorskip("spandrel")


def _dncnn_file(tmp_path):
    from safetensors.torch import save_file
    from spandrel.architectures.DnCNN import DnCNN

    torch.manual_seed(0)
    net = DnCNN(in_nc=3, out_nc=3, nc=16, nb=4)
    path = tmp_path / "dncnn.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path, net.eval()


def test_load_model_takes_a_denoiser_file_in_its_trained_range(tmp_path):
    from iqa_map.core.models.loading import load_model

    path, net = _dncnn_file(tmp_path)
    loaded = load_model(f"denoiser:{path}", device="cpu")
    den = loaded.denoiser
    assert "DnCNN" in loaded.description
    assert den.sigma_max == pytest.approx(2 * 55 / 255)  # DnCNN's public range, on the [-1, 1] scale
    x = torch.rand(1, 3, 24, 24) * 2 - 1
    with torch.no_grad():
        want = net((x + 1) / 2) * 2 - 1  # the network denoises [0, 1] images
        assert torch.allclose(den(x, 0.2), want, atol=1e-5)


def test_enhance_runs_on_a_denoiser_file(tmp_path):
    import iqa_map

    path, _ = _dncnn_file(tmp_path)
    img = torch.rand(1, 3, 32, 32)
    res = iqa_map.enhance(img, model=f"denoiser:{path}", prior="niqe", iterations=1, steps=3, strength=0.3)
    assert res.image.shape == img.shape and torch.isfinite(res.image).all()


def test_a_denoiser_spec_that_is_not_a_denoiser_says_so(tmp_path):
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    from iqa_map.core.models.loading import load_model

    with pytest.raises(FileNotFoundError, match="denoiser file .* not found"):
        load_model(f"denoiser:{tmp_path / 'missing.pth'}", device="cpu")
    sr = tmp_path / "esrgan.safetensors"
    save_file({k: v.contiguous() for k, v in ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1,
                                                       scale=4).state_dict().items()}, str(sr))
    with pytest.raises(ValueError, match="not a Gaussian denoiser.*DnCNN"):
        load_model(f"denoiser:{sr}", device="cpu")
