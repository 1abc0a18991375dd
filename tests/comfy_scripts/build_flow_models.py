"""Random-weight files for the flow-matching example workflows, as ComfyUI's loaders detect them.

    $COMFYUI_PYTHON build_flow_models.py OUT_MODELS_DIR

Writes (float16):

* ``diffusion_models/tiny_flux_dev.safetensors``: a Flux.1 dev diffusion model (guidance embedding) with
  one double block and no single block. ComfyUI's detection fixes Flux's heads (24) and RoPE axes (128-d
  heads), so the width is Flux's own 3072: about 390M parameters, the one large file here. Its text and
  pooled inputs are 768-d (detected from ``txt_in``/``vector_in``), CLIP-L's, so one CLIP-L stands in for
  CLIP-L + T5-XXL (T5-XXL's size is fixed by its config: 4.7B parameters even at random).
* ``text_encoders/tiny_clip_l.safetensors``: CLIP-L (its size is fixed by ComfyUI's config: 123M).
* ``vae/tiny_flux_ae.safetensors``: a 16-channel KL VAE in SD's layout (the width ComfyUI's detection
  assumes for it).
* ``checkpoints/tiny_sd3.safetensors``: an SD3 checkpoint (MMDiT of depth 1, detected as SD3), its
  16-channel VAE and CLIP-L as its only text encoder (ComfyUI's SD3 text model pads it to 4096-d).
"""
import os
import sys

OUT = os.path.abspath(sys.argv[1])
sys.path.insert(0, os.environ["COMFYUI_PATH"])
sys.argv = [sys.argv[0], "--cpu"]

import torch  # noqa: E402

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.ops  # noqa: E402
import comfy.sd1_clip  # noqa: E402
import comfy.supported_models as SM  # noqa: E402
from comfy.ldm.flux.model import Flux  # noqa: E402
from comfy.ldm.models.autoencoder import AutoencoderKL  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import tiny_init  # noqa: E402  (beside this script)

G = torch.Generator().manual_seed(0)


def init_(module):
    return tiny_init.init_(module, G)


def half(module, prefix=""):
    return {prefix + k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
            for k, v in init_(module).state_dict().items()}


def save(sd, *path):
    os.makedirs(os.path.join(OUT, *path[:-1]), exist_ok=True)
    save_file(sd, os.path.join(OUT, *path))


def main():
    flux = Flux(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=768,
                hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=1, depth_single_blocks=0, axes_dim=[16, 56, 56],
                theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[],
                dtype=torch.float32, operations=comfy.ops.disable_weight_init)
    save(half(flux), "diffusion_models", "tiny_flux_dev.safetensors")
    del flux
    clip = half(comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32))
    save({k.removeprefix("transformer."): v for k, v in clip.items()}, "text_encoders", "tiny_clip_l.safetensors")
    dd = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae = half(AutoencoderKL(ddconfig=dd, embed_dim=16))
    save(vae, "vae", "tiny_flux_ae.safetensors")
    sd3 = SM.SD3(dict(in_channels=16, depth=1, patch_size=2, adm_in_channels=2048, pos_embed_max_size=16,
                      num_patches=256, pos_embed_scaling_factor=None, context_embedder_config={
                          "target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 64}}))
    ckpt = half(sd3.get_model({}).diffusion_model, "model.diffusion_model.")
    ckpt.update({"first_stage_model." + k: v for k, v in vae.items()})
    ckpt.update({"text_encoders.clip_l." + k: v for k, v in clip.items()})
    save(ckpt, "checkpoints", "tiny_sd3.safetensors")
    print("ok", OUT)


if __name__ == "__main__":
    main()
