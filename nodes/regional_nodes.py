"""Quality-adaptive conditioning (AdaQual-Diff) as a node: regional prompts and a strength mask."""
from __future__ import annotations

import json

import torch

from ..core.quality import regions as R
from . import memory
from .schema import Input, Node, Output, Schema
from .settings_inputs import settings_from_inputs, settings_inputs
from .types import CATEGORY, IQA_PRIOR, to_bchw, to_image
from ..core.quality import settings as QS

# The settings on the node, generated from RegionalSettings (core/quality/settings.py), in the saved order.
_REQUIRED, _OPTIONAL = settings_inputs(QS.REGIONAL, ("tau", "c_min", "c_max", "min_area", "method", "levels"),
                                       ("window", "stride", "feather", "strength_min", "strength_max"),
                                       cls=QS.RegionalSettings)


def _encoder(clip):
    """text -> one vector (the pooled CLIP embedding, else the mean token embedding), cached."""
    cache = {}

    def encode(text: str) -> torch.Tensor:
        if text not in cache:
            cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
            cache[text] = (pooled if pooled is not None else cond.mean(dim=1)).float().flatten().cpu()
        return cache[text]

    return encode


def _conditioning(clip, text: str) -> list:
    tokens = clip.tokenize(text)
    if hasattr(clip, "encode_from_tokens_scheduled"):
        return clip.encode_from_tokens_scheduled(tokens)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def _masked(cond: list, mask: torch.Tensor) -> list:
    """ComfyUI's ConditioningSetMask convention: ``mask`` [1,H,W] (any resolution; the sampler resizes it to
    the latent), not restricted to its bounds, strength 1."""
    return [[c, {**d, "mask": mask, "set_area_to_bounds": False, "mask_strength": 1.0}] for c, d in cond]


