"""Spatial quality maps: any prior scored over sliding windows, overlap-averaged to full resolution.

The map tells where a photo is damaged (as in AdaQual-Diff: Su, Wu, Zhang, Lyu, Zheng, 2025):
used as a MASK in ComfyUI, as a heatmap, and as the per-pixel fidelity weight of
quality-adaptive MAP (good regions held close to the input, bad ones free).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..autograd import usable
from ..runtime import halving_retry
from ..tiles import starts
from ..priors.base import comparable_score, is_calibrated, textureless
from .settings import NORMALISE, QualityMapSettings as _Defaults  # the defaults are the record's



WEIGHT_NORMALISATIONS = ("worst", "damaged", "mean")


@dataclass
class QualityMap:
    badness: torch.Tensor   # [B,1,H,W] in [0, 1], 1 = worst
    scores: torch.Tensor    # [B,1,H,W] overlap-averaged comparable window scores (higher = better)
    window: int
    stride: int
    #: [B,1,H,W] fraction of the windows covering each pixel that had no texture (not judged), or None
    flat: torch.Tensor | None = None

    def mask(self, invert: bool = False) -> torch.Tensor:
        """[B,1,H,W]: 1 = worst (``invert``: 1 = best)."""
        return 1 - self.badness if invert else self.badness

    def summary(self, name: str) -> str:
        """One line on the map of prior ``name``: window, stride, the window scores' range, the share not judged."""
        s, flat = self.scores, float(self.flat.mean()) if self.flat is not None else 0.0
        return (f"{name}: window {self.window}, stride {self.stride}, window scores {float(s.min()):.2f} to "
                f"{float(s.max()):.2f}" + (f"; {flat:.0%} flat: not judged, shown at the photo's median"
                                           if flat > 0 else ""))

    def weight_map(self, floor: float = 0.1, normalise: str = "worst") -> torch.Tensor:
        """Per-pixel fidelity weight for quality-adaptive MAP: the worst region gets ``floor`` times the best.

        ``normalise="mean"``: mean weight 1 per image, the same total fidelity budget as a
        uniform weight, moved from where the photo is damaged to where it is fine.
        ``normalise="worst"``: the worst region keeps the uniform weight 1 and better
        regions are held up to ``1 / floor`` times tighter, so the prior works where the
        quality is low and good regions stay as they are (AdaQual-Diff's "keep the good
        regions"); the prior gains less than under "mean".
        ``normalise="damaged"``: like "worst", but every pixel the map classes as damaged
        (badness at or above the map's Otsu threshold) keeps the uniform weight, not only
        the single worst window; under "worst" most of a damaged region sits a little
        below the maximum badness and is held up to a few times tighter than uniform,
        which holds back the very changes the map asked for. Good pixels are held
        tighter in proportion to how far below the threshold they are, up to ``1 / floor``.
        """
        if normalise not in WEIGHT_NORMALISATIONS:
            raise ValueError(f"unknown normalise '{normalise}'; choose from {', '.join(WEIGHT_NORMALISATIONS)}")
        if normalise in ("worst", "damaged") and floor <= 0:
            raise ValueError(f"normalise='{normalise}' needs floor > 0 (the best region is held 1/floor times tighter)")
        if normalise == "damaged":
            t = otsu_threshold(self.badness)
            good = ((t - self.badness) / t.clamp_min(1e-6)).clamp(0, 1)  # 0 on the damaged class, 1 at badness 0
            return 1.0 + (1.0 / floor - 1.0) * good
        w = floor + (1.0 - floor) * (1.0 - self.badness)
        if normalise == "worst":
            return w / w.amin(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
        return w / w.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)


def loss_weight(q: torch.Tensor, q_min: torch.Tensor | float | None = None,
                q_max: torch.Tensor | float | None = None) -> torch.Tensor:
    """AdaQual-Diff's quality-weighted loss weight ``w(q) = (q_max - q) / (q_max - q_min)``: 1 in the worst
    region, 0 in the best; ``q`` [B,1,H,W] (higher = better), ``q_min``/``q_max`` per image by default. A
    constant map (nothing to tell apart) weighs every pixel 1."""
    lo = q.amin(dim=(1, 2, 3), keepdim=True) if q_min is None else torch.as_tensor(q_min, dtype=q.dtype)
    hi = q.amax(dim=(1, 2, 3), keepdim=True) if q_max is None else torch.as_tensor(q_max, dtype=q.dtype)
    span = hi - lo
    w = ((hi - q) / span.clamp_min(1e-12)).clamp(0, 1)
    return torch.where(span > 1e-12, w, torch.ones_like(w))


