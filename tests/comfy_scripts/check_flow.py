"""Flow-matching families through the pack's MODEL nodes, in-process, with ComfyUI's own model classes.

    $COMFYUI_PYTHON check_flow.py IMAGE FAMILY [FAMILY ...]     (prints one RESULT JSON line)

Each family is a tiny random-weight network built with ComfyUI 0.8's
``supported_models`` config and ``model_base`` class (the real block code,
RoPE, latent format and model sampling), a small VAE of the family's latent
layout, and the conditioning its text encoder would give (pooled outputs,
Flux guidance). Everything runs under ``torch.inference_mode()`` as ComfyUI's
executor does. The network is float32, the EDICT pair float64.
"""
import json
import os
import sys
import time

IMAGE = os.path.abspath(sys.argv[1])
FAMILIES = sys.argv[2:]
sys.path.insert(0, os.environ["COMFYUI_PATH"])
sys.argv = [sys.argv[0], "--cpu"]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.model_management as mm  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.supported_models as SM  # noqa: E402
import nodes as core_nodes  # noqa: E402

from iqa_map.core.sampling import edict  # noqa: E402
from iqa_map.core.autograd import autograd_safe  # noqa: E402
from iqa_map.nodes import NODES as N  # noqa: E402
from iqa_map.nodes import comfy as C  # noqa: E402
from iqa_map.nodes import comfy_grad  # noqa: E402

import flow_families  # noqa: E402  (beside this script)
import tiny_init  # noqa: E402

G = torch.Generator().manual_seed(0)


def init_(module):
    return tiny_init.init_(module, G, ones=("weight", "scale", "gamma"))


def patcher(config_cls, unet_config):
    model = config_cls(unet_config).get_model({})
    init_(model.diffusion_model)
    return comfy.model_patcher.ModelPatcher(model, mm.get_torch_device(), mm.unet_offload_device())


def kl_vae(z_channels: int, batch_norm: bool = False):
    """A narrow AutoencoderKL (8x) of the family's latent channels, loaded through comfy.sd.VAE.

    ``batch_norm``: Flux.2's layout, 2x2 patches of the latent behind a batch norm: 4 * z_channels channels, 16x.
    """
    from comfy.ldm.models.autoencoder import AutoencoderKL
    dd = {"double_z": True, "z_channels": z_channels, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
          "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
          "batch_norm_latent": batch_norm}
    sd = init_(AutoencoderKL(ddconfig=dd, embed_dim=z_channels)).state_dict()
    vae = comfy.sd.VAE(sd=sd, config={"params": {"ddconfig": dd, "embed_dim": z_channels}})
    if batch_norm:  # what comfy.sd.VAE's detection sets for this layout
        vae.downscale_ratio = vae.upscale_ratio = 16
        vae.latent_channels = 4 * z_channels
    return vae


def cond(ctx_dim, tokens=6, **extra):
    return [[torch.randn(1, tokens, ctx_dim, generator=G) * 0.5, dict(extra)]]


# -- the families ------------------------------------------------------------------------------------------

def flux(guidance_embed=True, cls=SM.Flux):
    cfg = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=8, context_in_dim=16, hidden_size=32,
               mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10000,
               patch_size=2, qkv_bias=True, guidance_embed=guidance_embed, txt_ids_dims=[])
    pooled = torch.randn(1, 8, generator=G)
    return patcher(cls, cfg), kl_vae(16), cond(16, pooled_output=pooled, guidance=3.5)


def sd3():
    cfg = dict(in_channels=16, depth=1, patch_size=2, adm_in_channels=8, pos_embed_max_size=16, num_patches=256,
               pos_embed_scaling_factor=None, context_embedder_config={
                   "target": "torch.nn.Linear", "params": {"in_features": 16, "out_features": 64}})
    return patcher(SM.SD3, cfg), kl_vae(16), cond(16, pooled_output=torch.randn(1, 8, generator=G))


def sd3_file():
    """SD3 loaded from a file through ComfyUI's own detection (UNETLoader's path): the tiny SD3's keys as in a
    released SD3 single-file diffusion model."""
    import tempfile

    from safetensors.torch import save_file
    model, vae, pos = sd3()
    sd = {"model.diffusion_model." + k: v.contiguous() for k, v in model.model.diffusion_model.state_dict().items()}
    path = os.path.join(tempfile.mkdtemp(prefix="iqa_sd3_"), "tiny_sd3.safetensors")
    save_file(sd, path)
    return comfy.sd.load_diffusion_model(path), vae, pos


