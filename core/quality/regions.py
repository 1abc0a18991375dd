"""Quality-adaptive conditioning (AdaQual-Diff): regions of a quality map, a prompt per region, a strength map.

AdaQual-Diff's Algorithm 1 (Su, Wu, Zhang, Lyu, Zheng, 2025: region-aware prompt selection), on this
project's quality maps:

1. **Partition** the map (quality 0-100, higher = better): smooth it, split its values
   into classes (Otsu's two, or ``levels`` quantile classes), take connected components,
   and merge every component under ``min_area`` into the neighbour it shares the longest
   border with. A constant map is one region.
2. Per region, its mean quality ``q_r`` gives the **prompt complexity**
   ``C_p = C_min + (C_max - C_min) * (1 - (q_r - q_min) / (q_max - q_min))`` (``q_min``, ``q_max``
   the scale's ends, 0 and 100, so a region's prompt length does not depend on the others)
   and the **pool**: ``high`` when ``q_r > tau``, else ``low``.
3. The **top C_p phrases** of the pool: ranked by the similarity of their text embedding to
   the global prompt's when an encoder is given (AdaQual ranks by similarity to the region),
   else in the pool's order.

The regional prompt is the global prompt followed by the region's phrases. The
restoration **strength** of a region rises as its quality falls (for Differential
Diffusion's mask: 1 = change fully, 0 = keep).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .settings import METHODS

#: Default phrase pools (one phrase per line in the node), for typical photo damage.
HIGH_POOL = ("sharp details", "natural colours", "clean textures", "fine detail", "high quality photo",
             "crisp edges")
LOW_POOL = ("remove blur, sharp focus", "remove noise, clean", "remove JPEG compression artefacts",
            "brighten low light, clear shadows", "remove haze, clear contrast", "restore fine texture",
            "sharp edges", "natural skin and surfaces")


@dataclass
class Region:
    index: int
    mask: torch.Tensor          # [H,W] bool
    area: float                 # fraction of the image
    quality: float              # mean quality inside, 0-100
    pool: str = ""              # "high" | "low"
    complexity: int = 0         # C_p
    phrases: list = field(default_factory=list)
    strength: float = 0.0

    def prompt(self, global_prompt: str) -> str:
        return ", ".join([p for p in [global_prompt.strip(), *self.phrases] if p])


@dataclass
class Partition:
    labels: torch.Tensor        # [H,W] long, region index per pixel
    regions: list


def _smooth(q: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return q
    r = max(1, int(3 * sigma + 0.5))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=q.dtype) ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    x = F.pad(q[None, None], (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))[0, 0]


def _classes(q: torch.Tensor, method: str, levels: int) -> torch.Tensor:
    from .qmap import otsu_threshold

    lo, hi = float(q.min()), float(q.max())
    if method == "otsu":
        t = float(otsu_threshold(((q - lo) / (hi - lo))[None, None]).reshape(())) * (hi - lo) + lo
        return (q > t).long()
    edges = torch.quantile(q.flatten().double(), torch.linspace(0, 1, levels + 1, dtype=torch.float64)[1:-1])
    return torch.bucketize(q.double(), edges.to(q.device), right=True).long()


def _merge_small(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """Merge components under ``min_pixels`` into the neighbour with the longest shared border, smallest first."""
    from scipy import ndimage

    while True:
        ids, areas = np.unique(labels, return_counts=True)
        if len(ids) < 2:
            return labels
        small = [(a, i) for i, a in zip(ids, areas) if a < min_pixels]
        if not small:
            return labels
        _, i = min(small)
        m = labels == i
        ring = ndimage.binary_dilation(m, structure=np.ones((3, 3), bool)) & ~m
        nb, counts = np.unique(labels[ring], return_counts=True)
        if len(nb) == 0:
            return labels
        labels[m] = nb[np.argmax(counts)]


def partition(quality: torch.Tensor, method: str = "otsu", levels: int = 2, min_area: float = 0.05,
              smooth: float = 2.0) -> Partition:
    """Regions of a quality map ``quality`` ([H,W], [1,H,W] or [1,1,H,W], higher = better): see the module
    docstring. ``min_area`` is a fraction of the image (components below it are merged into a neighbour)."""
    from scipy import ndimage

    if method not in METHODS:
        raise ValueError(f"unknown partition method {method!r}; choose from {', '.join(METHODS)}")
    if method == "quantiles" and levels < 2:
        raise ValueError(f"levels must be at least 2; got {levels}")
    if not 0 <= min_area < 1:
        raise ValueError(f"min_area is a fraction of the image in [0, 1); got {min_area}")
    q = quality.detach().float().cpu().reshape(quality.shape[-2:])
    h, w = q.shape
    qs = _smooth(q, smooth)
    if float(qs.max() - qs.min()) < 1e-6:
        labels = np.zeros((h, w), np.int64)
    else:
        cls = _classes(qs, method, levels).numpy()
        labels = np.zeros((h, w), np.int64)
        n = 0
        for c in np.unique(cls):
            comp, k = ndimage.label(cls == c, structure=np.ones((3, 3), bool))
            labels[comp > 0] = comp[comp > 0] + n
            n += k
        labels = _merge_small(labels, max(1, int(round(min_area * h * w))))
    ids = np.unique(labels)
    remap = np.zeros(ids.max() + 1, np.int64)
    # regions ordered worst first (the order prompts and the listing use)
    means = [float(q[torch.from_numpy(labels == i)].mean()) for i in ids]
    order = [ids[j] for j in np.argsort(means, kind="stable")]
    for new, old in enumerate(order):
        remap[old] = new
    labels = torch.from_numpy(remap[labels])
    regions = []
    for i in range(len(ids)):
        m = labels == i
        regions.append(Region(i, m, float(m.float().mean()), float(q[m].mean())))
    return Partition(labels, regions)


def prompt_complexity(q: float, c_min: int, c_max: int, q_min: float = 0.0, q_max: float = 100.0) -> int:
    """AdaQual's ``C_p``: ``c_min`` phrases at ``q_max``, ``c_max`` at ``q_min``, linear (rounded) between."""
    if c_min < 0 or c_max < c_min:
        raise ValueError(f"need 0 <= C_min <= C_max; got C_min {c_min}, C_max {c_max}")
    t = min(max((q - q_min) / max(q_max - q_min, 1e-12), 0.0), 1.0)
    return int(round(c_min + (c_max - c_min) * (1.0 - t)))