class IQARegionalPrompt(Node):
    SCHEMA = Schema(
        node_id="IQAMAP_IQARegionalPrompt", display_name="IQA Regional Prompt", category=CATEGORY,
        description=("AdaQual-Diff's quality-adaptive conditioning: the photo's quality map (from a prior, or a "
                     "MASK from IQA Quality Map) is split into regions; each gets the global prompt plus phrases "
                     "from the high- or low-quality pool (threshold tau), more of them the worse the region "
                     "(C_min..C_max), as a masked conditioning entry beside the global one. Also a per-region "
                     "strength MASK (worse = stronger) for Differential Diffusion, a preview of the regions and "
                     "their listing."),
        inputs=[
            Input("clip", "CLIP", "The checkpoint's text encoder."),
            Input("image", "IMAGE", "The photo to restore (its size is the masks' size)."),
            Input("global_prompt", "STRING", "What the photo shows; every region's prompt starts with it.",
                  multiline=True, default="a photo"),
            Input("high_pool", "STRING", "Phrases for regions above tau, one per line, most relevant first.",
                  multiline=True, default="\n".join(R.HIGH_POOL)),
            Input("low_pool", "STRING", "Phrases for damaged regions (quality <= tau), one per line.",
                  multiline=True, default="\n".join(R.LOW_POOL)),
            *_REQUIRED,
            Input("prior", IQA_PRIOR, "Draws the quality map (calibrated 0-100); or connect quality_map.",
                  optional=True),
            Input("quality_map", "MASK", "A quality map as IQA Quality Map gives it (1 = worst); used instead of "
                  "the prior.", optional=True),
            *_OPTIONAL,
        ],
        outputs=[
            Output("CONDITIONING", "conditioning", "The global entry plus one masked entry per region (KSampler, "
                   "Differential Diffusion, DDIM Invert and Latent MAP Ascent take it as 'positive')."),
            Output("MASK", "strength", "Per-region restoration strength in [0, 1] (1 = change most), feathered: the "
                   "denoise mask for Differential Diffusion (Set Latent Noise Mask)."),
            Output("IMAGE", "regions", "The regions coloured by quality (blue = best, red = worst), numbered."),
            Output("STRING", "listing", "JSON: each region's area, quality, pool, C_p, strength and prompt."),
        ],
        is_output_node=True,
    )

    @classmethod
    def execute(cls, clip, image, global_prompt="a photo", high_pool="", low_pool="", tau=50.0, c_min=1, c_max=4,
                min_area=0.05, method="otsu", levels=3, prior=None, quality_map=None, window=64, stride=16,
                feather=8.0, strength_min=0.2, strength_max=1.0):
        st = settings_from_inputs(QS.REGIONAL, dict(
            tau=tau, c_min=c_min, c_max=c_max, min_area=min_area, method=method, levels=levels, window=window,
            stride=stride, feather=feather, strength_min=strength_min, strength_max=strength_max),
            cls=QS.RegionalSettings, prefix="IQA Regional Prompt: ")
        img = to_bchw(image[:1])
        h, w = img.shape[-2:]
        highs, lows = R.parse_pool(high_pool), R.parse_pool(low_pool)
        if not highs or not lows:
            raise ValueError("IQA Regional Prompt: the high_pool and low_pool need at least one phrase each "
                             "(one per line)")
        with torch.inference_mode(False):
            quality, source = cls._quality(img, prior, quality_map, st.window, st.stride)
            try:
                part = R.plan(quality, global_prompt, highs, lows, tau=st.tau, c_min=st.c_min, c_max=st.c_max,
                              min_area=st.min_area, method=st.method, levels=st.levels,
                              strength_min=st.strength_min, strength_max=st.strength_max,
                              encoder=_encoder(clip) if global_prompt.strip() else None)
            except ValueError as e:
                raise ValueError(f"IQA Regional Prompt: {e}") from None
            strength = R.strength_map(part, feather=st.feather)[None]
            preview = R.preview(part, img)
        cond = list(_conditioning(clip, global_prompt))
        for r in part.regions:
            cond += _masked(_conditioning(clip, r.prompt(global_prompt)), r.mask.float()[None])
        listing = R.describe(part, global_prompt)
        text = f"{len(part.regions)} region(s) from {source}:\n" + "\n".join(
            f"#{d['region']}: {d['area']:.0%} of the image, quality {d['quality']:.1f} ({d['pool']}), "
            f"strength {d['strength']:.2f}: {d['prompt']}" for d in listing)
        return {"ui": {"text": [text]},
                "result": (cond, strength.cpu(), to_image(preview), json.dumps(listing, indent=1))}

    @staticmethod
    def _quality(img, prior, quality_map, window, stride):
        """(quality [H,W] on 0-100, where it came from)."""
        import torch.nn.functional as F

        h, w = img.shape[-2:]
        if quality_map is not None:
            m = quality_map.float()
            m = m.reshape(-1, *m.shape[-2:])[:1]
            if tuple(m.shape[-2:]) != (h, w):
                raise ValueError(f"IQA Regional Prompt: the quality_map is {m.shape[-1]}x{m.shape[-2]} but the "
                                 f"image {w}x{h}; give the map of this image (IQA Quality Map on the same image)")
            return 100.0 * (1.0 - m[0].clamp(0, 1)), "the quality_map input"
        if prior is None:
            raise ValueError("IQA Regional Prompt: connect a prior (Load IQA Prior) or a quality_map (IQA Quality Map)")
        from ..core.quality.qmap import quality_map as qmap
        memory.ready(prior)
        qm = qmap(prior, img.to(prior.device), window=window, stride=stride)
        from ..core.priors.base import is_calibrated
        calibrated = is_calibrated(prior)
        q = qm.scores[0, 0] if calibrated else 100.0 * (1.0 - qm.badness[0, 0])
        if q.shape != (h, w):
            q = F.interpolate(q[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        return q.cpu(), f"{prior.name}'s map" + ("" if calibrated else " (uncalibrated: stretched to 0-100)")