def flux2():
    cfg = dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=16,
               hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[4, 4, 4, 4],
               theta=2000, patch_size=1, qkv_bias=False, guidance_embed=True, txt_ids_dims=[3],
               global_modulation=True, mlp_silu_act=True, ops_bias=False, default_ref_method="index",
               ref_index_scale=10.0)
    vae = kl_vae(32, batch_norm=True)
    return patcher(SM.Flux2, cfg), vae, cond(16, guidance=4.0, pooled_output=None)


def chroma():
    cfg = dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=16, hidden_size=32,
               mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10000,
               patch_size=2, qkv_bias=True, in_dim=64, out_dim=32, hidden_dim=32, n_layers=1, txt_ids_dims=[],
               vec_in_dim=None)
    return patcher(SM.Chroma, cfg), kl_vae(16), cond(16, pooled_output=None)


def qwen_image():
    cfg = dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16, num_layers=1,
               attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16, axes_dims_rope=(4, 6, 6))
    return patcher(SM.QwenImage, cfg), wan_vae(), cond(16)


def lumina2(z_image=False):
    cfg = dict(image_model="lumina2", patch_size=2, in_channels=16, dim=32, n_layers=1, n_refiner_layers=1,
               n_heads=2, n_kv_heads=2, multiple_of=16, qk_norm=True, cap_feat_dim=16, axes_dims=[4, 6, 6],
               axes_lens=[64, 64, 64], rope_theta=256.0 if z_image else 10000.0)
    if z_image:  # its modulation is 256 wide whatever the model's width: the narrowest Z-Image is 256
        cfg.update(dim=256, axes_dims=[32, 48, 48], z_image_modulation=True, time_scale=1000.0,
                   ffn_dim_multiplier=8.0 / 3.0, pad_tokens_multiple=32)
    return patcher(SM.ZImage if z_image else SM.Lumina2, cfg), kl_vae(16), cond(16)


def chroma_radiance():
    """Chroma Radiance: pixel space (16x16 patches decoded by a small NeRF-style head), ComfyUI's pixel VAE."""
    cfg = dict(image_model="chroma_radiance", in_channels=3, out_channels=3, context_in_dim=16, hidden_size=32,
               mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10000,
               patch_size=16, qkv_bias=True, in_dim=64, out_dim=32, hidden_dim=32, n_layers=1, txt_ids_dims=[],
               vec_in_dim=None, nerf_hidden_size=16, nerf_mlp_ratio=2, nerf_depth=1, nerf_max_freqs=4,
               nerf_tile_size=0, nerf_final_head_type="linear", nerf_embedder_dtype=torch.float32, use_x0=False)
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    return patcher(SM.ChromaRadiance, cfg), vae, cond(16, pooled_output=None)


def auraflow():
    cfg = dict(in_channels=4, out_channels=4, patch_size=2, dim=32, n_layers=2, n_double_layers=1, n_heads=2,
               global_conddim=32, cond_seq_dim=16, max_seq=64)
    return patcher(SM.AuraFlow, cfg), kl_vae(4), cond(16)


def wan_vae():
    """Qwen-Image's VAE is Wan 2.1's (a video VAE: latents [B,16,1,H,W]); narrow, through comfy.sd.VAE's detection."""
    from comfy.ldm.wan.vae import WanVAE
    net = WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True])
    return comfy.sd.VAE(sd=init_(net).state_dict())


BUILD = {
    "flux_dev": lambda: flux(True),
    "flux_schnell": lambda: flux(False, SM.FluxSchnell),
    "sd3": sd3,
    "sd3_file": sd3_file,
    "flux2": flux2,
    "chroma": chroma,
    "qwen_image": qwen_image,
    "lumina2": lumina2,
    "z_image": lambda: lumina2(True),
    "chroma_radiance": chroma_radiance,
    "auraflow": auraflow,
}


def load_image(whole=False):
    """The photo as an IMAGE [1,64,64,3]: its top-left 64x64 crop, or (``whole``) all of it resized to 64x64 (a
    second, different picture for the batch check)."""
    im = Image.open(IMAGE).convert("RGB")
    im = im.resize((64, 64), Image.LANCZOS) if whole else im.crop((0, 0, 64, 64))
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255)[None]


BUILD.update(flow_families.builders(sys.modules[__name__], load_image))


# -- the checks ----------------------------------------------------------------------------------------------

def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def ksampler(model, pos, lat):
    return core_nodes.common_ksampler(model, 7, 2, 1.0, "euler", "simple", pos, pos, lat, denoise=1.0)[0]["samples"]


