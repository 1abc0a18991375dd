"""Calibration constants: shipped defaults, user-fitted JSON files, and the fitting itself.

Scores of different NR-IQA models live on unrelated scales (NIQE ~3-20 lower
better, MUSIQ 0-100, LIQE 1-5). Before they can be fused or thresholded (e.g.
"stop at 90") they are mapped to [0, 100] with a logistic
(:class:`~.base.Calibration`). Constants are looked up, in order, in a user
JSON file, ``<weights folder>/iqa_map_calibration.json`` and the shipped
``data/calibration.json`` (public constants + our fits for the built-ins).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ..io.imageio import IMAGE_SUFFIXES
from .base import Calibration, Prior

DEFAULTS_FILE = Path(__file__).with_name("data") / "calibration.json"
USER_FILE_NAME = "iqa_map_calibration.json"
#: Fitting maps these quantiles of the observed native scores to calibrated 25 and 75.
FIT_QUANTILES = (0.25, 0.75)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        raise ValueError(f"calibration file {path} is not valid JSON ({e}); fix or delete it") from e


def lookup(name: str, weights_dir: Path | None = None, path: str | os.PathLike | None = None) -> Calibration | None:
    """Calibration constants for a prior name, or None when none are known."""
    sources = [Path(path)] if path is not None else []
    if weights_dir is not None:
        sources.append(Path(weights_dir) / USER_FILE_NAME)
    sources.append(DEFAULTS_FILE)
    for src in sources:
        entry = _read(src).get(name)
        if entry is not None:
            return Calibration(float(entry["C"]), float(entry["S"]))
    return None


def fit_constants(native_scores: Sequence[float] | torch.Tensor,
                  quantiles: tuple[float, float] = FIT_QUANTILES) -> Calibration:
    """Fit (C, S) so the given quantiles of the observed scores map to 25 and 75.

    Without human opinion scores the best a folder of images can tell us is the
    spread of the metric on that kind of content: C is the centre of the chosen
    quantiles and S their half-distance divided by ln 3 (logistic(ln 3) = 0.75),
    so the better quantile maps to 75 and the worse one to 25 whichever the
    metric's direction. Use a folder that mixes good and degraded images.
    """
    s = np.asarray(torch.as_tensor(native_scores, dtype=torch.float64).flatten())
    s = s[np.isfinite(s)]
    if s.size < 4:
        raise ValueError(f"need at least 4 finite scores to fit a calibration, got {s.size}")
    lo, hi = np.quantile(s, quantiles)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        raise ValueError("the scores hardly vary across these images: use a folder with varied quality")
    return Calibration(C=float((lo + hi) / 2), S=float((hi - lo) / (2 * math.log(3))))


def save(name: str, calibration: Calibration, path: str | os.PathLike, **info) -> Path:
    """Merge one entry into a calibration JSON file (created if absent)."""
    path = Path(path)
    data = _read(path)
    data[name] = {"C": calibration.C, "S": calibration.S, **info}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """RGB image file -> float tensor [1,3,H,W] in [0,1]: the project's one reader (:func:`..imageio.load_image`,
    EXIF orientation and colour profiles applied), without a minimum size."""
    from ..io.imageio import load_image
    return load_image(path, min_side=1)


def fit_calibration(prior: Prior, images: str | os.PathLike | Iterable[torch.Tensor],
                    save_to: str | os.PathLike | None = None, name: str | None = None,
                    quantiles: tuple[float, float] = FIT_QUANTILES) -> Calibration:
    """Fit a prior's (C, S) on a folder of images (or an iterable of [1,3,H,W] tensors).

    The constants are attached to ``prior`` and, when ``save_to`` is given (a
    JSON file, or a folder which then gets ``iqa_map_calibration.json``), saved
    under the prior's name so that later ``load(..., weights_dir=...)`` calls
    reuse them.
    """
    if isinstance(images, (str, os.PathLike)):
        files = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {images}")
        images = (read_image(f) for f in files)
    with torch.no_grad():
        scores = [float(prior.native(img.to(prior.device))[0]) for img in images]
    cal = fit_constants(scores, quantiles)
    prior.calibration = cal
    if save_to is not None:
        target = Path(save_to)
        if target.is_dir() or not target.suffix:
            target = target / USER_FILE_NAME
        save(name or prior.name, cal, target, lower_better=prior.lower_better, n_images=len(scores))
    return cal
