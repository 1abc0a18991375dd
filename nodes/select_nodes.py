"""IQA-guided selection and spatial quality maps as nodes."""
from __future__ import annotations

import json

import torch

from .types import CATEGORY, IQA_PRIOR


def _bchw(image: torch.Tensor) -> torch.Tensor:
    return image[..., :3].movedim(-1, 1).float()


class IQASelect:
    DESCRIPTION = ("Picks among candidate results of the same photo (seeds, upscalers, restorers) by a prior: the "
                   "best (argmax), one drawn with probability softmax(score / temperature), or the best candidate "
                   "per tile, blended across tile borders without seams. Connect batches or single images; they "
                   "must have the same size.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "INT", "STRING")
    RETURN_NAMES = ("image", "index", "ranking")
    OUTPUT_TOOLTIPS = ("The selected candidate (or the tile blend).",
                       "Index of the selected candidate in the joined batch (-1 for tiles).",
                       "JSON: scores, ranking, probabilities (and the tile choices).")
    FUNCTION = "select"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        img = lambda t: ("IMAGE", {"tooltip": t})  # noqa: E731
        return {
            "required": {
                "images": img("Candidates (a batch, or the first of several inputs)."),
                "prior": (IQA_PRIOR, {"tooltip": "The NR-IQA model that judges."}),
                "mode": (["argmax", "softmax", "tiles"], {"default": "argmax", "tooltip": "argmax: the best; "
                         "softmax: a seeded draw weighted by score; tiles: the best candidate per tile, blended."}),
                "temperature": ("FLOAT", {"default": 5.0, "min": 0.01, "max": 1000.0, "step": 0.01, "tooltip":
                                "softmax only, in calibrated points: near 0 = argmax, large = uniform."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "softmax draw seed."}),
                "tile": ("INT", {"default": 128, "min": 32, "max": 4096, "step": 8, "tooltip": "tiles only: tile "
                         "size in pixels."}),
                "overlap": ("INT", {"default": 32, "min": 0, "max": 2048, "step": 8, "tooltip": "tiles only: "
                            "overlap over which neighbouring tiles are blended."}),
            },
            "optional": {f"images_{k}": img("More candidates, joined to the batch.") for k in (2, 3, 4)},
        }

    def select(self, images, prior, mode="argmax", temperature=5.0, seed=0, tile=128, overlap=32, images_2=None,
               images_3=None, images_4=None):
        from ..core import select as S
        parts = [x for x in (images, images_2, images_3, images_4) if x is not None]
        cands = [c for x in parts for c in _bchw(x)]
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
        return {"ui": {"text": [text]}, "result": (out.movedim(1, -1).cpu(), index, json.dumps(info))}


class IQAQualityMap:
    DESCRIPTION = ("Where is the photo damaged? Scores a prior over sliding windows and averages the overlaps to "
                   "full resolution: a MASK (1 = worst by default, ready for Latent MAP Ascent's mask or any "
                   "inpainting node) and a colour heatmap with a legend (blue = best, red = worst).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("mask", "heatmap", "summary")
    FUNCTION = "map"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The photo."}),
            "prior": (IQA_PRIOR, {"tooltip": "The NR-IQA model mapped; PIQE separates damaged regions best in "
                      "the benchmark (README)."}),
            "window": ("INT", {"default": 48, "min": 16, "max": 1024, "step": 8, "tooltip": "Window side in "
                       "pixels (priors with a larger minimum size upsample smaller windows)."}),
            "stride": ("INT", {"default": 8, "min": 1, "max": 512, "tooltip": "Step between windows; smaller is "
                       "finer and slower."}),
            "normalise": (["minmax", "absolute"], {"default": "minmax", "tooltip": "minmax: stretch each map to "
                          "0..1; absolute: 1 - calibrated score / 100 (comparable across photos)."}),
            "invert": ("BOOLEAN", {"default": False, "tooltip": "Output 1 = best instead of 1 = worst."}),
        }}

    def map(self, image, prior, window=48, stride=8, normalise="minmax", invert=False):
        from ..core.qmap import heatmap, quality_map
        img = _bchw(image)
        with torch.inference_mode(False):
            qm = quality_map(prior, img.to(prior.device), window=window, stride=stride, normalise=normalise)
            heat = heatmap(qm, img, label=prior.name)
        bad = qm.badness[:, 0]
        s = qm.scores
        flat = float(qm.flat.mean())
        summary = (f"{prior.name}: window {qm.window}, stride {qm.stride}, window scores {float(s.min()):.2f} to "
                   f"{float(s.max()):.2f}" + (f"; {flat:.0%} flat: not judged, shown at the photo's median"
                                              if flat > 0 else ""))
        return ((1 - bad if invert else bad).cpu(), heat.movedim(1, -1).cpu(), summary)