def gradients(model, lat, inv, pos, vae):
    """Reversible vs plain-autograd gradient of a decoded objective w.r.t. the EDICT pair, and how long each took."""
    codec = C.ComfyVAECodec(vae, C.latent_format(model))
    out = {}

    def run(den, x):
        i = inv.inversion
        w = torch.randn(1, 3, 64, 64, generator=G)  # outside inference mode, as the node's own tensors
        with comfy_grad.differentiable(den.network):
            for mode in ("reversible", "autograd"):
                t0 = time.perf_counter()
                _, g = edict.value_and_grad(den, i.pair, i.sigmas, lambda a, b: (codec.decode(a) * w).sum(),
                                            mix=i.mix, grad=mode)
                out[mode] = torch.cat([g[0].flatten(), g[1].flatten()])
                out[mode + "_s"] = time.perf_counter() - t0
        return x

    C.run_in_comfy_sampler(model, lat["samples"], inv.inversion.sigmas, run, pos)
    return {"grad_rel_diff": rel(out["reversible"], out["autograd"]),
            "grad_norm": float(out["autograd"].norm()), "grad_seconds": [out["reversible_s"], out["autograd_s"]]}


class SavedBytes:
    """Peak bytes autograd holds for backward, counted in the pack hook of :mod:`comfy_grad`'s copy-on-write (every
    activation of the gradient pass goes through it): a deterministic measure of the gradient's extra memory."""

    def __init__(self):
        self.live = self.peak = 0

    def __enter__(self):
        import weakref
        self.orig = orig = comfy_grad._CopyOnWrite.pack

        def pack(mode, t):
            h = orig(mode, t)
            n = t.numel() * t.element_size()
            self.live += n
            self.peak = max(self.peak, self.live)
            weakref.finalize(h, self._free, n)
            return h
        comfy_grad._CopyOnWrite.pack = pack
        return self

    def _free(self, n):
        self.live -= n

    def __exit__(self, *exc):
        comfy_grad._CopyOnWrite.pack = self.orig


def memory(model, vae, pos, img, steps=(5, 50)):
    """Peak saved bytes of one gradient at 5 and 50 steps, reversible (flat) and plain autograd (grows)."""
    lat, = core_nodes.VAEEncode().encode(vae, img)
    codec = C.ComfyVAECodec(vae, C.latent_format(model))
    out = {}
    for n in steps:
        inv, = N["IQAMAP_DDIMInvert"].execute(model, lat, "edict", steps=n, strength=1.0, positive=pos)
        i = inv.inversion

        def run(den, x):
            autograd_safe(den.network)  # weights loaded under inference mode (as the ascent does itself)
            with comfy_grad.differentiable(den.network):
                for mode in ("reversible", "autograd"):
                    with SavedBytes() as sb:
                        edict.value_and_grad(den, i.pair, i.sigmas, lambda a, b: codec.decode(a).mean(), mix=i.mix,
                                             grad=mode)
                    out[f"{mode}_{n}"] = sb.peak
            return x

        C.run_in_comfy_sampler(model, lat["samples"], i.sigmas, run, pos)
    return out


def check(name, model, vae, pos, img, prior, steps=4):
    r = {"model_class": type(model.model).__name__, "config": type(model.model.model_config).__name__}
    lat, = core_nodes.VAEEncode().encode(vae, img)
    r["latent_shape"] = list(lat["samples"].shape)
    before = ksampler(model, pos, lat)
    inv, = N["IQAMAP_DDIMInvert"].execute(model, lat, "edict", steps=steps, strength=1.0, positive=pos)
    i = inv.inversion
    back = C.run_in_comfy_sampler(model, lat["samples"], i.sigmas,
                                  lambda den, x: edict.sample(den, i.pair, i.sigmas, mix=i.mix, grad=None)[0].float(),
                                  pos)
    r["sample_back_rel_error"] = rel(back, lat["samples"])
    zero, _ = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=0)
    r["zero_iterations_rel_error"] = rel(zero["samples"], lat["samples"])  # LATENT in -> LATENT out
    r.update(gradients(model, lat, inv, pos, vae))
    res, hist = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=2)
    h = json.loads(hist)
    r["objectives"] = [e["objective"] for e in h["history"]]
    r["scores"] = [e["score"] for e in h["history"]]
    r["events"] = h["events"]
    r["inversion_error"] = h["inversion_error"]
    r["out_latent_shape"] = list(res["samples"].shape)
    image, = N["IQAMAP_Decode"].execute(res, vae)
    r["image_shape"] = list(image.shape)
    r["image_finite"] = bool(torch.isfinite(image).all())
    after = ksampler(model, pos, lat)
    r["ksampler_bit_identical"] = bool(torch.equal(before, after))
    r["rope_restored"] = not any(hasattr(f, "__wrapped__") for f in _rope_functions())
    if name in flow_families.WITHOUT_ENTRY:  # the entry (reference latent, ByT5) reaches the network: without it,
        # KSampler (same seed, same latent) gives another result
        entry, without = flow_families.WITHOUT_ENTRY[name]
        r["without_" + entry + "_rel_change"] = rel(ksampler(model, without, lat), before)
    return r


