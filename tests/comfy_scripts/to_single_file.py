"""Convert a diffusers SD 1.x pipeline folder to one original-format ("LDM") checkpoint, with ComfyUI's maps.

    $COMFYUI_PYTHON to_single_file.py PIPELINE_DIR OUT.safetensors

ComfyUI's key maps (``comfy.utils.unet_to_diffusers``,
``comfy.diffusers_convert``) are independent of diffusers' single-file loader,
so loading the result back through diffusers checks that loader against a
second implementation. Works for any SD 1.x layout, the tiny test one included.
"""
import json
import os
import sys

PIPE, OUT = (os.path.abspath(a) for a in sys.argv[1:3])
sys.path.insert(0, os.environ["COMFYUI_PATH"])
sys.argv = [sys.argv[0], "--cpu"]

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.diffusers_convert  # noqa: E402
import comfy.utils  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402


def ldm_unet_config(cfg: dict) -> dict:
    """The LDM layout ComfyUI's key map needs, read off a diffusers UNet2DConditionModel config."""
    levels = len(cfg["block_out_channels"])
    per = cfg["layers_per_block"]
    down_attn = ["CrossAttn" in t for t in cfg["down_block_types"]]
    up_attn = ["CrossAttn" in t for t in cfg["up_block_types"]]
    output = [int(a) for a in up_attn for _ in range(per + 1)]  # output_blocks in order
    return {"num_res_blocks": [per] * levels, "channel_mult": [c // cfg["block_out_channels"][0]
                                                               for c in cfg["block_out_channels"]],
            "transformer_depth": [int(a) for a in down_attn for _ in range(per)],
            "transformer_depth_output": output[::-1],  # ComfyUI's map pops from the end
            "transformer_depth_middle": 1}


def main():
    unet_cfg = json.load(open(os.path.join(PIPE, "unet", "config.json")))
    unet = load_file(os.path.join(PIPE, "unet", "diffusion_pytorch_model.safetensors"))
    vae = load_file(os.path.join(PIPE, "vae", "diffusion_pytorch_model.safetensors"))
    text = load_file(os.path.join(PIPE, "text_encoder", "model.safetensors"))
    sd = {}
    mapping = comfy.utils.unet_to_diffusers(ldm_unet_config(unet_cfg))
    for k, v in unet.items():
        if k not in mapping:
            raise SystemExit(f"no LDM key for UNet weight {k}")
        sd["model.diffusion_model." + mapping[k]] = v
    for k, v in comfy.diffusers_convert.convert_vae_state_dict(vae).items():
        sd["first_stage_model." + k] = v
    for k, v in text.items():  # SD 1.x files keep transformers' full names (text_model.*), which newer saves drop
        sd["cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k)] = v
    save_file(sd, OUT)
    print("ok", len(sd))


if __name__ == "__main__":
    main()
