"""The MAP enhancement API in one import: settings, inversion, the ascent entry points, the report, metrics.

Each lives in its own module (``settings``, ``sampling.inversion``, ``objective``, ``ascent``, ``loop``,
``report``, ``quality.metrics``); this module only gathers them, so ``from iqa_map.core import map``
gives the whole method.
"""
from .ascent import (MapResult, adaptive_weight, ascend, ascend_inversion, ascend_pixels, check_image,
                     resolve_adaptive_prior, vp_scale)
from ..sampling.inversion import INVERSION_METHODS, CountingDenoiser, Inversion, invert
from ..runtime import Interrupted
from .loop import Evaluation, LoopResult, Step, optimise
from .report import Report, jsonable, named_scores
from ..quality.metrics import psnr, ssim
from ..priors.base import comparable_score
from .settings import HACK_REFERENCES, LATENT_UNITS, PRESETS, MapSettings, TileSettings, preset, resolve_lr

__all__ = ["HACK_REFERENCES", "INVERSION_METHODS", "LATENT_UNITS", "PRESETS", "CountingDenoiser", "Evaluation",
           "Interrupted", "Inversion", "LoopResult", "MapResult", "MapSettings", "Report", "Step", "TileSettings",
           "adaptive_weight", "ascend", "ascend_inversion", "ascend_pixels", "check_image", "comparable_score",
           "invert", "jsonable", "named_scores", "optimise", "preset", "psnr", "resolve_adaptive_prior",
           "resolve_lr", "ssim", "vp_scale"]
