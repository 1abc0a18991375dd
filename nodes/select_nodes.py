"""IQA-guided selection and spatial quality maps as nodes."""
from __future__ import annotations

import json

import torch

from . import memory
from .schema import Input, Node, Output, Schema
from .types import CATEGORY, IQA_PRIOR, to_bchw, to_image


class IQASelect(Node):
    SCHEMA = Schema(
        node_id="IQAMAP_IQASelect", display_name="IQA Select", category=CATEGORY,
        description=("Picks among candidate results of the same photo (seeds, upscalers, restorers) by a prior: "
                     "the best (argmax), one drawn with probability softmax(score / temperature), or the best "
                     "candidate per tile, blended across tile borders without seams. Connect batches or single "
                     "images; they must have the same size."),
        inputs=[
            Input("images", "IMAGE", "Candidates (a batch, or the first of several inputs)."),
            Input("prior", IQA_PRIOR, "The NR-IQA model that judges."),
            Input("mode", "COMBO", "argmax: the best; softmax: a seeded draw weighted by score; tiles: the best "
                  "candidate per tile, blended.", options=["argmax", "softmax", "tiles"], default="argmax"),
            Input("temperature", "FLOAT", "softmax only, in calibrated points: near 0 = argmax, large = uniform.",
                  default=5.0, min=0.01, max=1000.0, step=0.01),
            Input("seed", "INT", "softmax draw seed.", default=0, min=0, max=0xFFFFFFFFFFFFFFFF),
            Input("tile", "INT", "tiles only: tile size in pixels.", default=128, min=32, max=4096, step=8),
            Input("overlap", "INT", "tiles only: overlap over which neighbouring tiles are blended.", default=32,
                  min=0, max=2048, step=8),
            *(Input(f"images_{k}", "IMAGE", "More candidates, joined to the batch.", optional=True)
              for k in (2, 3, 4)),
        ],
        outputs=[Output("IMAGE", "image", "The selected candidate (or the tile blend)."),
                 Output("INT", "index", "Index of the selected candidate in the joined batch (-1 for tiles)."),
                 Output("STRING", "ranking", "JSON: scores, ranking, probabilities (and the tile choices).")],
        is_output_node=True,
    )

    @classmethod
    def execute(cls, images, prior, mode="argmax", temperature=5.0, seed=0, tile=128, overlap=32, images_2=None,
                images_3=None, images_4=None):
        from ..core.quality import select as S
        memory.ready(prior)
        parts = [x for x in (images, images_2, images_3, images_4) if x is not None]
        cands = [c for x in parts for c in to_bchw(x)]
        try:
            stacked = S.stack_candidates(cands)
        except ValueError as e:
            raise ValueError(f"IQA Select: {e}") from None
        with torch.inference_mode(False):
            if mode == "tiles":
                sel = S.select(prior, stacked)
                out, choice = S.select_tiles(prior, stacked, tile=tile, overlap=min(overlap, tile - 8))
                index = -1
            else:
                sel = S.select(prior, stacked, mode=mode, temperature=temperature, seed=seed)
                out, choice, index = stacked[sel.index:sel.index + 1], None, sel.index
        info = {"prior": prior.name, "mode": mode, "selected": index, "order": sel.order,
                "scores": [round(float(v), 4) for v in sel.scores],
                "probabilities": [round(float(v), 4) for v in sel.probabilities]}
        if choice is not None:
            info["tile_choice"] = choice.tolist()
        text = "\n".join(f"#{r + 1}: candidate {i} score {float(sel.scores[i]):.2f}" + (
            f" p={float(sel.probabilities[i]):.3f}" if mode == "softmax" else "") for r, i in enumerate(sel.order))
        return {"ui": {"text": [text]}, "result": (to_image(out), index, json.dumps(info))}


class IQAQualityMap(Node):
    SCHEMA = Schema(
        node_id="IQAMAP_IQAQualityMap", display_name="IQA Quality Map", category=CATEGORY,
        description=("Where is the photo damaged? Scores a prior over sliding windows and averages the overlaps "
                     "to full resolution: a MASK (1 = worst by default, ready for Latent MAP Ascent's mask or any "
                     "inpainting node) and a colour heatmap with a legend (blue = best, red = worst)."),
        inputs=[
            Input("image", "IMAGE", "The photo."),
            Input("prior", IQA_PRIOR, "The NR-IQA model mapped; PIQE separates damaged regions best in the "
                  "benchmark (README)."),
            Input("window", "INT", "Window side in pixels (priors with a larger minimum size upsample smaller "
                  "windows).", default=48, min=16, max=1024, step=8),
            Input("stride", "INT", "Step between windows; smaller is finer and slower.", default=8, min=1, max=512),
            Input("normalise", "COMBO", "minmax: stretch each map to 0..1; absolute: 1 - calibrated score / 100 "
                  "(comparable across photos).", options=["minmax", "absolute"], default="minmax"),
            Input("invert", "BOOLEAN", "Output 1 = best instead of 1 = worst.", default=False),
        ],
        outputs=[Output("MASK", "mask"), Output("IMAGE", "heatmap"), Output("STRING", "summary")],
    )

    @classmethod
    def execute(cls, image, prior, window=48, stride=8, normalise="minmax", invert=False):
        from ..core.quality.qmap import heatmap, quality_map
        memory.ready(prior)
        img = to_bchw(image)
        with torch.inference_mode(False):
            qm = quality_map(prior, img.to(prior.device), window=window, stride=stride, normalise=normalise)
            heat = heatmap(qm, img, label=prior.name)
        bad = qm.badness[:, 0]
        s = qm.scores
        flat = float(qm.flat.mean())
        summary = (f"{prior.name}: window {qm.window}, stride {qm.stride}, window scores {float(s.min()):.2f} to "
                   f"{float(s.max()):.2f}" + (f"; {flat:.0%} flat: not judged, shown at the photo's median"
                                              if flat > 0 else ""))
        return ((1 - bad if invert else bad).cpu(), to_image(heat), summary)
