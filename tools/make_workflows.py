"""Write the shipped ComfyUI workflows (UI format) into ``example_workflows/``, where ComfyUI lists them under
Browse Templates (their ``.jpg`` thumbnails are screenshots: tools/make_thumbnails.py).

    python tools/make_workflows.py

Graphs are described compactly below; widget order comes from the pack's own
node schemas (``nodes/schema.py``) and, for ComfyUI's core nodes, from the table ``CORE`` (checked
against a real ComfyUI's ``/object_info`` by the integration tests).
"""
from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "example_workflows"

#: core node -> (inputs [(name, type)], widgets [names], outputs [(name, type)])
CORE = {
    "CheckpointLoaderSimple": ([], ["ckpt_name"], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "CLIPTextEncode": ([("clip", "CLIP")], ["text"], [("CONDITIONING", "CONDITIONING")]),
    "LoadImage": ([], ["image", "upload"], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "ImageScale": ([("image", "IMAGE")], ["upscale_method", "width", "height", "crop"], [("IMAGE", "IMAGE")]),
    "VAEEncode": ([("pixels", "IMAGE"), ("vae", "VAE")], [], [("LATENT", "LATENT")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [], [("IMAGE", "IMAGE")]),
    "SaveImage": ([("images", "IMAGE")], ["filename_prefix"], []),
    "UpscaleModelLoader": ([], ["model_name"], [("UPSCALE_MODEL", "UPSCALE_MODEL")]),
    "ImageUpscaleWithModel": ([("upscale_model", "UPSCALE_MODEL"), ("image", "IMAGE")], [], [("IMAGE", "IMAGE")]),
    "ImageScaleBy": ([("image", "IMAGE")], ["upscale_method", "scale_by"], [("IMAGE", "IMAGE")]),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                  ("latent_image", "LATENT")],
                 ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
                 [("LATENT", "LATENT")]),
    # its optional 'strength' (newer ComfyUI) keeps its default 1
    "DifferentialDiffusion": ([("model", "MODEL")], [], [("MODEL", "MODEL")]),
    "SetLatentNoiseMask": ([("samples", "LATENT"), ("mask", "MASK")], [], [("LATENT", "LATENT")]),
    # Flux.1's separate files (ComfyUI's own Flux example); 'device' is DualCLIPLoader's optional (advanced) widget
    "UNETLoader": ([], ["unet_name", "weight_dtype"], [("MODEL", "MODEL")]),
    "DualCLIPLoader": ([], ["clip_name1", "clip_name2", "type", "device"], [("CLIP", "CLIP")]),
    "VAELoader": ([], ["vae_name"], [("VAE", "VAE")]),
    "FluxGuidance": ([("conditioning", "CONDITIONING")], ["guidance"], [("CONDITIONING", "CONDITIONING")]),
}


def pack_spec(node_type: str):
    """(inputs, widgets, outputs) of one of this pack's nodes, from its schema (widgets in saved order)."""
    from iqa_map.nodes import NODES
    schema = NODES[node_type].SCHEMA
    inputs, widgets = [], []
    for i in schema.ordered_inputs():
        if i.is_widget:
            widgets.append(i.id)
            if i.id == "seed":
                widgets.append("control_after_generate")
        else:
            inputs.append((i.id, i.type))
    return inputs, widgets, [(o.label, o.type) for o in schema.outputs]


def widget_defaults(node_type: str) -> dict:
    from iqa_map.nodes import NODES
    out = {i.id: i.default for i in NODES[node_type].SCHEMA.inputs if i.default is not None}
    out["control_after_generate"] = "fixed"
    return out


class Graph:
    def __init__(self, title: str, description: str):
        self.title, self.description = title, description
        self.nodes, self.links = [], []

    def add(self, node_type: str, col: int, row: float, title: str | None = None, **values) -> dict:
        if node_type in CORE:
            inputs, widgets, outputs = CORE[node_type]
            defaults = {}
        else:
            inputs, widgets, outputs = pack_spec(node_type)
            defaults = widget_defaults(node_type)
        missing = [w for w in widgets if w not in values and w not in defaults]
        if missing:
            raise ValueError(f"{node_type}: give values for {missing}")
        node = {
            "id": len(self.nodes) + 1, "type": node_type, "pos": [40 + 330 * col, 40 + 150 * row],
            "size": [300, 60 + 26 * (len(widgets) + max(len(inputs), len(outputs)))], "flags": {},
            "order": len(self.nodes), "mode": 0,
            "inputs": [{"name": n, "type": t, "link": None} for n, t in inputs],
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
            "properties": {"Node name for S&R": node_type},
            "widgets_values": [values.get(w, defaults.get(w)) for w in widgets],
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    def link(self, src: dict, out_name: str, dst: dict, in_name: str) -> None:
        o = next(i for i, x in enumerate(src["outputs"]) if x["name"] == out_name)
        d = next(i for i, x in enumerate(dst["inputs"]) if x["name"] == in_name)
        t = src["outputs"][o]["type"]
        if dst["inputs"][d]["type"] != t:
            raise TypeError(f"{src['type']}.{out_name} ({t}) -> {dst['type']}.{in_name} ({dst['inputs'][d]['type']})")
        lid = len(self.links) + 1
        self.links.append([lid, src["id"], o, dst["id"], d, t])
        src["outputs"][o]["links"].append(lid)
        dst["inputs"][d]["link"] = lid

    def ui(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {},
                "extra": {"iqa_map": {"title": self.title, "description": self.description},
                          "ds": {"scale": 0.8, "offset": [0, 0]}},
                "version": 0.4}


def _photo(g: Graph, col=0, row=0, size=512):
    img = g.add("LoadImage", col, row, image="example.png", upload="image")
    scaled = g.add("ImageScale", col, row + 2, title="Working size (remove for full size)",
                   upscale_method="area", width=size, height=size, crop="center")
    g.link(img, "IMAGE", scaled, "image")
    return scaled


def _sd(g: Graph, photo, col=1, **invert):
    """Checkpoint, prompt, VAE Encode and DDIM Invert (``invert``: its widgets; the rest keep the node's
    defaults, which are the library's): the start of every SD workflow."""
    ckpt = g.add("CheckpointLoaderSimple", col, 0, ckpt_name="v1-5-pruned-emaonly.safetensors")
    text = g.add("CLIPTextEncode", col, 2, title="Prompt (empty is fine)", text="a high quality photo")
    g.link(ckpt, "CLIP", text, "clip")
    enc = g.add("VAEEncode", col, 4)
    g.link(photo, "IMAGE", enc, "pixels")
    g.link(ckpt, "VAE", enc, "vae")
    return ckpt, _invert(g, ckpt, "MODEL", enc, positive=text, col=col + 1, **invert)


def _invert(g: Graph, model_src, model_out, latent_src, positive=None, col=2, **kw):
    inv = g.add("IQAMAP_DDIMInvert", col, 0, **kw)
    g.link(model_src, model_out, inv, "model")
    g.link(latent_src, "LATENT", inv, "latent")
    if positive is not None:
        g.link(positive, "CONDITIONING", inv, "positive")
    return inv


def _ascend(g: Graph, model_src, model_out, vae_src, vae_out, prior, inv, col, row, title=None, monitor=None, **kw):
    asc = g.add("IQAMAP_LatentMAPAscent", col, row, title=title, **kw)
    g.link(model_src, model_out, asc, "model")
    g.link(vae_src, vae_out, asc, "vae")
    g.link(prior, "prior", asc, "prior")
    g.link(inv, "inversion", asc, "inversion")
    if monitor is not None:
        g.link(monitor, "prior", asc, "monitor")
    return asc


def _finish(g: Graph, asc, vae_src, vae_out, col, row, prefix, prior=None):
    dec = g.add("IQAMAP_Decode", col, row)
    g.link(asc, "latent", dec, "samples")
    g.link(vae_src, vae_out, dec, "vae")
    save = g.add("SaveImage", col + 1, row, filename_prefix=prefix)
    g.link(dec, "IMAGE", save, "images")
    if prior is not None:
        score = g.add("IQAMAP_IQAScore", col + 1, row + 2)
        g.link(dec, "IMAGE", score, "image")
        g.link(prior, "prior", score, "prior")
    return dec


def _cpu_start(g: Graph):
    """Photo, built-in model, VAE Encode, DDIM Invert (quick CPU regime) and the built-in prior."""
    photo = _photo(g, size=256)
    model = g.add("IQAMAP_LoadBuiltinPriorModel", 1, 0)
    enc = g.add("VAEEncode", 1, 2)
    g.link(photo, "IMAGE", enc, "pixels")
    g.link(model, "VAE", enc, "vae")
    inv = _invert(g, model, "MODEL", enc, steps=4, strength=0.35)
    prior = g.add("IQAMAP_LoadIQAPrior", 2, 3, name="builtin")
    return photo, model, inv, prior


def cpu_builtin() -> Graph:
    g = Graph("CPU enhancement with the built-in model",
              "Runs anywhere with nothing to download: the shipped pixel model and the built-in NIQE+BRISQUE prior, "
              "PIQE as hack-guard monitor.")
    photo, model, inv, prior = _cpu_start(g)
    monitor = g.add("IQAMAP_LoadIQAPrior", 2, 5, title="Monitor (hack guard)", name="piqe")
    asc = _ascend(g, model, "MODEL", model, "VAE", prior, inv, 3, 0, monitor=monitor, iterations=8, optimizer="adam")
    _finish(g, asc, model, "VAE", 4, 0, "iqa_map_cpu", prior)
    return g


def sd15_basic() -> Graph:
    g = Graph("Basic enhancement with an SD 1.5 checkpoint",
              "Invert the photo exactly (EDICT) and climb the built-in prior with an NLPD fidelity penalty.")
    photo = _photo(g)
    ckpt, inv = _sd(g, photo)
    prior = g.add("IQAMAP_LoadIQAPrior", 2, 3, name="builtin")
    asc = _ascend(g, ckpt, "MODEL", ckpt, "VAE", prior, inv, 3, 0)
    _finish(g, asc, ckpt, "VAE", 4, 0, "iqa_map_sd15", prior)
    return g


def sd15_compare() -> Graph:
    g = Graph("Compare priors side by side",
              "One inversion, three ascents under NIQE, BRISQUE and PIQE; each result is scored by the others "
              "(IQA Score), which shows which metric fools which.")
    photo = _photo(g)
    ckpt, inv = _sd(g, photo)
    for i, name in enumerate(("niqe", "brisque", "piqe")):
        prior = g.add("IQAMAP_LoadIQAPrior", 2, 3 + 2 * i, title=f"Prior: {name}", name=name)
        asc = _ascend(g, ckpt, "MODEL", ckpt, "VAE", prior, inv, 3, 4 * i, title=f"Ascent ({name})")
        _finish(g, asc, ckpt, "VAE", 4, 4 * i, f"iqa_map_compare_{name}", prior)
    return g


def sd15_fused() -> Graph:
    g = Graph("Fused prior with a hack guard",
              "NIQE, BRISQUE and PIQE fused by a soft minimum (the gradient goes to the worst metric), with a "
              "multi-scale average; the built-in prior is a held-out monitor.")
    photo = _photo(g)
    ckpt, inv = _sd(g, photo)
    p = [g.add("IQAMAP_LoadIQAPrior", 2, 3 + 2 * i, name=n) for i, n in enumerate(("niqe", "brisque", "piqe"))]
    fused = g.add("IQAMAP_FusePriors", 3, 3, mode="softmin", multiscale=True)
    g.link(p[0], "prior", fused, "prior_1")
    g.link(p[1], "prior", fused, "prior_2")
    g.link(p[2], "prior", fused, "prior_3")
    monitor = g.add("IQAMAP_LoadIQAPrior", 3, 7, title="Monitor (hack guard)", name="builtin")
    asc = _ascend(g, ckpt, "MODEL", ckpt, "VAE", fused, inv, 4, 0, monitor=monitor)
    _finish(g, asc, ckpt, "VAE", 5, 0, "iqa_map_fused", fused)
    return g


def after_upscaler() -> Graph:
    g = Graph("Post-enhancement after an upscaler",
              "A restoration/upscale model first (any Load Upscale Model model), then a gentle MAP ascent that "
              "removes its artefacts while staying close to its output.")
    photo = _photo(g, size=256)
    up_model = g.add("UpscaleModelLoader", 0, 4, model_name="RealESRGAN_x4plus.pth")
    up = g.add("ImageUpscaleWithModel", 1, 4)
    g.link(up_model, "UPSCALE_MODEL", up, "upscale_model")
    g.link(photo, "IMAGE", up, "image")
    down = g.add("ImageScaleBy", 1, 6, title="Back to 2x", upscale_method="area", scale_by=0.5)
    g.link(up, "IMAGE", down, "image")
    ckpt, inv = _sd(g, down, col=2, steps=8, strength=0.3)
    prior = g.add("IQAMAP_LoadIQAPrior", 3, 3, name="builtin")
    asc = _ascend(g, ckpt, "MODEL", ckpt, "VAE", prior, inv, 4, 0, iterations=12)
    _finish(g, asc, ckpt, "VAE", 5, 0, "iqa_map_after_upscale", prior)
    return g


def cpu_adaptive() -> Graph:
    g = Graph("Quality-adaptive enhancement (CPU)",
              "The learned built-in prior's quality map of the photo weights the fidelity: well-preserved regions are "
              "held close, damaged ones are free to change. The heatmap shows where the map sees damage.")
    photo, model, inv, prior = _cpu_start(g)
    asc = _ascend(g, model, "MODEL", model, "VAE", prior, inv, 3, 0, iterations=8, optimizer="adam",
                  adaptive_fidelity="cnniqa-builtin")
    _finish(g, asc, model, "VAE", 4, 0, "iqa_map_adaptive", prior)
    map_prior = g.add("IQAMAP_LoadIQAPrior", 2, 5, title="Map prior", name="cnniqa-builtin")
    qmap = g.add("IQAMAP_IQAQualityMap", 3, 4)
    g.link(photo, "IMAGE", qmap, "image")
    g.link(map_prior, "prior", qmap, "prior")
    save = g.add("SaveImage", 4, 4, title="Quality map (heatmap)", filename_prefix="iqa_map_quality_map")
    g.link(qmap, "heatmap", save, "images")
    return g


def finetune_upscaler() -> Graph:
    g = Graph("Fine-tune an upscaler with an IQA prior",
              "LoRA fine-tuning of any Load Upscale Model upscaler with L1 minus NIQE on your photo(s), merged into "
              "a model of the same architecture; then base and tuned upscale the same downscaled photo side by "
              "side, scored by the optimised prior and a held-out one (PIQE). Expect sharper, grainier output and "
              "a PSNR cost of about half a dB (see the README's SR benchmark).")
    photo = _photo(g, size=512)
    base = g.add("UpscaleModelLoader", 0, 4, model_name="RealESRGAN_x4plus.pth")
    prior = g.add("IQAMAP_LoadIQAPrior", 1, 4, title="Prior (optimised)", name="niqe")
    held = g.add("IQAMAP_LoadIQAPrior", 1, 6, title="Held-out judge", name="piqe")
    tune = g.add("IQAMAP_IQAFineTuneUpscaler", 2, 0, steps=100)
    g.link(base, "UPSCALE_MODEL", tune, "upscale_model")
    g.link(photo, "IMAGE", tune, "images")
    g.link(prior, "prior", tune, "prior")
    lr = g.add("ImageScaleBy", 1, 8, title="Test input (1/4 size)", upscale_method="area", scale_by=0.25)
    g.link(photo, "IMAGE", lr, "image")
    for i, (src, out, name) in enumerate(((base, "UPSCALE_MODEL", "base"), (tune, "upscale_model", "tuned"))):
        up = g.add("ImageUpscaleWithModel", 3, 4 * i, title=f"Upscale ({name})")
        g.link(src, out, up, "upscale_model")
        g.link(lr, "IMAGE", up, "image")
        save = g.add("SaveImage", 4, 4 * i, filename_prefix=f"iqa_map_sr_{name}")
        g.link(up, "IMAGE", save, "images")
        for j, judge in enumerate((prior, held)):
            score = g.add("IQAMAP_IQAScore", 5, 4 * i + 2 * j, title=f"Score ({name})")
            g.link(up, "IMAGE", score, "image")
            g.link(judge, "prior", score, "prior")
    return g


def _regional(g: Graph, photo, ckpt, col: int, row: int = 0):
    """IQA Regional Prompt over the checkpoint's CLIP, its map drawn by the learned built-in prior; the
    region preview saved beside the result."""
    prior = g.add("IQAMAP_LoadIQAPrior", col - 1, 6, title="Map prior", name="cnniqa-builtin")
    reg = g.add("IQAMAP_IQARegionalPrompt", col, row, global_prompt="a photo")
    g.link(ckpt, "CLIP", reg, "clip")
    g.link(photo, "IMAGE", reg, "image")
    g.link(prior, "prior", reg, "prior")
    save = g.add("SaveImage", col, row + 6, title="Regions (preview)", filename_prefix="iqa_map_regions")
    g.link(reg, "regions", save, "images")
    return reg, prior


def sd15_regional_img2img() -> Graph:
    g = Graph("Quality-adaptive img2img restoration (regional prompts + Differential Diffusion)",
              "AdaQual-Diff in ComfyUI: the photo's quality map is split into regions; each gets the global prompt "
              "plus restoration phrases (more, and from the low-quality pool, the worse it is) as masked "
              "conditioning, and a denoise strength that rises as its quality falls, applied by Differential "
              "Diffusion. Works with any SD 1.x/2.x/SDXL checkpoint.")
    photo = _photo(g)
    ckpt = g.add("CheckpointLoaderSimple", 1, 0, ckpt_name="v1-5-pruned-emaonly.safetensors")
    reg, prior = _regional(g, photo, ckpt, col=2)
    neg = g.add("CLIPTextEncode", 1, 2, title="Negative", text="blurry, noisy, jpeg artifacts, low quality")
    g.link(ckpt, "CLIP", neg, "clip")
    enc = g.add("VAEEncode", 1, 4)
    g.link(photo, "IMAGE", enc, "pixels")
    g.link(ckpt, "VAE", enc, "vae")
    noise = g.add("SetLatentNoiseMask", 3, 4)
    g.link(enc, "LATENT", noise, "samples")
    g.link(reg, "strength", noise, "mask")
    diff = g.add("DifferentialDiffusion", 3, 2)
    g.link(ckpt, "MODEL", diff, "model")
    ks = g.add("KSampler", 4, 0, seed=0, control_after_generate="fixed", steps=20, cfg=5.0, sampler_name="euler",
               scheduler="normal", denoise=0.6)
    g.link(diff, "MODEL", ks, "model")
    g.link(reg, "conditioning", ks, "positive")
    g.link(neg, "CONDITIONING", ks, "negative")
    g.link(noise, "LATENT", ks, "latent_image")
    dec = g.add("VAEDecode", 5, 0)
    g.link(ks, "LATENT", dec, "samples")
    g.link(ckpt, "VAE", dec, "vae")
    save = g.add("SaveImage", 6, 0, filename_prefix="iqa_map_regional_img2img")
    g.link(dec, "IMAGE", save, "images")
    score = g.add("IQAMAP_IQAScore", 6, 2)
    g.link(dec, "IMAGE", score, "image")
    g.link(prior, "prior", score, "prior")
    return g


def sd15_regional_map() -> Graph:
    g = Graph("MAP ascent with regional prompts",
              "The exact EDICT inversion and the MAP ascent conditioned on IQA Regional Prompt's masked "
              "conditioning: each region of the photo is inverted and climbed under its own prompt.")
    photo = _photo(g)
    ckpt = g.add("CheckpointLoaderSimple", 1, 0, ckpt_name="v1-5-pruned-emaonly.safetensors")
    reg, prior = _regional(g, photo, ckpt, col=2)
    enc = g.add("VAEEncode", 1, 4)
    g.link(photo, "IMAGE", enc, "pixels")
    g.link(ckpt, "VAE", enc, "vae")
    inv = _invert(g, ckpt, "MODEL", enc, col=3)
    g.link(reg, "conditioning", inv, "positive")
    builtin = g.add("IQAMAP_LoadIQAPrior", 3, 3, name="builtin")
    asc = _ascend(g, ckpt, "MODEL", ckpt, "VAE", builtin, inv, 4, 0)
    _finish(g, asc, ckpt, "VAE", 5, 0, "iqa_map_regional_map", builtin)
    return g


def flux_dev() -> Graph:
    g = Graph("Flux.1 dev: enhancement with a flow-matching model",
              "Flux.1 from its separate files (diffusion model, CLIP-L + T5-XXL, the 16-channel VAE) as in "
              "ComfyUI's own Flux example; Flux Guidance sets the distilled guidance. DDIM Invert runs EDICT on the "
              "flow ODE (exact), the ascent climbs the built-in prior. Needs a GPU; see docs/models_comfyui.md.")
    photo = _photo(g)
    unet = g.add("UNETLoader", 1, 0, unet_name="flux1-dev.safetensors", weight_dtype="default")
    clip = g.add("DualCLIPLoader", 1, 1, clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors",
                 type="flux", device="default")
    vae = g.add("VAELoader", 1, 2.5, vae_name="ae.safetensors")
    text = g.add("CLIPTextEncode", 1, 3.5, title="Prompt (empty is fine)", text="a high quality photo")
    g.link(clip, "CLIP", text, "clip")
    guide = g.add("FluxGuidance", 1, 5, guidance=3.5)
    g.link(text, "CONDITIONING", guide, "conditioning")
    enc = g.add("VAEEncode", 1, 6)
    g.link(photo, "IMAGE", enc, "pixels")
    g.link(vae, "VAE", enc, "vae")
    inv = _invert(g, unet, "MODEL", enc, positive=guide, col=2)
    prior = g.add("IQAMAP_LoadIQAPrior", 2, 3, name="builtin")
    asc = _ascend(g, unet, "MODEL", vae, "VAE", prior, inv, 3, 0)
    _finish(g, asc, vae, "VAE", 4, 0, "iqa_map_flux", prior)
    return g


def sd35() -> Graph:
    g = Graph("SD 3.5: enhancement with a flow-matching checkpoint",
              "An SD 3 / 3.5 checkpoint that carries its text encoders, through Load Checkpoint: the same DDIM "
              "Invert (EDICT on the flow ODE, exact) and MAP ascent as for SD 1.5. A checkpoint without text "
              "encoders needs Load Triple CLIP for the prompt. Needs a GPU; see docs/models_comfyui.md.")
    photo = _photo(g)
    ckpt = g.add("CheckpointLoaderSimple", 1, 0, ckpt_name="sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors")
    text = g.add("CLIPTextEncode", 1, 2, title="Prompt (empty is fine)", text="a high quality photo")
    g.link(ckpt, "CLIP", text, "clip")
    enc = g.add("VAEEncode", 1, 4)
    g.link(photo, "IMAGE", enc, "pixels")
    g.link(ckpt, "VAE", enc, "vae")
    inv = _invert(g, ckpt, "MODEL", enc, positive=text, col=2)
    prior = g.add("IQAMAP_LoadIQAPrior", 2, 3, name="builtin")
    asc = _ascend(g, ckpt, "MODEL", ckpt, "VAE", prior, inv, 3, 0)
    _finish(g, asc, ckpt, "VAE", 4, 0, "iqa_map_sd35", prior)
    return g


WORKFLOWS = {
    "iqa_map_cpu_builtin": cpu_builtin,
    "iqa_map_sd15_basic": sd15_basic,
    "iqa_map_sd15_compare_priors": sd15_compare,
    "iqa_map_sd15_fused_prior": sd15_fused,
    "iqa_map_sd15_after_upscaler": after_upscaler,
    "iqa_map_cpu_adaptive_fidelity": cpu_adaptive,
    "iqa_map_finetune_upscaler": finetune_upscaler,
    "iqa_map_sd15_regional_img2img": sd15_regional_img2img,
    "iqa_map_sd15_regional_map": sd15_regional_map,
    "iqa_map_flux1_dev": flux_dev,
    "iqa_map_sd35": sd35,
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        ui = build().ui()
        (OUT / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        print("wrote", OUT / f"{name}.json")
    print("thumbnails: screenshots of the real front end, refreshed by tools/make_thumbnails.py")


if __name__ == "__main__":
    main()