def otsu_threshold(x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's threshold of each image of ``x`` ([B,1,H,W] in [0, 1]): the split of the values into two
    classes with the largest between-class variance. Returns [B,1,1,1]; 0 for a constant map."""
    out = []
    for v in x.flatten(1).float():
        hist = torch.histc(v.clamp(0, 1), bins=bins, min=0.0, max=1.0)
        p = hist / hist.sum().clamp_min(1)
        centres = (torch.arange(bins, dtype=p.dtype) + 0.5) / bins
        w0 = p.cumsum(0)                      # weight of the class at or below each bin
        m0 = (p * centres).cumsum(0)          # its first moment
        between = (m0[-1] * w0 - m0) ** 2 / (w0 * (1 - w0)).clamp_min(1e-12)
        between[(w0 <= 0) | (w0 >= 1 - 1e-9)] = -1  # a split must leave both classes non-empty
        best = between.max()
        if best <= 0:
            out.append(0.0)
            continue
        ties = (between >= best * (1 - 1e-6)).nonzero().flatten()  # an empty gap between the classes: its middle
        out.append(float((ties[0] + ties[-1] + 2) / (2 * bins)))  # upper edge of the lower class
    return torch.tensor(out, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)


@torch.no_grad()
def quality_map(prior, image: torch.Tensor, window: int = _Defaults.window, stride: int = _Defaults.stride,
                normalise: str = _Defaults.normalise, batch: int = 64) -> QualityMap:
    """Score ``prior`` on every ``window`` x ``window`` crop (step ``stride``) of ``image`` ([B,3,H,W] in
    [0,1]), in batches, and average each pixel over the windows that cover it.

    ``normalise="minmax"`` stretches each image's map to [0, 1] (1 = its worst region);
    ``"absolute"`` maps calibrated scores as ``1 - score / 100`` (comparable across photos;
    needs a calibrated prior).

    A window without texture (luma range under one grey level: a clear 8-bit sky, a backdrop,
    a letterbox bar; :func:`~.priors.base.textureless`) is not judged: it takes the median score
    of the image's textured windows, so flat regions read as typical for the photo, neither its
    worst nor its best, whatever a prior makes of a flat input. ``flat`` records where.

    An out-of-memory error halves ``batch`` and scores the image again (:func:`..runtime.halving_retry`).
    """
    if normalise not in NORMALISE:
        raise ValueError(f"normalise must be one of {NORMALISE}, got {normalise!r}")
    if window < 8 or stride < 1:
        raise ValueError(f"window must be >= 8 and stride >= 1; got window {window}, stride {stride}")
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected an RGB batch [B,3,H,W]; got {tuple(image.shape)}")
    img = usable(image).float()
    b, _, h, w = img.shape
    win_h, win_w = min(window, h), min(window, w)
    ys, xs = starts(h, win_h, stride), starts(w, win_w, stride)
    # All windows at once with unfold would hold B*T*3*win^2 floats; crops by index batch it instead.
    coords = [(y, x) for y in ys for x in xs]
    out_sum = torch.zeros(b, 1, h, w, dtype=torch.float64)
    flat_sum = torch.zeros(b, 1, h, w, dtype=torch.float64)
    count = torch.zeros(1, 1, h, w, dtype=torch.float64)
    for k in range(b):
        def score(n, k=k):  # all windows of image k, n crops per call
            nonlocal batch
            batch = n  # an OOM-reduced batch stays reduced for the next images
            vals, flat = [], []
            for i in range(0, len(coords), n):
                crops = torch.stack([img[k, :, y:y + win_h, x:x + win_w] for y, x in coords[i:i + n]])
                vals.append(comparable_score(prior, crops).double().cpu())
                flat.append(textureless(crops).cpu())
            return torch.cat(vals), torch.cat(flat)
        # Out of memory: half the crops per call (the window itself is the map's scale and stays).
        vals, flat = halving_retry(score, batch, min_tile=1, what="the quality map", unit=" crops per batch",
                                   advice="free GPU memory (close other models), use a smaller window, or run the "
                                          "prior on the CPU")
        if flat.any() and not flat.all():
            vals[flat] = vals[~flat].median()
        for (y, x), v, f in zip(coords, vals, flat):
            out_sum[k, :, y:y + win_h, x:x + win_w] += v
            flat_sum[k, :, y:y + win_h, x:x + win_w] += float(f)
            if k == 0:
                count[..., y:y + win_h, x:x + win_w] += 1
    scores = out_sum / count
    if normalise == "absolute":
        if not is_calibrated(prior):
            raise ValueError(f"normalise='absolute' needs a calibrated prior; '{prior.name}' has no calibration "
                             "(use 'minmax')")
        bad = (1 - scores / 100).clamp(0, 1)
    else:
        lo = scores.amin(dim=(1, 2, 3), keepdim=True)
        hi = scores.amax(dim=(1, 2, 3), keepdim=True)
        bad = ((hi - scores) / (hi - lo).clamp_min(1e-9))
    return QualityMap(bad.float(), scores.float(), win_h, stride, (flat_sum / count).float())


def resize_like(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return m if m.shape[-2:] == (h, w) else F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
