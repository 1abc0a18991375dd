"""IQA-guided selection and spatial quality maps as nodes."""
from __future__ import annotations

import json

import torch

from . import memory
from .schema import Input, Node, Output, Schema
from .settings_inputs import settings_from_inputs, settings_inputs
from .types import CATEGORY, IQA_PRIOR, to_bchw, to_image
from ..core.quality import settings as QS

# The settings on the nodes, generated from their records (core/quality/settings.py), in the saved order.
_SELECT = settings_inputs(QS.SELECT, ("mode", "temperature", "seed", "tile", "overlap"), cls=QS.SelectSettings)[0]
_QMAP = settings_inputs(QS.QMAP, ("window", "stride", "normalise", "invert"), cls=QS.QualityMapSettings)[0]


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
            *_SELECT,
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
        from ..core.quality.select import choose, stack_candidates
        settings = settings_from_inputs(QS.SELECT, dict(mode=mode, temperature=temperature, seed=seed, tile=tile,
                                                        overlap=overlap), cls=QS.SelectSettings)
        memory.ready(prior)
        parts = [x for x in (images, images_2, images_3, images_4) if x is not None]
        try:
            stacked = stack_candidates([c for x in parts for c in to_bchw(x)])
        except ValueError as e:
            raise ValueError(f"IQA Select: {e}") from None
        with torch.inference_mode(False):
            c = choose(prior, stacked, settings)
        sel = c.selection
        info = {"prior": prior.name, "mode": mode, "selected": c.index, "order": sel.order,
                "scores": [round(float(v), 4) for v in sel.scores],
                "probabilities": [round(float(v), 4) for v in sel.probabilities]}
        if c.tile_choice is not None:
            info["tile_choice"] = c.tile_choice.tolist()
        text = "\n".join(f"#{r['rank']}: candidate {r['candidate']} score {r['score']:.2f}"
                         + (f" p={r['probability']:.3f}" if mode == "softmax" else "") for r in c.ranking())
        return {"ui": {"text": [text]}, "result": (to_image(c.image), c.index, json.dumps(info))}


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
            *_QMAP,
        ],
        outputs=[Output("MASK", "mask"), Output("IMAGE", "heatmap"), Output("STRING", "summary")],
    )

    @classmethod
    def execute(cls, image, prior, window=48, stride=8, normalise="minmax", invert=False):
        from ..core.io.drawing import heatmap
        from ..core.quality.qmap import quality_map
        s = settings_from_inputs(QS.QMAP, dict(window=window, stride=stride, normalise=normalise, invert=invert),
                                 cls=QS.QualityMapSettings)
        memory.ready(prior)
        img = to_bchw(image)
        with torch.inference_mode(False):
            qm = quality_map(prior, img.to(prior.device), window=s.window, stride=s.stride, normalise=s.normalise)
            heat = heatmap(qm, img, label=prior.name)
        return (qm.mask(s.invert)[:, 0].cpu(), to_image(heat), qm.summary(prior.name))
