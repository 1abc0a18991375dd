"""The MAP enhancement API in one import: settings, inversion, the ascent entry points, the report, metrics.

Each lives in its own module (``settings``, ``inversion``, ``ascent``, ``loop``,
``metrics``); this module only gathers them, so ``from iqa_map.core import map``
gives the whole method.
"""
from .ascent import MapResult, adaptive_weight, ascend, ascend_inversion, ascend_pixels, check_image, vp_scale
from ..sampling.inversion import INVERSION_METHODS, CountingDenoiser, Inversion, invert
from ..runtime import Interrupted
from .loop import Report, jsonable, named_scores, optimise
from ..quality.metrics import psnr, ssim
from ..priors.base import comparable_score
from .settings import HACK_REFERENCES, LATENT_UNITS, PRESETS, MapSettings, TileSettings, preset, resolve_lr

__all__ = ["HACK_REFERENCES", "INVERSION_METHODS", "LATENT_UNITS", "PRESETS", "CountingDenoiser", "Interrupted",
           "Inversion", "MapResult", "MapSettings", "Report", "TileSettings", "adaptive_weight", "ascend",
           "ascend_inversion", "ascend_pixels", "check_image", "comparable_score", "invert", "jsonable",
           "named_scores", "optimise", "preset", "psnr", "resolve_lr", "ssim", "vp_scale"]
