"""The typed report of a MAP run, and its one builder for untiled and tiled runs.

Users read the report as JSON (``report.json``, the nodes' history output): its keys are a
published format and stay as they are.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Optional, Sequence

import torch

from ..priors.fusion import FusedPrior
from ..quality.metrics import psnr, ssim


@dataclasses.dataclass
class Report(Mapping):
    """What a run did: per-iteration history, events, scores before and after, cost.

    Read it as attributes or, as the JSON it is written as, by key (``report["history"]``);
    :meth:`to_json` gives the JSON text. ``tiles`` and ``scores_over`` are set by tiled runs
    (``best_iteration`` is then per tile, inside ``tiles``).
    """
    history: list
    events: list
    iterations_run: int
    wall_seconds: float
    peak_memory_bytes: int
    input_scores: dict
    output_scores: dict
    psnr_vs_input: float
    ssim_vs_input: float
    settings: dict = dataclasses.field(default_factory=dict)
    best_iteration: Optional[int] = None
    inversion_error: float = 0.0     # the sampler's round trip (EDICT: rounding only)
    codec_error: float = 0.0         # the VAE's own reconstruction error of the input
    denoiser_evals: int = 0
    scores_over: str = "image"       # "tiles": scores are the area-weighted mean of the tiles'
    tiles: Optional[list] = None

    def _keys(self):
        return [f.name for f in dataclasses.fields(self)
                if not (f.name in ("best_iteration", "tiles") and getattr(self, f.name) is None)]

    def __getitem__(self, key):
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._keys())

    def __len__(self):
        return len(self._keys())

    def to_dict(self) -> dict:
        return jsonable(dict(self))

    def to_json(self, indent: Optional[int] = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def jsonable(obj):
    """``obj`` with tensors as lists and non-finite floats as strings (JSON has no inf or NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if torch.is_tensor(obj):
        return obj.tolist()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def named_scores(prior, monitors: Sequence, img: torch.Tensor) -> dict:
    """Native score of the prior, of each fused member and of each monitor, for the report."""
    out = {}
    with torch.no_grad():
        for p in [prior, *(prior.priors if isinstance(prior, FusedPrior) else ()), *monitors]:
            out[p.name] = float(p.native(img).mean())
    return out


def scores(prior, monitors, img: torch.Tensor, boxes: Optional[Sequence] = None) -> dict:
    """Native scores of the image, or over ``boxes`` ``(y, x, h, w)``, the area-weighted mean of theirs."""
    if boxes is None:
        return named_scores(prior, monitors, img)
    parts = [(h * w, named_scores(prior, monitors, img[..., y:y + h, x:x + w])) for y, x, h, w in boxes]
    area = sum(a for a, _ in parts)
    return {k: sum(a * p[k] for a, p in parts) / area for k in parts[0][1]}


def build(out: torch.Tensor, inp: torch.Tensor, prior, monitors: Sequence, *, history: list, events: list,
          wall_seconds: float, peak_memory_bytes: int, settings: dict, boxes: Optional[Sequence] = None,
          **fields) -> Report:
    """The report of a run whose result is ``out`` for the input ``inp`` (both cropped to the photo): scores
    before and after (over ``boxes`` when given, see :func:`scores`), PSNR and SSIM; ``fields`` are the
    run's own (``best_iteration``, ``inversion_error``, ``tiles``, ...). ``iterations_run`` defaults to the
    history's length."""
    fields.setdefault("iterations_run", len(history))
    return Report(history=history, events=events, wall_seconds=wall_seconds, peak_memory_bytes=peak_memory_bytes,
                  settings=settings, scores_over="image" if boxes is None else "tiles",
                  input_scores=scores(prior, monitors, inp, boxes), output_scores=scores(prior, monitors, out, boxes),
                  psnr_vs_input=psnr(out, inp), ssim_vs_input=ssim(out, inp), **fields)


def merge_tiles(reports: Sequence[Report], boxes: Sequence) -> dict:
    """The fields of one report for a tiled photo: each tile's history and events tagged with its number, the
    sums and maxima of the cost, and each tile's own report (without its settings and history)."""
    tiles = [{"box": list(box), **r} for box, r in zip(boxes, reports, strict=True)]
    return dict(
        tiles=[{k: v for k, v in t.items() if k not in ("settings", "history")} for t in tiles],
        history=[{"tile": k, **e} for k, t in enumerate(tiles) for e in t["history"]],
        events=[f"tile {k}: {e}" for k, t in enumerate(tiles) for e in t["events"]],
        iterations_run=sum(t["iterations_run"] for t in tiles),
        inversion_error=max(t["inversion_error"] for t in tiles),
        codec_error=max(t["codec_error"] for t in tiles),
        denoiser_evals=sum(t["denoiser_evals"] for t in tiles),
        peak_memory_bytes=max(t["peak_memory_bytes"] for t in tiles))