def batch(model, vae, pos, prior, iterations=2):
    """Two different photos as one batch through DDIM Invert -> Latent MAP Ascent -> Decode: per item, LATENT in ->
    LATENT out at 0 iterations, and the prior of the decoded input and of the ascent's output."""
    from iqa_map.core.priors.base import comparable_score
    # Each photo encoded on its own and the LATENTs concatenated, as Latent Batch does: VAE Encode of an IMAGE batch
    # gives one latent per image for image VAEs, but a video VAE (Qwen-Image's Wan VAE) reads the batch as frames.
    z = torch.cat([core_nodes.VAEEncode().encode(vae, im)[0]["samples"] for im in (load_image(), load_image(True))])
    lat = {"samples": z}
    inv, = N["IQAMAP_DDIMInvert"].execute(model, lat, "edict", steps=4, strength=1.0, positive=pos)
    zero, _ = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=0)
    res, hist = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=iterations)
    before, = N["IQAMAP_Decode"].execute(lat, vae)
    after, = N["IQAMAP_Decode"].execute(res, vae)

    def score(image):  # IMAGE [B,H,W,3] -> one comparable (calibrated) score per item
        with torch.inference_mode(False), torch.no_grad():
            return [float(v) for v in comparable_score(prior, image.movedim(-1, 1).contiguous())]
    h = json.loads(hist)
    return {"latent_shape": list(z.shape), "items_differ": rel(z[0], z[1]),
            "zero_iterations_rel_error": [rel(zero["samples"][i], z[i]) for i in range(len(z))],
            "scores_before": score(before), "scores_after": score(after), "image_shape": list(after.shape),
            "history_scores": [e["score"] for e in h["history"]], "events": h["events"],
            "out_latent_shape": list(res["samples"].shape)}


def few_step(model, vae, pos, img, prior, iterations=2):
    """The ascent at the default step and at the few-step preset's (core.map.settings.FEW_STEP: its steps and learning
    rate), from one inversion at the preset's step count: the objectives of each."""
    from iqa_map.core.map.settings import FEW_STEP
    lat, = core_nodes.VAEEncode().encode(vae, img)
    inv, = N["IQAMAP_DDIMInvert"].execute(model, lat, "edict", steps=FEW_STEP["steps"],
                                          strength=FEW_STEP["strength"], positive=pos)
    r = {}
    for name, lr in (("default", 0.0), ("preset", FEW_STEP["lr"])):
        _, hist = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=iterations,
                                                      learning_rate=lr, optimizer=FEW_STEP["optimizer"])
        r[name] = [e["objective"] for e in json.loads(hist)["history"]]
    return r


def _rope_functions():
    import comfy.ldm.flux.math as fm
    return [getattr(m, n) for m in list(sys.modules.values()) if getattr(m, "__name__", "").startswith("comfy.")
            for n in comfy_grad.ROPE_NAMES if n in getattr(m, "__dict__", {}) and m is not None] + [fm.apply_rope]


def main():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    img = load_image()
    out = {}
    with torch.inference_mode():
        prior, = N["IQAMAP_LoadIQAPrior"].execute("niqe", "default", "cpu")
        for name in FAMILIES:
            t0 = time.perf_counter()
            if name.startswith("memory:"):
                model, vae, pos = BUILD[name.split(":", 1)[1]]()
                out[name] = memory(model, vae, pos, img)
                continue
            if name.startswith("batch:"):
                model, vae, pos = BUILD[name.split(":", 1)[1]]()
                out[name] = batch(model, vae, pos, prior)
                print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
                continue
            if name.startswith("refuse:"):  # DDIM Invert's message for a family it cannot run
                model, vae, pos = BUILD[name.split(":", 1)[1]]()
                try:
                    N["IQAMAP_DDIMInvert"].execute(model, {"samples": torch.zeros(1, 64, 1, 8, 8)}, "edict", steps=4,
                                                   strength=1.0, positive=pos)
                    out[name] = {"model_class": type(model.model).__name__, "error": None}
                except ValueError as e:
                    out[name] = {"model_class": type(model.model).__name__, "error": str(e)}
                continue
            if name.startswith("fewstep:"):
                model, vae, pos = BUILD[name.split(":", 1)[1]]()
                out[name] = few_step(model, vae, pos, img, prior)
                continue
            model, vae, pos = BUILD[name]()
            out[name] = check(name, model, vae, pos, img, prior)
            out[name]["seconds"] = time.perf_counter() - t0
            print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
