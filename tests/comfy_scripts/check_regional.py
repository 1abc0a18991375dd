"""In-process check that IQA Regional Prompt's masked entries reach the model inside ComfyUI; one JSON line.

    $COMFYUI_PYTHON check_regional.py MODELS_DIR IMAGE

The tiny SD 1.5 checkpoint's real CLIP encodes the prompts; KSampler runs one step while
``comfy.samplers.get_area_and_mult`` (where ComfyUI turns each conditioning entry into the
weight it applies to the model's output) is observed: each region's prompt must be applied
with that region's mask at latent resolution, the global prompt everywhere.
"""
import json
import os
import sys

MODELS, IMAGE = (os.path.abspath(a) for a in sys.argv[1:3])
sys.path.insert(0, os.environ["COMFYUI_PATH"])
sys.argv = [sys.argv[0], "--cpu"]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.samplers  # noqa: E402
import comfy.sd  # noqa: E402
import nodes as core_nodes  # noqa: E402

from iqa_map.nodes import NODES as N  # noqa: E402


def main():
    torch.set_num_threads(1)
    out = {}
    img = torch.from_numpy(np.asarray(Image.open(IMAGE).convert("RGB"), dtype=np.float32) / 255)[None, :64, :64]
    bad = torch.zeros(1, 64, 64)
    bad[:, :, 32:] = 0.9  # the right half damaged
    node = N["IQAMAP_IQARegionalPrompt"]
    spec = node.INPUT_TYPES()
    defaults = {k: v[1]["default"] for sec in spec.values() for k, v in sec.items() if "default" in v[1]}
    seen = []
    original = comfy.samplers.get_area_and_mult

    def observe(conds, x_in, timestep_in):
        p = original(conds, x_in, timestep_in)
        if p is not None:
            seen.append({"crossattn": conds["model_conds"]["c_crossattn"].cond.float().clone(),
                         "mult": p.mult[0, 0].float().clone(), "masked": "mask" in conds})
        return p

    with torch.inference_mode():
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
            os.path.join(MODELS, "checkpoints", "tiny_sd15.safetensors"), output_vae=True, output_clip=True)
        res = node.execute(clip, img, **{**defaults, "quality_map": bad, "feather": 0.0})["result"]
        cond, strength, preview, listing = res
        regions = json.loads(listing)
        out["entries"] = len(cond)
        out["regions"] = regions
        neg, = core_nodes.CLIPTextEncode().encode(clip, "")
        lat, = core_nodes.VAEEncode().encode(vae, img)
        comfy.samplers.get_area_and_mult = observe
        try:
            sampled, = core_nodes.KSampler().sample(model, 0, 1, 2.0, "euler", "normal", cond, neg, lat, denoise=1.0)
        finally:
            comfy.samplers.get_area_and_mult = original
        out["sampled_shape"] = list(sampled["samples"].shape)
        # what each entry should be: the CLIP encoding of its prompt, and its region's mask at latent size
        checks = []
        for r, entry in zip(regions, cond[1:]):
            want = core_nodes.CLIPTextEncode().encode(clip, r["prompt"])[0][0][0].float()
            mask = F.interpolate(entry[1]["mask"][None].float(), size=sampled["samples"].shape[-2:],
                                 mode="bilinear")[0, 0]
            match = [s for s in seen if s["masked"] and s["crossattn"].shape == want.shape
                     and torch.allclose(s["crossattn"], want, atol=1e-5)]
            checks.append({"applied": len(match) > 0,
                           "mask_error": min((float((s["mult"] - mask).abs().max()) for s in match), default=None)})
        glob = core_nodes.CLIPTextEncode().encode(clip, defaults["global_prompt"])[0][0][0].float()
        out["global_everywhere"] = any(not s["masked"] and torch.allclose(s["crossattn"], glob, atol=1e-5)
                                       and bool((s["mult"] == 1).all()) for s in seen)
        out["region_checks"] = checks
        out["prompts_differ"] = not torch.allclose(cond[1][0], cond[2][0]) if len(cond) > 2 else None
        out["strength_right_gt_left"] = float(strength[0, :, 48:].mean()) > float(strength[0, :, :16].mean())
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
