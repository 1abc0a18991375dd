"""In-process check of nodes/memory.py with ComfyUI's real model management; prints one RESULT JSON line.

    $COMFYUI_PYTHON check_memory.py MODELS_DIR IMAGE

ComfyUI runs with --cpu here, where Load IQA Prior leaves a prior plain (nothing to unload on the CPU), so
the prior is registered for the CPU by hand: ComfyUI's real ModelPatcher, load_models_gpu, unloading and
sampler then run over it as they would for a GPU.
"""
import json
import os
import sys

MODELS, IMAGE = (os.path.abspath(a) for a in sys.argv[1:3])
sys.path.insert(0, os.environ["COMFYUI_PATH"])
sys.argv = [sys.argv[0], "--cpu"]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.model_management as mm  # noqa: E402
import comfy.sd  # noqa: E402
import nodes as core_nodes  # noqa: E402

from iqa_map.core import priors  # noqa: E402
from iqa_map.nodes import NODES as N  # noqa: E402
from iqa_map.nodes import memory  # noqa: E402


def loaded(p) -> bool:
    return any(lm.model is p for lm in mm.current_loaded_models)


def main():
    torch.set_num_threads(1)
    out = {}
    img = torch.from_numpy(np.asarray(Image.open(IMAGE).convert("RGB"), dtype=np.float32) / 255)[None, :64, :64]
    calls, real_load = [], mm.load_models_gpu

    def recording(models, *args, **kwargs):
        calls.append(list(models))
        return real_load(models, *args, **kwargs)
    mm.load_models_gpu = recording
    with torch.inference_mode():
        prior = priors.load("cnniqa-builtin")
        p = memory.register(prior, torch.device("cpu"))
        out["size_mb"] = p.model_size() / 2 ** 20
        out["patcher_of_prior"] = memory.patchers(prior) == [p]
        memory.ready(prior)
        out["loaded_after_ready"] = loaded(p)
        score, _ = N["IQAMAP_IQAScore"].execute(img, prior)["result"]
        mm.unload_all_models()  # what ComfyUI does when another model needs the room
        out["unloaded"] = not loaded(p)
        again, _ = N["IQAMAP_IQAScore"].execute(img, prior)["result"]
        out["reloaded_by_node"] = loaded(p)
        out["same_score"] = abs(score - again) < 1e-5

        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
            os.path.join(MODELS, "checkpoints", "tiny_sd15.safetensors"), output_vae=True, output_clip=True)
        pos, = core_nodes.CLIPTextEncode().encode(clip, "")
        lat, = core_nodes.VAEEncode().encode(vae, img)
        inv, = N["IQAMAP_DDIMInvert"].execute(model, lat, "edict", steps=2, strength=0.5, positive=pos)
        mm.unload_all_models()
        calls.clear()
        res, hist = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=1)
        together = [c for c in calls if p in c and vae.patcher in c and any(m.model is model.model for m in c)]
        out["loaded_with_checkpoint"] = len(together) > 0
        out["ascent_scores"] = [h["score"] for h in json.loads(hist)["history"]]
        out["prior_loaded_after_ascent"] = loaded(p)
        memory.empty_cache()  # ComfyUI's soft_empty_cache, as after fine-tuning
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
