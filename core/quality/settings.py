"""Settings of selection, quality maps and regional prompts as data (the :mod:`~iqa_map.core.options` metadata):
``iqa-map rank`` / ``qmap`` and the IQA Select, IQA Quality Map and IQA Regional Prompt nodes are generated from it.

Node input names predate these records and stay (saved workflows store widget values by position and name).
"""
from __future__ import annotations

import dataclasses

from ..options import check, option, record

SELECT_MODES = ("argmax", "softmax", "tiles")
NORMALISE = ("minmax", "absolute")  # how a quality map is scaled to 0..1
METHODS = ("otsu", "quantiles")  # how a quality map is cut into regions
SELECT, QMAP, REGIONAL = "IQAMAP_IQASelect", "IQAMAP_IQAQualityMap", "IQAMAP_IQARegionalPrompt"
GROUPS = {"select": "Selection", "qmap": "Quality map", "regions": "Regions", "strength": "Restoration strength"}


@record("rank")
@dataclasses.dataclass
class SelectSettings:
    mode: str = option("argmax", "argmax: the best; softmax: a seeded draw weighted by score; tiles: the best "
                       "candidate per tile, blended", "select", choices=SELECT_MODES, node=(SELECT, "mode"))
    temperature: float = option(5.0, "softmax only, in calibrated points: near 0 = argmax, large = uniform",
                                "select", range=(0.01, 1000.0), step=0.01, node=(SELECT, "temperature"))
    seed: int = option(0, "softmax draw seed", "select", range=(0, 0xFFFFFFFFFFFFFFFF), node=(SELECT, "seed"))
    tile: int = option(128, "tiles only: tile size in pixels", "select", range=(32, 4096), step=8,
                       metavar="PIXELS", node=(SELECT, "tile"))
    overlap: int = option(32, "tiles only: overlap over which neighbouring tiles are blended", "select",
                          range=(0, 2048), step=8, metavar="PIXELS", node=(SELECT, "overlap"))

    def validate(self) -> None:
        check(self)


@record("qmap")
@dataclasses.dataclass
class QualityMapSettings:
    window: int = option(48, "window side in pixels (priors with a larger minimum size upsample smaller windows)",
                         "qmap", range=(16, 1024), step=8, metavar="PIXELS", node=(QMAP, "window"))
    stride: int = option(8, "step between windows; smaller is finer and slower", "qmap", range=(1, 512),
                         metavar="PIXELS", node=(QMAP, "stride"))
    normalise: str = option("minmax", "minmax: stretch each map to 0..1; absolute: 1 - calibrated score / 100 "
                            "(comparable across photos)", "qmap", choices=NORMALISE, node=(QMAP, "normalise"))
    invert: bool = option(False, "the mask is 1 (white) = best instead of 1 = worst", "qmap", node=(QMAP, "invert"))

    def validate(self) -> None:
        check(self)


_NO_CLI = "regional prompts need ComfyUI's text encoder (the node's CLIP input); the command line has no such step"


@record()
@dataclasses.dataclass
class RegionalSettings:
    tau: float = option(50.0, "quality (0-100) above which a region takes the high-quality pool (AdaQual's 3.0 of "
                        "1..5)", "regions", range=(0.0, 100.0), step=0.5, cli=None, why=_NO_CLI,
                        node=(REGIONAL, "tau"))
    c_min: int = option(1, "phrases for a region of quality 100", "regions", range=(0, 32), cli=None, why=_NO_CLI,
                        node=(REGIONAL, "c_min"))
    c_max: int = option(4, "phrases for a region of quality 0", "regions", range=(0, 32), cli=None, why=_NO_CLI,
                        node=(REGIONAL, "c_max"))
    min_area: float = option(0.05, "smallest region as a fraction of the image; smaller pieces join a neighbour",
                             "regions", range=(0.0, 0.9), step=0.01, cli=None, why=_NO_CLI,
                             node=(REGIONAL, "min_area"))
    method: str = option("otsu", "otsu: good against damaged; quantiles: 'levels' quality bands of equal area",
                         "regions", choices=METHODS, cli=None, why=_NO_CLI, node=(REGIONAL, "method"))
    levels: int = option(3, "quantiles only: bands", "regions", range=(2, 8), cli=None, why=_NO_CLI,
                         node=(REGIONAL, "levels"))
    window: int = option(64, "prior only: window of the map", "regions", range=(16, 1024), step=8, cli=None,
                         why=_NO_CLI, node=(REGIONAL, "window"))
    stride: int = option(16, "prior only: step between windows", "regions", range=(1, 512), cli=None, why=_NO_CLI,
                         node=(REGIONAL, "stride"))
    feather: float = option(8.0, "blur of the strength mask across region borders, pixels", "strength",
                            range=(0.0, 256.0), step=0.5, cli=None, why=_NO_CLI, node=(REGIONAL, "feather"))
    strength_min: float = option(0.2, "strength at quality 100", "strength", range=(0.0, 1.0), step=0.01, cli=None,
                                 why=_NO_CLI, node=(REGIONAL, "strength_min"))
    strength_max: float = option(1.0, "strength at quality 0", "strength", range=(0.0, 1.0), step=0.01, cli=None,
                                 why=_NO_CLI, node=(REGIONAL, "strength_max"))

    def validate(self) -> None:
        check(self)
        if self.c_min > self.c_max:
            from ..options import SettingsError
            raise SettingsError("c_min", f"c_min ({self.c_min}) must not exceed c_max ({self.c_max})")
