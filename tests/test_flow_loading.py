"""Flux and SD3 diffusers folders through load_model, iqa_map.enhance and the command line (random weights)."""
import json

import pytest
import torch

import iqa_map
from iqa_map.cli import main
from iqa_map.core.io.imageio import load_image, save_image
from iqa_map.core.models.flow_diffusers import FluxDenoiser, SD3Denoiser
from iqa_map.core.models.loading import load_model
from iqa_map.core.priors.base import Prior

from benchmarks import random_flow


class Brightness(Prior):
    """Toy prior: mean intensity. Smooth, so a few steps must raise it whatever the random VAE draws."""

    name = "brightness"

    def _native(self, img):
        return img.mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("flowpipes")
    return {fam: random_flow.save_random_pipeline(root, fam) for fam in random_flow.FAMILIES}


def _photo(seed=0, h=40, w=56):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=g), size=(h, w),
                                           mode="bilinear", align_corners=False)


@pytest.mark.parametrize("fam", random_flow.FAMILIES)
def test_load_model_reads_flow_pipeline_folders(folders, fam):
    m = load_model(str(folders[fam]), device="cpu")
    want = SD3Denoiser if fam == "sd3" else FluxDenoiser
    assert isinstance(m.denoiser, want) and m.denoiser.sigma_max == 1.0
    scale, shift = random_flow.VAE_SCALE["sd3" if fam == "sd3" else "flux"]
    assert (m.codec.scale, m.codec.shift, m.codec.factor) == (scale, shift, 8)
    assert set(m.cond) >= {"prompt_embeds", "pooled_prompt_embeds"}
    assert m.denoiser.schedule.dynamic == (fam == "flux-dev")
    described = load_model(str(folders[fam]), device="cpu", prompt="a b")
    assert not torch.allclose(described.cond["prompt_embeds"], m.cond["prompt_embeds"])
    half = load_model(str(folders[fam]), device="cpu", dtype=torch.bfloat16)
    assert half.denoiser.dtype == half.codec.vae.dtype == torch.bfloat16


def test_enhance_with_a_flux_pipeline_raises_the_prior(folders):
    img = _photo()  # 40x56: padded to a multiple of 16 (VAE 8 x Flux's 2x2 packing), cropped back
    res = iqa_map.enhance(img, model=str(folders["flux-dev"]), prior=Brightness(), device="cpu", steps=3,
                          strength=1.0, iterations=4, optimizer="adam", lr=0.05, fidelity="none")
    rep = res.report
    assert res.image.shape == img.shape and torch.isfinite(res.image).all()
    assert rep["inversion_error"] < 1e-5  # float64 pair: the sampler's round trip is exact
    assert rep["output_scores"]["brightness"] > rep["input_scores"]["brightness"] + 1e-3
    assert rep["denoiser_evals"] > 0
    # Checkpointing the blocks changes memory, not results.
    on = iqa_map.enhance(img, model=str(folders["flux-dev"]), prior=Brightness(), device="cpu", steps=3,
                         strength=1.0, iterations=4, optimizer="adam", lr=0.05, fidelity="none",
                         checkpointing="on")
    assert torch.allclose(on.image, res.image, atol=1e-6)


def test_enhance_command_with_flux_and_sd3_folders(folders, tmp_path):
    src = tmp_path / "p.png"
    save_image(_photo(1, 48, 64), src)
    # schnell with the few-step preset (4 steps, the length it is distilled for); SD3 at 2 steps.
    for fam, extra in (("flux-schnell", ["--preset", "few-step"]), ("sd3", ["--steps", "2"])):
        out = tmp_path / fam
        assert main(["enhance", str(src), "-o", str(out), "--model", str(folders[fam]), "--prior", "brisque",
                     "--iterations", "1", "--fidelity", "mse", "--device", "cpu", "--checkpointing", "on",
                     "--report", str(tmp_path / f"{fam}.json"), *extra]) == 0
        assert load_image(out / "p_enhanced.png").shape == (1, 3, 48, 64)
        report = json.loads((tmp_path / f"{fam}.json").read_text())
        assert report["inversion_error"] < 1e-5 and report["model"] == str(folders[fam])
        assert report["settings"]["steps"] == (4 if fam == "flux-schnell" else 2)
        assert report["settings"]["checkpointing"] == "on"
