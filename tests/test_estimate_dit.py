"""The DiT estimates' counts: meta-device counting equals real runs, and the FLOP formulas equal the counter."""
import pytest
import torch

from benchmarks import estimate_dit as E

# Each family's layout at toy width (dual attention and qk-norm for SD3.5, refiners for Z-Image).
TINY = {
    "flux-dev": dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=16,
                     num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32, guidance_embeds=True,
                     axes_dims_rope=(4, 6, 6)),
    "sd35-medium": dict(sample_size=32, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8,
                        num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=32,
                        pooled_projection_dim=64, out_channels=16, pos_embed_max_size=32, dual_attention_layers=(0,),
                        qk_norm="rms_norm"),
    "qwen-image": dict(patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16,
                       num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6)),
    "z-image": dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=64, n_layers=2,
                    n_refiner_layers=1, n_heads=4, n_kv_heads=4, cap_feat_dim=32, axes_dims=[8, 4, 4],
                    axes_lens=[64, 32, 32]),
}
# Full width, two layers: the per-token terms dominate as in the real models.
SHALLOW = {
    "flux-dev": dict(num_layers=2, num_single_layers=2),
    "sd35-medium": dict(num_layers=2, dual_attention_layers=(0,)),
    "qwen-image": dict(num_layers=2),
    "z-image": dict(n_layers=2, n_refiner_layers=1),
}


@pytest.mark.parametrize("name", list(E.MODELS))
def test_meta_device_counts_equal_a_real_cpu_run(name):
    """What the table counts on the meta device (shapes only) is what a real run computes and saves."""
    real = E.measure(name, size=64, config=TINY[name], device="cpu", dtype=torch.float32, text=8)
    meta = E.measure(name, size=64, config=TINY[name], device="meta", dtype=torch.float32, text=8)
    assert real["params"] == meta["params"] and real["blocks"] == meta["blocks"] > 0
    assert real["fwd_flops"] == meta["fwd_flops"] > 0
    assert real["bwd_flops"] == meta["bwd_flops"] > 0
    # The GPU flash kernel keeps a few bytes of RNG state the CPU one does not.
    for k in ("saved", "saved_ckpt", "block_max"):
        assert meta[k] == pytest.approx(real[k], rel=0.01), k
    assert real["saved_ckpt"] < real["saved"]


@pytest.mark.parametrize("name", list(E.MODELS))
def test_flop_formula_equals_the_counter(name):
    cfg = {**E.CONFIGS[name], **SHALLOW[name]}
    text = E.MODELS[name][2]
    m = E.measure(name, size=256, config=cfg, text=text)
    assert E.formula_flops(name, cfg, (256 // 16) ** 2, text) == pytest.approx(m["fwd_flops"], rel=0.005)


def test_estimate_arithmetic():
    m = dict(params=1e9, fwd_flops=1e12, bwd_flops=1.5e12, saved=10 * E.GiB, saved_ckpt=E.GiB, block_max=E.GiB)
    vae = dict(fwd_flops=1e12, bwd_flops=1e12, saved=4 * E.GiB, saved_ckpt=E.GiB, block_max=E.GiB)
    plain, ck = (E.estimate(m, vae, 20, 20, 2, c) for c in (False, True))
    assert plain["gib"] == pytest.approx((2e9 + E.VAE_PARAMS * 2) / E.GiB + 11 + E.ALLOWANCE_GIB)
    assert ck["gib"] == pytest.approx((2e9 + E.VAE_PARAMS * 2) / E.GiB + 2 + E.ALLOWANCE_GIB)
    # Inversion 40 forwards; 21 gradients of 40 forwards + 40 x (forward + backward) + the decoder's 2.
    assert plain["tflop"] == pytest.approx(40 + 21 * (40 + 40 * 2.5 + 2))
    assert ck["tflop"] == pytest.approx(40 + 21 * (40 + 40 * 3.5 + 3))
    assert E.estimate(m, vae, 20, 20, 1, True, tiles=4)["tflop"] == pytest.approx(4 * ck["tflop"])
