"""Memory and time of one enhancement of a 1024x1024 photo with a DiT flow model, from counts (no GPU needed).

Each transformer is built with its published config on PyTorch's ``meta``
device (shapes only, no memory) and run once at the photo's token count:
``FlopCounterMode`` counts the forward and the input-gradient backward FLOPs,
``saved_tensors_hooks`` the bytes autograd keeps for the backward (parameters
excluded), plain and with :func:`~iqa_map.core.models.checkpointing.checkpoint_blocks`.
Attention runs as the fused (flash) kernel a GPU uses, which keeps ``q, k, v``,
the output and the row log-sum-exp, not the ``L x L`` matrix. The counts are
checked against closed-form formulas and against real CPU runs of the tiny
configs in tests/test_estimate_dit.py.

Memory = weights + the larger of (one network evaluation's backward graph, the
VAE decoder's) + a fixed allowance (CUDA context, allocator slack, prior): the
reversible sampler's backward holds one evaluation's graph at a time, and the
decoder's graph is freed before the sampler's backward starts. Time = FLOPs /
(peak x utilisation); a gradient costs the sampling forward pass (2 evaluations
a step), one evaluation and one backward per evaluation again, and with
checkpointing one more forward per evaluation. Estimates, not measurements:
no GPU was available to measure them.

    python -m benchmarks.estimate_dit            # the table (docs/models.md)
"""
from __future__ import annotations

import argparse
import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F

from benchmarks.random_flow import FULL

GiB = 1024 ** 3
# Published transformer configs (diffusers config.json) beyond random_flow.FULL's.
CONFIGS = {
    **FULL,
    "qwen-image": dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
                       num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False,
                       axes_dims_rope=(16, 56, 56)),
    "z-image": dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=3840, n_layers=30,
                    n_refiner_layers=2, n_heads=30, n_kv_heads=30, qk_norm=True, cap_feat_dim=2560),
}
# name: (label, diffusers class, text tokens of the empty prompt as the pipeline pads it)
MODELS = {
    "flux-dev": ("Flux.1 dev", "FluxTransformer2DModel", 512),
    "sd35-medium": ("SD3.5 medium", "SD3Transformer2DModel", 333),
    "qwen-image": ("Qwen-Image", "QwenImageTransformer2DModel", 64),
    "z-image": ("Z-Image", "ZImageTransformer2DModel", 64),
}
# Cards: (label, memory GiB, dense bf16 tensor TFLOPS).
CARDS = {"24GB": ("RTX 4090 24 GB", 24, 165.0), "80GB": ("H100 SXM 80 GB", 80, 989.0)}
UTILISATION = 0.4      # fraction of peak a large bf16 GEMM/attention workload sustains (assumed)
ALLOWANCE_GIB = 2.0    # CUDA context, allocator slack, the prior, latents
VAE_PARAMS = 84e6


def flash_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False):
    """SDPA as the fused (flash) kernel a GPU runs for these shapes: saves q, k, v, the output and the row
    log-sum-exp, not the L x L matrix. Padding masks of all-valid tokens (the empty prompt's) cost the same
    as none, so a mask is dropped. On the CPU (the tests' reference runs) its flash kernel stands in."""
    if key.shape[1] != query.shape[1]:  # grouped heads
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    if query.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, is_causal,
                                                                         scale=scale)[0]
    return torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, 0.0, is_causal, False,
                                                             scale=scale)[0]


def flop_counter():
    """``FlopCounterMode`` that also counts the CPU flash kernel (as its GPU twin)."""
    from torch.utils import flop_counter as fc

    def fwd(q, k, v, *args, out_shape=None, **kwargs):
        return fc.sdpa_flop_count(q, k, v)

    def bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs):
        return fc.sdpa_backward_flop_count(grad_out, q, k, v)

    aten = torch.ops.aten
    return fc.FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: fwd,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd})


@contextlib.contextmanager
def fused_attention():
    orig = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = flash_attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = orig


def build(name: str, config: Optional[dict] = None, device="meta", dtype=torch.bfloat16):
    import diffusers

    cls = getattr(diffusers, MODELS[name][1])
    with torch.device(device):
        model = cls(**(config or CONFIGS[name]))
    return model.to(dtype).eval().requires_grad_(False)