def choose_pool(q: float, tau: float) -> str:
    return "high" if q > tau else "low"


def rank_phrases(pool: Sequence[str], k: int, reference: str = "",
                 encoder: Optional[Callable[[str], torch.Tensor]] = None) -> list:
    """The top ``k`` phrases of ``pool``: by cosine similarity of ``encoder(phrase)`` to ``encoder(reference)``
    when both are given (ties keep the pool's order), else the first ``k``."""
    pool = [p for p in pool if p.strip()]
    if k <= 0 or not pool:
        return []
    if encoder is None or not reference.strip():
        return pool[:k]
    ref = encoder(reference).flatten().float()
    sims = [float(F.cosine_similarity(encoder(p).flatten().float(), ref, dim=0)) for p in pool]
    order = sorted(range(len(pool)), key=lambda i: (-sims[i], i))
    return [pool[i] for i in order[:k]]


def parse_pool(text: str) -> list:
    """One phrase per line (blank lines and surrounding spaces ignored)."""
    return [ln.strip() for ln in str(text).splitlines() if ln.strip()]


def plan(quality: torch.Tensor, global_prompt: str = "", high_pool: Sequence[str] = HIGH_POOL,
         low_pool: Sequence[str] = LOW_POOL, tau: float = 50.0, c_min: int = 1, c_max: int = 4,
         min_area: float = 0.05, method: str = "otsu", levels: int = 2, smooth: float = 2.0,
         strength_min: float = 0.2, strength_max: float = 1.0,
         encoder: Optional[Callable[[str], torch.Tensor]] = None) -> Partition:
    """Partition ``quality`` (0-100) and fill every region's pool, C_p, phrases and strength
    (``strength_min`` at quality 100 up to ``strength_max`` at 0)."""
    if not high_pool or not low_pool:
        raise ValueError("the high- and low-quality phrase pools must each hold at least one phrase "
                         "(one per line)")
    if not 0 <= strength_min <= strength_max <= 1:
        raise ValueError(f"need 0 <= strength_min <= strength_max <= 1; got {strength_min}, {strength_max}")
    prompt_complexity(50.0, c_min, c_max)  # validates C_min / C_max before the slow part
    part = partition(quality, method=method, levels=levels, min_area=min_area, smooth=smooth)
    for r in part.regions:
        r.pool = choose_pool(r.quality, tau)
        r.complexity = prompt_complexity(r.quality, c_min, c_max)
        r.phrases = rank_phrases(high_pool if r.pool == "high" else low_pool, r.complexity, global_prompt, encoder)
        r.strength = strength_min + (strength_max - strength_min) * (1.0 - min(max(r.quality / 100.0, 0.0), 1.0))
    return part


def strength_map(part: Partition, feather: float = 0.0) -> torch.Tensor:
    """[H,W] in [0,1]: each region's strength, optionally feathered (Gaussian sigma in pixels) so that
    Differential Diffusion blends across region borders."""
    s = torch.zeros(part.labels.shape)
    for r in part.regions:
        s[r.mask] = r.strength
    return _smooth(s, feather).clamp(0, 1) if feather > 0 else s


def preview(part: Partition, image: Optional[torch.Tensor] = None, alpha: float = 0.5) -> torch.Tensor:
    """[1,3,H,W]: regions coloured by quality (Turbo: blue = best, red = worst) over the photo, borders in
    white, each region's number at its centre."""
    from PIL import Image, ImageDraw

    from ..io.drawing import turbo as _turbo

    lab = part.labels.numpy()
    qual = np.zeros(lab.shape)
    for r in part.regions:
        qual[lab == r.index] = r.quality
    col = _turbo(1.0 - qual / 100.0)
    if image is not None:
        photo = image.detach().float().cpu()[0, :3].permute(1, 2, 0).numpy()
        col = alpha * col + (1 - alpha) * photo
    border = np.zeros(lab.shape, bool)
    border[:-1] |= lab[:-1] != lab[1:]
    border[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    col[border] = 1.0
    pil = Image.fromarray((col * 255).round().astype(np.uint8))
    d = ImageDraw.Draw(pil)
    for r in part.regions:
        ys, xs = np.nonzero(lab == r.index)
        d.text((float(xs.mean()), float(ys.mean())), str(r.index + 1), fill=(255, 255, 255))
    return torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def describe(part: Partition, global_prompt: str = "") -> list:
    return [{"region": r.index + 1, "area": round(r.area, 4), "quality": round(r.quality, 2), "pool": r.pool,
             "complexity": r.complexity, "strength": round(r.strength, 3), "prompt": r.prompt(global_prompt)}
            for r in part.regions]
