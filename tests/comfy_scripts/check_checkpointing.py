"""Per-block activation checkpointing inside the gradient pass, and fp8 weights, on ComfyUI's own model classes.

    $COMFYUI_PYTHON check_checkpointing.py IMAGE ITEM [ITEM ...]     (prints one RESULT JSON line)

ITEM is a family of check_flow.py (``flux_dev``, ``sd3``, ``qwen_image``, ``lumina2``, ...): the EDICT gradient
(4 steps) of a decoded objective w.r.t. the latent pair, reversible with checkpointing off and on, plain autograd,
and the negative control (blocks checkpointed without the recomputation's copy-on-write, checkpoint's default
context); with the bytes autograd holds for backward (counted in comfy_grad's saved-tensors hooks). ``fp8`` /
``scaled_fp8``: the tiny Flux dev with float8_e4m3fn weights as ComfyUI runs them (manual cast to float32; scaled:
ComfyUI's ``QuantizedTensor`` weights through ``mixed_precision_ops``): reversible vs autograd gradient, and the
ascent's scores. Runs under ``torch.inference_mode()`` as ComfyUI's executor does.
"""
import contextlib
import json
import os
import sys
import time
import weakref

IMAGE, ITEMS = os.path.abspath(sys.argv[1]), sys.argv[2:]
sys.argv = [sys.argv[0], IMAGE]  # check_flow reads its own arguments on import (and sets ComfyUI's: --cpu)

import check_flow as F  # noqa: E402  (beside this script: the families' builders)
import comfy.supported_models as SM  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from iqa_map.core.autograd import autograd_safe  # noqa: E402
from iqa_map.core.models.checkpointing import checkpoint_blocks, find_blocks  # noqa: E402
from iqa_map.core.sampling import edict  # noqa: E402
from iqa_map.nodes import NODES as N  # noqa: E402
from iqa_map.nodes import comfy as C  # noqa: E402
from iqa_map.nodes import comfy_grad  # noqa: E402

STEPS = 4


class Saved:
    """Peak bytes autograd holds for backward, counted in comfy_grad's pack hooks: ``peak`` what the forward saves
    (every activation outside a checkpointed block, each checkpointed block's inputs); ``peak_all`` also the
    activations a block's recomputation holds during the backward."""

    CLASSES = (comfy_grad._CopyOnWrite, comfy_grad._RecomputeCopyOnWrite)

    def __init__(self):
        self.live = self.peak = self.live_all = self.peak_all = 0

    def __enter__(self):
        self.orig = [(cls, cls.__dict__["pack"]) for cls in self.CLASSES]
        for cls, orig in self.orig:
            setattr(cls, "pack", self._counting(orig, forward=cls is comfy_grad._CopyOnWrite))
        return self

    def _counting(self, orig, forward):
        def pack(mode, t):
            h = orig(mode, t)
            n = t.numel() * t.element_size()
            self._add(n, forward)
            weakref.finalize(h, self._add, -n, forward)
            return h
        return pack

    def _add(self, n, forward):
        if forward:
            self.live += n
            self.peak = max(self.peak, self.live)
        self.live_all += n
        self.peak_all = max(self.peak_all, self.live_all)

    def __exit__(self, *exc):
        for cls, orig in self.orig:
            setattr(cls, "pack", orig)


def image():
    return torch.from_numpy(np.asarray(Image.open(IMAGE).convert("RGB"), dtype=np.float32) / 255)[None, :64, :64]


def gradients(model, vae, pos):
    """Gradients and saved bytes of one reversible EDICT gradient, by configuration."""
    import nodes as core_nodes
    lat, = core_nodes.VAEEncode().encode(vae, image())
    inv, = N["IQAMAP_DDIMInvert"].execute(model, lat, "edict", steps=STEPS, strength=1.0, positive=pos)
    i = inv.inversion
    codec = C.ComfyVAECodec(vae, C.latent_format(model))
    out = {}

    def run(den, x):
        autograd_safe(den.network)  # weights loaded under inference mode (as the ascent does itself)
        w = torch.randn(1, 3, 64, 64, generator=F.G)
        out["blocks"] = len(find_blocks(den.network))
        # name: (EDICT gradient, checkpointing with comfy_grad's guard, checkpointing without it)
        for name, mode, guarded, bare in (("autograd", "autograd", False, False), ("off", "reversible", False, False),
                                          ("on", "reversible", True, False), ("unguarded", "reversible", False, True)):
            with comfy_grad.differentiable(den.network, checkpoint=guarded), contextlib.ExitStack() as stack:
                if bare:  # the negative control: checkpoint's default context, no copy-on-write in the recompute
                    stack.enter_context(checkpoint_blocks(den.network, True))
                t0 = time.perf_counter()
                with Saved() as sb:
                    _, g = edict.value_and_grad(den, i.pair, i.sigmas, lambda a, b: (codec.decode(a) * w).sum(),
                                                mix=i.mix, grad=mode)
                out[name] = dict(grad=torch.cat([g[0].flatten(), g[1].flatten()]), saved=sb.peak,
                                 saved_with_recompute=sb.peak_all, seconds=time.perf_counter() - t0)
        return x

    C.run_in_comfy_sampler(model, lat["samples"], i.sigmas, run, pos)
    ref = out["autograd"]["grad"]
    r = {"blocks": out["blocks"], "grad_norm": float(ref.norm())}
    for name in ("off", "on", "unguarded"):
        r[f"rel_diff_{name}"] = F.rel(out[name]["grad"], ref)
    r["rel_diff_on_vs_off"] = F.rel(out["on"]["grad"], out["off"]["grad"])
    for name in ("autograd", "off", "on", "unguarded"):
        r[f"saved_{name}"] = out[name]["saved"]
        r[f"saved_with_recompute_{name}"] = out[name]["saved_with_recompute"]
        r[f"seconds_{name}"] = out[name]["seconds"]
    return r


