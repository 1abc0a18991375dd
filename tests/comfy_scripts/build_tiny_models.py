"""Build random-weight models in the formats ComfyUI loads, with ComfyUI's own classes.

    $COMFYUI_PYTHON build_tiny_models.py OUT_MODELS_DIR

Writes ``checkpoints/tiny_sd15.safetensors`` (an SD 1.5-architecture single-file
checkpoint: a narrow one-level UNet with SD 1.5's detection keys - 320 base
channels, 768-d cross-attention - plus SD's VAE and CLIP-L text encoder, all
random), ``upscale_models/tiny_compact_x4.pth`` (spandrel Compact, x4) and
``upscale_models/tiny_dncnn.pth`` (spandrel DnCNN). Run by the ComfyUI
integration tests; nothing here is downloaded.
"""
import math
import os
import sys

OUT = os.path.abspath(sys.argv[1])
sys.path.insert(0, os.environ["COMFYUI_PATH"])
sys.argv = [sys.argv[0], "--cpu"]

import torch  # noqa: E402

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.ldm.modules.diffusionmodules.openaimodel as oa  # noqa: E402
import comfy.ops  # noqa: E402
import comfy.sd1_clip  # noqa: E402
from comfy.ldm.models.autoencoder import AutoencoderKL  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


def init_(module, g):
    """ComfyUI's ops skip weight init (weights come from files): give every tensor a sane random value."""
    for name, p in module.named_parameters():
        with torch.no_grad():
            if p.ndim == 0:
                p.fill_(1.0)
            elif p.ndim == 1:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
    return module


def main():
    g = torch.Generator().manual_seed(0)
    unet = oa.UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1],
                        channel_mult=[1], num_heads=8, transformer_depth=[1], transformer_depth_output=[1, 0],
                        transformer_depth_middle=0, context_dim=768, use_linear_in_transformer=False,
                        use_spatial_transformer=True, legacy=False, dtype=torch.float32,
                        operations=comfy.ops.disable_weight_init)
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    sd = {}
    for prefix, m in (("model.diffusion_model.", unet), ("first_stage_model.", vae), ("cond_stage_model.", clip)):
        for k, v in init_(m, g).state_dict().items():
            sd[prefix + k] = v.to(torch.float16) if v.is_floating_point() else v
    os.makedirs(os.path.join(OUT, "checkpoints"), exist_ok=True)
    save_file(sd, os.path.join(OUT, "checkpoints", "tiny_sd15.safetensors"))

    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.DnCNN import DnCNN
    os.makedirs(os.path.join(OUT, "upscale_models"), exist_ok=True)
    up = init_(Compact(num_feat=8, num_conv=2, upscale=4), g)
    torch.save(up.state_dict(), os.path.join(OUT, "upscale_models", "tiny_compact_x4.pth"))
    dn = DnCNN(in_nc=3, out_nc=3, nc=8, nb=9, act_mode="R")  # nb >= 9: spandrel detects DnCNN by its layer keys
    for p in dn.parameters():  # near-zero residual: an (almost) identity denoiser that is still a DnCNN
        torch.nn.init.normal_(p, std=1e-3)
    torch.save(dn.state_dict(), os.path.join(OUT, "upscale_models", "tiny_dncnn.pth"))
    print("ok", OUT)


if __name__ == "__main__":
    main()
