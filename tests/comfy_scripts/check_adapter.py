"""In-process checks of the ComfyUI adapter, run with ComfyUI's Python; prints one JSON line.

    $COMFYUI_PYTHON check_adapter.py MODELS_DIR IMAGE

Everything runs under ``torch.inference_mode()`` as ComfyUI's executor does:
load the tiny SD 1.5 checkpoint with ComfyUI's loader, encode with CLIP Text
Encode and VAE Encode, then the pack's nodes.
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
import comfy.model_sampling  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402
import nodes as core_nodes  # noqa: E402
from spandrel import ModelLoader  # noqa: E402

from iqa_map.nodes import NODES as N  # noqa: E402
from iqa_map.core.sampling import edict  # noqa: E402


def sdxl_model():
    """ComfyUI's SDXL model (model_base.SDXL: EPS, its adm embedder expects 1280 pooled + 6 x 256 size features)
    around a narrow random UNet with SDXL's layout traits (linear transformers, sequential adm input)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    cfg = {"image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
           "channel_mult": [1, 2], "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1],
           "transformer_depth_middle": 1, "context_dim": 64, "use_linear_in_transformer": True,
           "adm_in_channels": 2816, "num_classes": "sequential", "num_head_channels": 16,
           "use_spatial_transformer": True, "legacy": False, "use_temporal_attention": False,
           "use_temporal_resblock": False}
    model = comfy.supported_models.SDXL(cfg).get_model({}, "model.diffusion_model.")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # ComfyUI's ops leave weights uninitialised (they come from files)
        for name, p in model.diffusion_model.named_parameters():
            if p.ndim <= 1:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    return comfy.model_patcher.ModelPatcher(model, mm.get_torch_device(), mm.unet_offload_device())