def node_ascent(model, vae, pos, prior, iterations=2):
    """Latent MAP Ascent through the node with checkpointing on and off: the same latents and scores."""
    import nodes as core_nodes
    lat, = core_nodes.VAEEncode().encode(vae, image())
    inv, = N["IQAMAP_DDIMInvert"].execute(model, lat, "edict", steps=STEPS, strength=1.0, positive=pos)
    res = {}
    for mode in ("off", "on"):
        latent, hist = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=iterations,
                                                           checkpointing=mode)
        res[mode] = (latent["samples"], [e["score"] for e in json.loads(hist)["history"]])
    return {"node_latent_rel_diff_on_vs_off": F.rel(res["on"][0], res["off"][0]),
            "node_scores_off": res["off"][1], "node_scores_on": res["on"][1],
            "blocks_restored": not any(hasattr(b, "_iqa_map_checkpointed") for b in find_blocks(model.model))}


def fp8_flux(scaled: bool):
    """The tiny Flux dev of check_flow with float8_e4m3fn weights, computed in float32 as ComfyUI does on a card
    without fp8 matmuls: plain (every weight fp8, ``comfy.ops.manual_cast``) or scaled (Linear weights as
    ``QuantizedTensor`` with a per-tensor scale, ``comfy.ops.mixed_precision_ops``, the "scaled fp8" files)."""
    full, vae, pos = F.flux(True)
    sd = full.model.diffusion_model.state_dict()
    config = SM.Flux(dict(full.model.model_config.unet_config))
    if scaled:
        config.quant_config = {"mixed_ops": True}  # what comfy.utils.detect_layer_quantization sets
        config.set_inference_dtype(torch.float32, torch.float32)
        linears = {k[:-len("weight")] for k, v in sd.items() if k.endswith(".weight") and v.ndim == 2}
        fmt = list(json.dumps({"format": "float8_e4m3fn"}).encode("utf-8"))
        for p in linears:
            w = sd[p + "weight"]
            scale = w.abs().max().clamp(min=1e-12) / torch.finfo(torch.float8_e4m3fn).max
            sd[p + "weight"] = (w / scale).to(torch.float8_e4m3fn)
            sd[p + "weight_scale"] = scale.float()
            sd[p + "comfy_quant"] = torch.tensor(fmt, dtype=torch.uint8)
    else:
        config.set_inference_dtype(torch.float8_e4m3fn, torch.float32)
    model = config.get_model({})
    missing, unexpected = model.diffusion_model.load_state_dict(sd, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    weights = [p for p in model.diffusion_model.parameters() if p.ndim == 2]
    import comfy.model_management as mm
    import comfy.model_patcher
    patcher = comfy.model_patcher.ModelPatcher(model, mm.get_torch_device(), mm.unet_offload_device())
    # what the matrices are stored as (a QuantizedTensor reports its compute dtype; its storage is _qdata)
    return patcher, vae, pos, sorted({f"{type(w).__name__}:{getattr(w, '_qdata', w).dtype}" for w in weights})


def fp8(scaled: bool, prior):
    model, vae, pos, kinds = fp8_flux(scaled)
    import nodes as core_nodes
    lat, = core_nodes.VAEEncode().encode(vae, image())
    inv, = N["IQAMAP_DDIMInvert"].execute(model, lat, "edict", steps=STEPS, strength=1.0, positive=pos)
    r = {"weights": kinds, "manual_cast_dtype": str(model.model.manual_cast_dtype)}
    _, hist = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=2)  # first: it makes the
    h = json.loads(hist)  # weights loaded under inference mode usable by autograd, as in ComfyUI
    r["scores"] = [e["score"] for e in h["history"]]
    r["inversion_error"] = h["inversion_error"]
    r.update(F.gradients(model, lat, inv, pos, vae))
    return r


def main():
    torch.set_num_threads(1)
    out = {}
    with torch.inference_mode():
        prior, = N["IQAMAP_LoadIQAPrior"].execute("niqe", "default", "cpu")
        for item in ITEMS:
            t0 = time.perf_counter()
            if item in ("fp8", "scaled_fp8"):
                out[item] = fp8(item == "scaled_fp8", prior)
            elif item.startswith("node:"):
                out[item] = node_ascent(*F.BUILD[item.split(":", 1)[1]](), prior)
            else:
                out[item] = gradients(*F.BUILD[item]())
            out[item]["seconds"] = time.perf_counter() - t0
            print(item, json.dumps(out[item]), file=sys.stderr, flush=True)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