def inputs(name: str, model, size: int, text: int, device="meta", dtype=torch.bfloat16):
    """``(call, x)``: a function running the model as its pipeline does on a ``size`` photo, and its latent input."""
    cfg, lat = model.config, size // 8
    e = lambda *s, dt=dtype: torch.empty(*s, device=device, dtype=dt)  # noqa: E731
    t = e(1)
    if name == "flux-dev":
        x = e(1, (lat // 2) ** 2, cfg.in_channels).requires_grad_(True)
        kw = dict(timestep=t, pooled_projections=e(1, cfg.pooled_projection_dim),
                  encoder_hidden_states=e(1, text, cfg.joint_attention_dim), txt_ids=e(text, 3),
                  img_ids=e((lat // 2) ** 2, 3), guidance=e(1, dt=torch.float32) if cfg.guidance_embeds else None)
        return (lambda: model(hidden_states=x, return_dict=False, **kw)[0]), x
    if name == "sd35-medium":
        x = e(1, cfg.in_channels, lat, lat).requires_grad_(True)
        kw = dict(timestep=t, encoder_hidden_states=e(1, text, cfg.joint_attention_dim),
                  pooled_projections=e(1, cfg.pooled_projection_dim))
        return (lambda: model(hidden_states=x, return_dict=False, **kw)[0]), x
    if name == "qwen-image":
        x = e(1, (lat // 2) ** 2, cfg.in_channels).requires_grad_(True)
        kw = dict(timestep=t, encoder_hidden_states=e(1, text, cfg.joint_attention_dim),
                  encoder_hidden_states_mask=None, img_shapes=[(1, lat // 2, lat // 2)])
        return (lambda: model(hidden_states=x, return_dict=False, **kw)[0]), x
    x = e(cfg.in_channels, 1, lat, lat).requires_grad_(True)
    cap = e(text, cfg.cap_feat_dim)
    return (lambda: model([x], t, [cap], return_dict=False)[0][0]), x


class SavedBytes:
    """Bytes autograd saves for the backward, parameters and repeats excluded; per block too."""

    def __init__(self, model):
        self.params = {id(p) for p in model.parameters()}
        self.seen, self.keep, self.total, self.mark = set(), [], 0, 0

    def pack(self, t):
        base = t._base if t._base is not None else t
        if id(base) not in self.params and id(t) not in self.params and id(base) not in self.seen:
            self.seen.add(id(base))
            self.keep.append(base)  # keeps ids unique while counting
            self.total += base.numel() * base.element_size()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


def count(model, call, x, blocks, checkpointed=None) -> dict:
    """Forward and input-gradient backward FLOPs and saved bytes of ``call()`` (input ``x``), plain and within
    ``checkpointed()`` (default: :func:`checkpoint_blocks` of ``model``), and the most one of ``blocks`` saves."""
    from iqa_map.core.models.checkpointing import checkpoint_blocks

    counter, per_block = SavedBytes(model), []
    handles = [b.register_forward_pre_hook(lambda m, a: setattr(counter, "mark", counter.total)) for b in blocks]
    handles += [b.register_forward_hook(lambda m, a, o: per_block.append(counter.total - counter.mark))
                for b in blocks]
    with fused_attention():
        try:
            with flop_counter() as fwd, counter.hooks():
                y = call()
        finally:
            for h in handles:
                h.remove()
        with flop_counter() as bwd:
            torch.autograd.grad(y, x, torch.ones_like(y) if y.device.type != "meta" else torch.empty_like(y))
        del y
        ck = SavedBytes(model)
        with (checkpointed or (lambda: checkpoint_blocks(model)))(), ck.hooks():
            call()
    return {"params": sum(p.numel() for p in model.parameters()), "fwd_flops": fwd.get_total_flops(),
            "bwd_flops": bwd.get_total_flops(), "saved": counter.total, "saved_ckpt": ck.total,
            "block_max": max(per_block, default=0), "blocks": len(blocks)}


def measure(name: str, size: int = 1024, config: Optional[dict] = None, device="meta", dtype=torch.bfloat16,
            text: Optional[int] = None) -> dict:
    """:func:`count` for model ``name`` (its published config, or ``config``) on a ``size`` photo."""
    from iqa_map.core.models.checkpointing import find_blocks

    model = build(name, config, device, dtype)
    call, x = inputs(name, model, size, MODELS[name][2] if text is None else text, device, dtype)
    return count(model, call, x, find_blocks(model))


def measure_vae(size: int = 1024, device="meta", dtype=torch.bfloat16) -> dict:
    """The 16-channel KL VAE decoder (Flux's, SD3's; Z-Image uses Flux's) at ``size``, its ResNets as blocks."""
    from diffusers import AutoencoderKL

    from iqa_map.core.models.checkpointing import CODEC_LISTS, checkpoint_blocks, find_blocks

    with torch.device(device):
        vae = AutoencoderKL(latent_channels=16, block_out_channels=(128, 256, 512, 512),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2, use_quant_conv=False, use_post_quant_conv=False)
    vae = vae.to(dtype).eval().requires_grad_(False)
    z = torch.empty(1, 16, size // 8, size // 8, device=device, dtype=dtype, requires_grad=True)
    return count(vae, lambda: vae.decode(z).sample, z, find_blocks(vae.decoder, math.inf, CODEC_LISTS),
                 lambda: checkpoint_blocks(vae.decoder, True, math.inf, CODEC_LISTS))


def formula_flops(name: str, config: dict, img_tokens: int, text: int) -> float:
    """Closed-form forward FLOPs: 2 x (per-token linear weights) x tokens + 4 x L^2 x width per attention.

    Flux, SD3 and Qwen-Image blocks hold 12 d^2 weights per token and stream (q, k, v, out: 4 d^2; a 4x MLP:
    8 d^2; modulation acts once per image, not per token); SD3.5's dual-attention layers add an image-only
    attention (4 d^2); Flux's single blocks hold 12 d^2 shared by all tokens. Z-Image: 4 d^2 of attention and
    a SwiGLU of hidden h (3 d h) per token, refiner layers on image and text tokens apart. All four embed a
    64-value patch (16 latent channels x 2 x 2) into d and back, and the text's width into d.
    """
    c = config
    T = img_tokens + text
    patch = 16 * 2 * 2
    if name in ("flux-dev", "qwen-image"):
        d = c["num_attention_heads"] * c["attention_head_dim"]
        layers = c["num_layers"] + c.get("num_single_layers", 0)
        embed = 2 * d * (2 * patch * img_tokens + c["joint_attention_dim"] * text)
        return 2 * 12 * d * d * T * layers + 4 * T * T * d * layers + embed
    if name == "sd35-medium":
        d = c["num_attention_heads"] * c["attention_head_dim"]
        n, dual = c["num_layers"], len(c.get("dual_attention_layers", ()))
        # The last block's text stream is context_pre_only: its attention output and MLP are skipped (9 d^2).
        lin = 12 * d * d * T * n + 4 * d * d * img_tokens * dual - 9 * d * d * text
        embed = 2 * d * (2 * patch * img_tokens + c["joint_attention_dim"] * text)
        return 2 * lin + 4 * T * T * d * n + 4 * img_tokens ** 2 * d * dual + embed
    d, n, r = c["dim"], c["n_layers"], c["n_refiner_layers"]
    h = int(d / 3 * 8)  # Z-Image's FFN width: 8/3 d (10240 at d = 3840)
    per_tok = 4 * d * d + 3 * d * h
    embed = 2 * d * (2 * patch * img_tokens + c["cap_feat_dim"] * text)
    return (2 * per_tok * (T * n + (img_tokens + text) * r)
            + 4 * d * (T * T * n + (img_tokens ** 2 + text ** 2) * r) + embed)


def peak_graph(m: dict, checkpointing: bool) -> float:
    """Bytes of one backward graph at its peak: all saved activations plus one block's gradients in flight,
    or, checkpointed, the block inputs plus one block recomputed."""
    return (m["saved_ckpt"] if checkpointing else m["saved"]) + m["block_max"]


def estimate(m: dict, vae: dict, steps: int, iterations: int, weight_bytes: float, checkpointing: bool,
             tiles: int = 1) -> dict:
    """GiB and TFLOP of one enhancement: ``tiles`` tiles, each inverted with ``steps`` steps and climbed
    ``iterations`` gradient steps (``m``, ``vae``: :func:`measure` and :func:`measure_vae` at the tile size)."""
    weights = m["params"] * weight_bytes + VAE_PARAMS * 2
    gib = (weights + max(peak_graph(m, checkpointing), peak_graph(vae, checkpointing))) / GiB + ALLOWANCE_GIB
    # A gradient: 2S sampling forwards, then per evaluation one forward and one input-gradient backward
    # (+ one forward recomputing the blocks when checkpointed); the decoder's forward and backward likewise.
    recompute = 1 if checkpointing else 0
    per_eval = m["fwd_flops"] * (1 + recompute) + m["bwd_flops"]
    per_grad = 2 * steps * m["fwd_flops"] + 2 * steps * per_eval + vae["fwd_flops"] * (1 + recompute) + \
        vae["bwd_flops"]
    tflop = tiles * (2 * steps * m["fwd_flops"] + (iterations + 1) * per_grad) / 1e12
    return {"gib": gib, "tflop": tflop}


def minutes(tflop: float, card: str) -> float:
    return tflop / (CARDS[card][2] * UTILISATION) / 60


# (label, tile size, tiles for a 1024 px photo, steps, iterations): the defaults tile a photo over 768 px
# (TileSettings: 768, overlap 64 -> 2 x 2 tiles); --tile 0 runs it whole.
SCHEDULES = (("defaults: 20 steps, 4 tiles of 768", 768, 4, 20, 20), ("20 steps, untiled (--tile 0)", 1024, 1, 20, 20),
             ("few-step: 4 steps, 4 tiles", 768, 4, 4, 20), ("few-step, untiled", 1024, 1, 4, 20))


def table() -> str:
    vaes = {size: measure_vae(size) for size in (768, 1024)}
    rows = ["| model | weights | run | GiB plain | GiB checkpointed | fits 24 GB | fits 80 GB | "
            "minutes RTX 4090 | minutes H100 |", "|" + "---|" * 9]
    notes, ratios = [], []
    for name, (label, _, text) in MODELS.items():
        ms = {size: measure(name, size) for size in (768, 1024)}
        m = ms[1024]
        formula = formula_flops(name, CONFIGS[name], (1024 // 16) ** 2, text)
        notes.append(f"| {label} | {m['params'] / 1e9:.2f}B | {ms[768]['fwd_flops'] / 1e12:.1f} / "
                     f"{m['fwd_flops'] / 1e12:.1f} ({formula / 1e12:.1f}) | {m['saved'] / GiB:.1f} | "
                     f"{(m['saved_ckpt'] + m['block_max']) / GiB:.2f} | {m['blocks']} |")
        for wname, wb in (("bf16", 2), ("fp8", 1)):
            for run, size, tiles, steps, its in SCHEDULES:
                plain = estimate(ms[size], vaes[size], steps, its, wb, False, tiles)
                ck = estimate(ms[size], vaes[size], steps, its, wb, True, tiles)
                ratios.append(plain["tflop"] / ck["tflop"])
                fit = {c: ("plain" if plain["gib"] <= CARDS[c][1] else "checkpointed" if ck["gib"] <= CARDS[c][1]
                           else "no") for c in CARDS}
                # Time as run by default (checkpointing "auto" is on for all four); none where it does not fit.
                t = {c: "-" if fit[c] == "no" else f"{minutes(ck['tflop'], c):.0f}" for c in CARDS}
                rows.append(f"| {label} | {wname} | {run} | {plain['gib']:.0f} | {ck['gib']:.0f} | {fit['24GB']} | "
                            f"{fit['80GB']} | {t['24GB']} | {t['80GB']} |")
    head = ["| model | params | forward TFLOP 768 / 1024 px (formula at 1024) | backward graph GiB 1024 px | "
            "checkpointed GiB | blocks |", "|" + "---|" * 6]
    v = vaes[1024]
    cards = ", ".join(f"{c[0]} {c[2]:g} TFLOPS" for c in CARDS.values())
    tail = (f"VAE decoder at 1024 px: {v['fwd_flops'] / 1e12:.1f} TFLOP forward, backward graph "
            f"{peak_graph(v, False) / GiB:.1f} GiB, checkpointed {peak_graph(v, True) / GiB:.1f} GiB (bf16). "
            f"Time: {UTILISATION:.0%} of dense bf16 peak ({cards}); memory allowance {ALLOWANCE_GIB:g} GiB. "
            f"Minutes are checkpointed (the default for these models); plain runs take "
            f"{min(ratios):.2f}-{max(ratios):.2f} of that time where they fit.")
    return "\n".join(head + notes + [""] + rows + ["", tail])


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)
    print(table())


if __name__ == "__main__":
    main()
