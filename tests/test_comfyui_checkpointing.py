"""Per-block activation checkpointing inside ComfyUI's gradient pass, and fp8 weights (tests/comfy_scripts/
check_checkpointing.py), on tiny random-weight networks of ComfyUI 0.8's own model classes. About 1 minute on CPU."""
import json

import pytest
from comfy_harness import comfyui_path, run_script

pytestmark = pytest.mark.comfyui

FAMILIES = ("flux_dev", "sd3", "qwen_image", "lumina2")
#: Families whose blocks update their residual stream in place (Flux's ``img += ...``): there the negative control,
#: checkpointing without the recomputation's copy-on-write, gives a wrong gradient. The tiny SD3, Qwen-Image and
#: Lumina 2 blocks overwrite nothing their backward needs (measured: the control is right there too).
IN_PLACE = {"flux_dev"}


@pytest.fixture(scope="module")
def result():
    out = run_script("check_checkpointing.py", comfyui_path() / "input" / "example.png", *FAMILIES,
                     "node:flux_dev", "fp8", "scaled_fp8", timeout=600)
    assert out.returncode == 0, out.stderr[-5000:]
    return json.loads(out.stdout.split("RESULT ", 1)[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpointed_gradient_equals_plain_and_saves_less(result, family):
    """Reversible EDICT gradient with checkpointing on == off == plain autograd, and less held for backward."""
    r = result[family]
    assert r["blocks"] >= 1 and r["grad_norm"] > 0, r
    assert r["rel_diff_on"] <= 1e-5 and r["rel_diff_off"] <= 1e-5 and r["rel_diff_on_vs_off"] <= 1e-5, r
    assert r["saved_on"] < r["saved_off"] < r["saved_autograd"], r
    assert r["saved_with_recompute_on"] < r["saved_off"], r  # even with one block recomputed in the backward
    if family in IN_PLACE:
        assert r["rel_diff_unguarded"] > 1e-2, r  # without the guard the gradient is wrong: the test can fail


def test_node_follows_the_checkpointing_setting(result):
    """Latent MAP Ascent with checkpointing on and off: the same latent and scores; blocks restored after."""
    r = result["node:flux_dev"]
    assert r["node_latent_rel_diff_on_vs_off"] <= 1e-5 and r["node_scores_on"] == pytest.approx(r["node_scores_off"])
    assert max(r["node_scores_on"][1:]) > r["node_scores_on"][0] and r["blocks_restored"], r


@pytest.mark.parametrize("kind,weights", [("fp8", "Parameter:torch.float8_e4m3fn"),
                                          ("scaled_fp8", "QuantizedTensor:torch.float8_e4m3fn")])
def test_fp8_weights(result, kind, weights):
    """Flux dev with float8_e4m3fn weights cast to float32 as ComfyUI runs them: exact inversion, reversible ==
    autograd gradient, and the ascent raises the prior."""
    r = result[kind]
    assert r["weights"] == [weights] and r["manual_cast_dtype"] == "torch.float32", r
    assert r["inversion_error"] < 1e-4 and r["grad_rel_diff"] <= 1e-5 and r["grad_norm"] > 0, r
    assert max(r["scores"][1:]) > r["scores"][0], r