def main():
    torch.set_num_threads(1)
    out = {}
    img = torch.from_numpy(np.asarray(Image.open(IMAGE).convert("RGB"), dtype=np.float32) / 255)[None, :64, :64]
    with torch.inference_mode():
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
            os.path.join(MODELS, "checkpoints", "tiny_sd15.safetensors"), output_vae=True, output_clip=True)
        out["model_config"] = type(model.model.model_config).__name__
        pos, = core_nodes.CLIPTextEncode().encode(clip, "")
        lat, = core_nodes.VAEEncode().encode(vae, img)
        prior, = N["IQAMAP_LoadIQAPrior"].execute("niqe", "default", "cpu")
        inv, = N["IQAMAP_DDIMInvert"].execute(model, lat, "edict", steps=3, strength=0.5, positive=pos)
        # Sample the pair back through a fresh ComfyUI sampling: EDICT must give the latent again.
        from iqa_map.nodes import comfy as C
        back = C.run_in_comfy_sampler(model, lat["samples"], inv.inversion.sigmas,
                                      lambda den, x: edict.sample(den, inv.inversion.pair, inv.inversion.sigmas,
                                                                  grad=None)[0].float(), pos)
        out["reconstruction_rel_error"] = float((back - lat["samples"]).norm() / lat["samples"].norm())
        res, hist = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=2)
        report = json.loads(hist)
        out["scores"] = [h["score"] for h in report["history"]]
        out["inversion_error"] = report["inversion_error"]
        out["latent_shape"] = list(res["samples"].shape)
        ours, = N["IQAMAP_Decode"].execute(res, vae)
        theirs, = core_nodes.VAEDecode().decode(vae, res)
        out["decode_max_diff"] = float((ours - theirs).abs().max())
        out["image_shape"] = list(ours.shape)
        ddim_inv, = N["IQAMAP_DDIMInvert"].execute(model, lat, "ddim", steps=3, strength=0.5, positive=pos)
        _, hist = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, ddim_inv, iterations=1)
        out["ddim_inversion_error"] = json.loads(hist)["inversion_error"]

        # v-prediction (SD2.x-style), through ComfyUI's own ModelSamplingDiscrete patch node.
        from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete
        vmodel = ModelSamplingDiscrete().patch(model, "v_prediction", False)[0]
        vinv, = N["IQAMAP_DDIMInvert"].execute(vmodel, lat, "edict", steps=3, strength=0.5, positive=pos)
        _, vhist = N["IQAMAP_LatentMAPAscent"].execute(vmodel, vae, prior, vinv, iterations=1)
        out["vpred_inversion_error"] = json.loads(vhist)["inversion_error"]

        # Few-step: LCM sampling (ModelSamplingDiscrete 'lcm', as LCM LoRAs use) at 4 steps.
        lcm = ModelSamplingDiscrete().patch(model, "lcm", False)[0]
        linv, = N["IQAMAP_DDIMInvert"].execute(lcm, lat, "edict", steps=4, strength=1.0, scheduler="sgm_uniform",
                                               positive=pos)
        lres, lhist = N["IQAMAP_LatentMAPAscent"].execute(lcm, vae, prior, linv, iterations=2)
        lrep = json.loads(lhist)
        out["lcm_inversion_error"] = lrep["inversion_error"]
        out["lcm_objectives"] = [h["objective"] for h in lrep["history"]]

        # SDXL: ComfyUI's own SDXL model class (its size/pooled "adm" conditioning) around a narrow UNet, built
        # in-process (a real SDXL checkpoint needs CLIP-G: gigabytes even with random weights). The
        # conditioning is what CLIP Text Encode gives SDXL: token embeddings plus the pooled output.
        xl = sdxl_model()
        out["sdxl_model"] = type(xl.model).__name__

        def xl_cond(pooled):
            return [[torch.zeros(1, 77, 64), {"pooled_output": torch.full((1, 1280), pooled)}]]
        xinv, = N["IQAMAP_DDIMInvert"].execute(xl, lat, "edict", steps=3, strength=0.5, positive=xl_cond(0.0))
        xres, xhist = N["IQAMAP_LatentMAPAscent"].execute(xl, vae, prior, xinv, iterations=2)
        xreport = json.loads(xhist)
        out["sdxl_inversion_error"] = xreport["inversion_error"]
        out["sdxl_scores"] = [h["score"] for h in xreport["history"]]
        out["sdxl_latent_shape"] = list(xres["samples"].shape)
        other, = N["IQAMAP_DDIMInvert"].execute(xl, lat, "edict", steps=3, strength=0.5, positive=xl_cond(1.0))
        out["sdxl_pooled_changes_inversion"] = float((other.inversion.pair[0] - xinv.inversion.pair[0]).abs().max())

        # Video models, and parameterisations EDICT cannot run, are refused with a clear message.
        class Flow(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
            pass

        class Cosmos(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.COSMOS_RFLOW):
            pass

        class WAN21:  # stands for comfy.model_base.WAN21 (the family is known by its class name)
            pass

        class FakeModel:
            def __init__(self, base, sampling):
                self.model, self.sampling = base, sampling

            def get_model_object(self, name):
                return self.sampling()
        for key, fake in (("video_error", FakeModel(WAN21(), Flow)), ("cosmos_error", FakeModel(object(), Cosmos))):
            try:
                N["IQAMAP_DDIMInvert"].execute(fake, lat, positive=pos)
                out[key] = None
            except ValueError as e:
                out[key] = str(e)
        try:
            N["IQAMAP_DDIMInvert"].execute(model, {"samples": torch.zeros(1, 4, 3, 8, 8)}, positive=pos)
            out["frames_error"] = None
        except ValueError as e:
            out["frames_error"] = str(e)

        # Denoiser as Diffusion Model: a spandrel DnCNN from Load Upscale Model's loader.
        sd = comfy.utils.load_torch_file(os.path.join(MODELS, "upscale_models", "tiny_dncnn.pth"), safe_load=True)
        desc = ModelLoader().load_from_state_dict(sd).eval()
        dmodel, = N["IQAMAP_DenoiserAsDiffusionModel"].execute(desc, 0.0, 0.5)
        bvae = N["IQAMAP_LoadBuiltinPriorModel"].execute("cpu")[1]
        plat = {"samples": bvae.encode(img)}
        pinv, = N["IQAMAP_DDIMInvert"].execute(dmodel, plat, "edict", steps=3, strength=0.5)
        pres, phist = N["IQAMAP_LatentMAPAscent"].execute(dmodel, bvae, prior, pinv, iterations=1)
        out["dncnn_inversion_error"] = json.loads(phist)["inversion_error"]
        out["dncnn_image_shape"] = list(N["IQAMAP_Decode"].execute(pres, bvae)[0].shape)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
