"""More flow-matching families for check_flow.py: HiDream, HunyuanImage 2.1, and the Kontext-style edit models
(Flux Kontext, Qwen-Image-Edit) whose conditioning carries reference latents.

Each builder gets check_flow's helpers (``cf``: ``patcher``, ``init_``, ``kl_vae``, ``cond``, ``flux``, ...) and returns
``(model, vae, positive)`` like check_flow's own builders; the edit models also return their conditioning without
that entry (and HunyuanImage without its ByT5 features) through :data:`WITHOUT_ENTRY`, so the check can show the
entry reaches the network.
"""
import torch

import comfy.supported_models as SM

#: name -> (the conditioning entry probed, the positive conditioning without it), set by the builders.
WITHOUT_ENTRY = {}


def hidream(cf):
    """HiDream I1: a double- and a single-stream MoE block; text as T5 features plus one Llama hidden layer per
    block (``conditioning_llama3`` [B, layers, tokens, dim], picked by ``llama_layers``) and a pooled CLIP vector."""
    cfg = dict(image_model="hidream", patch_size=2, in_channels=16, out_channels=16, num_layers=1,
               num_single_layers=1, attention_head_dim=16, num_attention_heads=2, caption_channels=[16, 12],
               text_emb_dim=8, num_routed_experts=4, num_activated_experts=2, axes_dims_rope=[4, 6, 6],
               max_resolution=[16, 16], llama_layers=[0, 1])
    llama = torch.randn(1, 2, 5, 12, generator=cf.G) * 0.5
    pos = cf.cond(16, pooled_output=torch.randn(1, 8, generator=cf.G), conditioning_llama3=llama)
    return cf.patcher(SM.HiDream, cfg), cf.kl_vae(16), pos


def hunyuan_image(cf, own_vae=False):
    """HunyuanImage 2.1: HunyuanVideo's blocks on 64-channel image latents (2-D RoPE, patch 1), Qwen2.5-VL text
    features plus the ByT5 glyph features (``conditioning_byt5small``, 1472-d, through the model's ByT5 mapper).
    The VAE: a narrow 64-channel KL VAE (8x: an 8x8 latent of the 64x64 photo), or (``own_vae``) its own 32x VAE
    class, narrow (a 2x2 latent)."""
    cfg = dict(image_model="hunyuan_video", in_channels=64, out_channels=64, vec_in_dim=None, context_in_dim=16,
               hidden_size=32, mlp_ratio=4.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8, 8],
               theta=256, patch_size=[1, 1], qkv_bias=True, guidance_embed=False, byt5=True, meanflow=False,
               use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False)
    byt5 = torch.randn(1, 4, 1472, generator=cf.G) * 0.5
    pos = cf.cond(16, guidance=None)
    WITHOUT_ENTRY["hunyuan_image_vae32" if own_vae else "hunyuan_image"] = ("conditioning_byt5small", pos)
    pos = [[pos[0][0], dict(pos[0][1], conditioning_byt5small=byt5)]]
    return cf.patcher(SM.HunyuanImage21, cfg), hunyuan_image_vae(cf) if own_vae else cf.kl_vae(64), pos


def hunyuan_image_vae(cf, widths=(32, 32, 64, 64, 128, 128)):
    """HunyuanImage 2.1's own VAE class (32x, 64 channels, ``comfy.ldm.hunyuan_video.vae``), narrow, loaded through
    comfy.sd.VAE's detection: the detection fixes the released widths (128 to 1024 channels), so they are narrowed
    while it builds the network (its ratios, channels and memory estimates are the detection's own)."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencodingEngine
    dd = {"block_out_channels": list(widths), "in_channels": 3, "out_channels": 3, "num_res_blocks": 2,
          "ffactor_spatial": 32, "downsample_match_channel": True, "upsample_match_channel": True, "z_channels": 64}
    reg = {"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"}

    def engine(**kw):
        for part in ("encoder_config", "decoder_config"):
            kw[part] = {**kw[part], "params": {**kw[part]["params"], "block_out_channels": list(widths)}}
        return AutoencodingEngine(**kw)
    net = engine(regularizer_config=reg, encoder_config={"target": "comfy.ldm.hunyuan_video.vae.Encoder", "params": dd},
                 decoder_config={"target": "comfy.ldm.hunyuan_video.vae.Decoder", "params": dd})
    sd = cf.init_(net).state_dict()
    comfy.sd.AutoencodingEngine = engine
    try:
        return comfy.sd.VAE(sd=sd)
    finally:
        comfy.sd.AutoencodingEngine = AutoencodingEngine


def hunyuan_image_refiner(cf):
    """HunyuanImage 2.1's refiner (3-D patches, frame-paired latents): refused by the nodes with its own message."""
    cfg = dict(image_model="hunyuan_video", in_channels=256, out_channels=128, vec_in_dim=None, context_in_dim=16,
               hidden_size=32, mlp_ratio=4.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[4, 6, 6],
               theta=256, patch_size=[1, 1, 1], qkv_bias=True, guidance_embed=False, byt5=False, meanflow=False,
               use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False)
    return cf.patcher(SM.HunyuanImage21Refiner, cfg), None, cf.cond(16)


def _reference(name, vae, pos, img):
    """``pos`` with a reference latent appended as ComfyUI's ReferenceLatent node does: the photo mirrored, encoded
    by the same VAE (a raw LATENT; the model's extra_conds applies process_latent_in)."""
    import node_helpers
    import nodes as core_nodes
    ref, = core_nodes.VAEEncode().encode(vae, img.flip(2))
    WITHOUT_ENTRY[name] = ("reference_latents", pos)
    return node_helpers.conditioning_set_values(pos, {"reference_latents": [ref["samples"]]}, append=True)


def flux_kontext(cf, img):
    """Flux.1 Kontext: Flux dev's network; the reference latent's tokens join the image tokens (ComfyUI's Flux
    ``ref_latents``, offset RoPE index)."""
    model, vae, pos = cf.flux(True)
    return model, vae, _reference("flux_kontext", vae, pos, img)


def qwen_image_edit(cf, img):
    """Qwen-Image-Edit: Qwen-Image's network with the reference latent (5-D, Wan VAE) as extra tokens."""
    model, vae, pos = cf.qwen_image()
    return model, vae, _reference("qwen_image_edit", vae, pos, img)


def builders(cf, img):
    return {"hidream": lambda: hidream(cf), "hunyuan_image": lambda: hunyuan_image(cf),
            "hunyuan_image_vae32": lambda: hunyuan_image(cf, own_vae=True),
            "hunyuan_image_refiner": lambda: hunyuan_image_refiner(cf), "flux_kontext": lambda: flux_kontext(cf, img()), "qwen_image_edit": lambda: qwen_image_edit(cf, img())}
