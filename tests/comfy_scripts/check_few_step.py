"""Few-step and distilled models through DDIM Invert and Latent MAP Ascent at 1-8 steps, in-process.

    $COMFYUI_PYTHON check_few_step.py IMAGE CASE [CASE ...]     (prints one RESULT JSON line)

A CASE is ``family:steps``. Each family is a tiny random-weight network of ComfyUI 0.8's own classes with the
model sampling and schedule its workflows use:

* ``flux_schnell``: check_flow.py's Flux schnell (CONST flow sampling), the ``simple`` scheduler;
* ``sdxl_turbo``: ComfyUI's SDXL model (EPS discrete sampling) with the sigmas of the ``SDTurboScheduler`` node
  (timesteps 999, 899, ... then 0), as ComfyUI's SDXL Turbo example (SamplerCustom) uses;
* ``sdxl_lightning``: the same SDXL model with the ``sgm_uniform`` scheduler, as ByteDance's Lightning workflows;
* ``lcm``: a tiny SD 1.5 behind the ``ModelSamplingDiscrete`` node with ``sampling="lcm"`` (an LCM LoRA's setup:
  50 distilled timesteps and LCM's boundary-condition denoiser), ``sgm_uniform``.

Per case: LATENT in -> Latent MAP Ascent with 0 iterations -> LATENT out; reversible vs plain-autograd gradient;
the ascent at the few-step preset's learning rate (core.map.settings.FEW_STEP). Network float32, pair float64.
"""
import json
import os
import sys
import time

IMAGE = os.path.abspath(sys.argv[1])
CASES = sys.argv[2:]
sys.path.insert(0, os.environ["COMFYUI_PATH"])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.argv = [sys.argv[0], "--cpu"]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import check_flow as F  # noqa: E402  (sets up ComfyUI's options; its builders and gradient check are reused)
import comfy.supported_models as SM  # noqa: E402
import nodes as core_nodes  # noqa: E402
from comfy_extras.nodes_custom_sampler import SDTurboScheduler  # noqa: E402
from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete  # noqa: E402

from iqa_map.core.map.settings import FEW_STEP  # noqa: E402
from iqa_map.core.sampling import edict  # noqa: E402
from iqa_map.nodes import NODES as N  # noqa: E402
from iqa_map.nodes import comfy as C  # noqa: E402

ITERATIONS = 3  # ascent iterations at the preset's learning rate


def unet_config(**extra):
    """A narrow two-level UNet (ComfyUI's openaimodel) with SD's layout; ``extra`` makes it SDXL's."""
    cfg = {"image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
           "channel_mult": [1, 2], "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1],
           "transformer_depth_middle": 1, "context_dim": 64, "num_head_channels": 16, "use_spatial_transformer": True,
           "legacy": False, "use_temporal_attention": False, "use_temporal_resblock": False}
    return {**cfg, **extra}


def sdxl():
    """ComfyUI's SDXL (model_base.SDXL, EPS; its adm input is 1280 pooled + 6 x 256 size features). SDXL Turbo and
    Lightning are SDXL checkpoints: ComfyUI detects them as SDXL, and only the schedule differs."""
    cfg = unet_config(use_linear_in_transformer=True, adm_in_channels=2816, num_classes="sequential")
    pooled = torch.randn(1, 1280, generator=F.G)
    return F.patcher(SM.SDXL, cfg), F.kl_vae(4), F.cond(64, pooled_output=pooled, width=64, height=64)


def lcm():
    """A tiny SD 1.5 with an LCM LoRA's sampling: ComfyUI's ModelSamplingDiscrete node, sampling "lcm"."""
    model = F.patcher(SM.SD15, unet_config(use_linear_in_transformer=False))
    model, = ModelSamplingDiscrete().patch(model, "lcm", False)
    return model, F.kl_vae(4), F.cond(64)


BUILD = {"flux_schnell": F.BUILD["flux_schnell"], "sdxl_turbo": sdxl, "sdxl_lightning": sdxl, "lcm": lcm}
SCHEDULER = {"flux_schnell": "simple", "sdxl_lightning": "sgm_uniform", "lcm": "sgm_uniform"}


def turbo_sigmas(model, steps):
    return SDTurboScheduler.execute(model, steps, 1.0)[0].to(torch.float64)


def invert(family, model, lat, pos, steps):
    """DDIM Invert as a user wires it; SDXL Turbo's schedule comes from the SDTurboScheduler node through the node's
    ``sigmas`` input (as ComfyUI's SDXL Turbo example feeds SamplerCustom)."""
    if family != "sdxl_turbo":
        return N["IQAMAP_DDIMInvert"].execute(model, lat, "edict", scheduler=SCHEDULER[family], steps=steps,
                                              strength=1.0, positive=pos)[0]
    return N["IQAMAP_DDIMInvert"].execute(model, lat, "edict", positive=pos, sigmas=turbo_sigmas(model, steps))[0]


def bad_sigmas(model, lat, pos) -> dict:
    """The node's own message for a schedule it cannot invert along (rising, or a single level)."""
    out = {}
    for name, sig in (("rising", torch.tensor([0.0, 1.0, 14.6])), ("one_level", torch.tensor([14.6]))):
        try:
            N["IQAMAP_DDIMInvert"].execute(model, lat, "edict", positive=pos, sigmas=sig)
            out[name] = None
        except ValueError as e:
            out[name] = str(e)
    return out


def check(family, steps, model, vae, pos, img, prior):
    lat, = core_nodes.VAEEncode().encode(vae, img)
    inv = invert(family, model, lat, pos, steps)
    i = inv.inversion
    r = {"sigmas": [float(s) for s in i.sigmas], "steps": i.steps, "model_sampling": type(model.get_model_object("model_sampling"))
         .__mro__[1].__name__}
    back = C.run_in_comfy_sampler(model, lat["samples"], i.sigmas,
                                  lambda den, x: edict.sample(den, i.pair, i.sigmas, mix=i.mix, grad=None)[0].float(),
                                  pos)
    r["sample_back_rel_error"] = F.rel(back, lat["samples"])
    # The network's float32 precision at this schedule: how far the sampled latent moves when the pair moves by
    # one float32 rounding (6e-8 relative), which is all the network's input keeps of it.
    g = torch.Generator().manual_seed(1)
    nudged = tuple(p * (1 + 6e-8 * torch.randn(p.shape, generator=g, dtype=p.dtype)) for p in i.pair)
    moved = C.run_in_comfy_sampler(model, lat["samples"], i.sigmas,
                                   lambda den, x: edict.sample(den, nudged, i.sigmas, mix=i.mix, grad=None)[0].float(),
                                   pos)
    r["float32_rounding_sensitivity"] = F.rel(moved, back)
    zero, _ = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=0)
    r["zero_iterations_rel_error"] = F.rel(zero["samples"], lat["samples"])  # LATENT in -> LATENT out
    r.update(F.gradients(model, lat, inv, pos, vae))
    for name, lr in (("default", 0.0), ("preset", FEW_STEP["lr"])):  # 0.0: the optimiser's own (lr 2)
        res, hist = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=ITERATIONS,
                                                        learning_rate=lr, optimizer=FEW_STEP["optimizer"])
        h = json.loads(hist)
        r[name] = {"scores": [e["score"] for e in h["history"]], "objectives": [e["objective"] for e in h["history"]],
                   "events": h["events"]}
    r["inversion_error"] = h["inversion_error"]
    image, = N["IQAMAP_Decode"].execute(res, vae)
    r["image_finite"] = bool(torch.isfinite(image).all()) and list(image.shape) == [1, 64, 64, 3]
    return r


def main():
    torch.set_num_threads(1)
    img = torch.from_numpy(np.asarray(Image.open(IMAGE).convert("RGB"), dtype=np.float32) / 255)[None, :64, :64]
    out, built = {}, {}
    with torch.inference_mode():
        prior, = N["IQAMAP_LoadIQAPrior"].execute("niqe", "default", "cpu")
        for case in CASES:
            family, steps = case.split(":")
            t0 = time.perf_counter()
            if family not in built:
                F.G.manual_seed(0)  # each family's weights are the same whichever cases run before it
                built[family] = BUILD[family]()
            out[case] = check(family, int(steps), *built[family], img, prior)
            if family == "sdxl_turbo" and "bad_sigmas" not in out:
                m, v, pos = built[family][:3]
                out["bad_sigmas"] = bad_sigmas(m, core_nodes.VAEEncode().encode(v, img)[0], pos)
                out[case]["turbo_scheduler_sigmas"] = [float(x) for x in turbo_sigmas(m, int(steps))]
            out[case]["seconds"] = time.perf_counter() - t0
            print(case, json.dumps(out[case]), file=sys.stderr, flush=True)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
