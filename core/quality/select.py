"""IQA-guided selection among candidate results of one scene: ranking, argmax, softmax sampling, per tile.

Candidates are what a user already has: several seeds, upscalers or restorers
of the same photo. Scores are the prior's comparable scores (calibrated 0-100
when the prior has constants), so a temperature means the same for every prior.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

from ..autograd import usable
from ..priors.base import comparable_score
from ..tiles import Grid
from .settings import SelectSettings as _Defaults  # the defaults are the settings record's

Candidates = Union[torch.Tensor, Sequence[torch.Tensor]]
MODES = ("argmax", "softmax")


def stack_candidates(candidates: Candidates) -> torch.Tensor:
    """``[N,3,H,W]`` from a batch or a list of ``[3,H,W]`` / ``[1,3,H,W]``; a clear error on mixed sizes."""
    if torch.is_tensor(candidates):
        imgs = [candidates] if candidates.ndim == 3 else list(candidates)
    else:
        imgs = [c[0] if c.ndim == 4 and c.shape[0] == 1 else c for c in candidates]
    if not imgs:
        raise ValueError("no candidates to choose from")
    sizes = sorted({tuple(c.shape) for c in imgs})
    if len(sizes) > 1:
        raise ValueError("candidates must be the same scene at the same size; got sizes "
                         + ", ".join(f"{s[-1]}x{s[-2]}" for s in sizes) + " (resize or crop them to one size first)")
    if imgs[0].ndim != 3 or imgs[0].shape[0] != 3:
        raise ValueError(f"each candidate must be an RGB image [3,H,W]; got {tuple(imgs[0].shape)}")
    return torch.stack([usable(c).float() for c in imgs])


@torch.no_grad()
def scores(prior, candidates: Candidates, batch: int = 8) -> torch.Tensor:
    """Comparable score of each candidate, ``[N]`` (higher = better)."""
    x = stack_candidates(candidates)
    return torch.cat([comparable_score(prior, x[i:i + batch]).float().cpu() for i in range(0, len(x), batch)])


@dataclass
class Selection:
    index: int                 # the chosen candidate
    scores: torch.Tensor       # [N] comparable scores
    order: list                # candidate indices, best first
    probabilities: torch.Tensor  # [N]: one-hot for argmax, the softmax otherwise


def probabilities(s: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(score / T); T -> 0 is argmax (ties split evenly), T -> inf uniform."""
    s = s.double()
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (use mode 'argmax' for the best candidate)")
    return torch.softmax((s - s.max()) / temperature, dim=0).float()


def select(prior, candidates: Candidates, mode: str = "argmax", temperature: float = _Defaults.temperature,
           seed: int = _Defaults.seed, precomputed: torch.Tensor | None = None) -> Selection:
    """Rank the candidates by ``prior`` and pick one: the best (``argmax``) or one drawn with
    probability softmax(score / temperature) (``softmax``, seeded)."""
    if mode not in MODES:
        raise ValueError(f"unknown selection mode {mode!r}; choose from {MODES}")
    s = scores(prior, candidates) if precomputed is None else precomputed.float().cpu()
    order = torch.argsort(s, descending=True, stable=True).tolist()
    if mode == "argmax":
        p = torch.zeros_like(s)
        p[order[0]] = 1.0
        return Selection(order[0], s, order, p)
    p = probabilities(s, temperature)
    gen = torch.Generator().manual_seed(int(seed))
    idx = int(torch.multinomial(p.double(), 1, generator=gen))
    return Selection(idx, s, order, p)


@torch.no_grad()
def select_tiles(prior, candidates: Candidates, tile: int = _Defaults.tile, overlap: int = _Defaults.overlap,
                 batch: int = 16) -> tuple:
    """The best candidate per tile, blended across tile borders with raised-cosine weights.

    Returns ``(image [1,3,H,W], choice [rows, cols] of candidate indices)``. Weights
    are normalised by their sum, so where neighbouring tiles chose the same candidate
    the result is that candidate exactly, and where they differ it fades over the
    overlap instead of jumping (no seam).
    """
    x = stack_candidates(candidates)
    n, _, h, w = x.shape
    grid = Grid(h, w, tile, overlap)
    th, tw = grid.shape
    crops = torch.stack([x[:, :, y:y + th, xx:xx + tw] for y, xx, _, _ in grid.boxes()], dim=1)  # [N, T, 3, th, tw]
    flat = crops.reshape(-1, 3, th, tw)
    s = torch.cat([comparable_score(prior, flat[i:i + batch]).float().cpu() for i in range(0, len(flat), batch)])
    choice = s.reshape(n, len(grid.rows), len(grid.cols)).argmax(0)
    chosen = [crops[c, t][None] for t, c in enumerate(choice.flatten().tolist())]
    return grid.blend(chosen).clamp(0, 1), choice


@dataclass
class Choice:
    """What :func:`choose` picked: the image, the ranking behind it and, in tiles mode, each tile's candidate."""
    image: torch.Tensor              # [1,3,H,W]: the chosen candidate, or the tile blend
    selection: Selection             # the whole-image ranking (tiles mode: argmax's)
    mode: str
    tile_choice: torch.Tensor | None = None   # [rows, cols] candidate indices (tiles mode)

    @property
    def index(self) -> int:
        """The chosen candidate; -1 for a tile blend (no single candidate)."""
        return -1 if self.mode == "tiles" else self.selection.index

    def ranking(self, names: Sequence[str] | None = None) -> list:
        """Rows best first: rank, candidate (its name if given), score, probability."""
        sel = self.selection
        return [{"rank": r + 1, "candidate": names[i] if names else i, "score": float(sel.scores[i]),
                 "probability": float(sel.probabilities[i])} for r, i in enumerate(sel.order)]


def choose(prior, candidates: Candidates, settings=None) -> Choice:
    """Rank the candidates and pick by ``settings`` (a :class:`~iqa_map.core.quality.settings.SelectSettings`):
    the best, a seeded softmax draw, or the best candidate per tile blended (the ranking is then argmax's)."""
    s = settings or _Defaults()
    s.validate()
    x = stack_candidates(candidates)
    if s.mode == "tiles":
        image, tiles = select_tiles(prior, x, tile=s.tile, overlap=min(s.overlap, s.tile - 8))
        return Choice(image, select(prior, x), s.mode, tiles)
    sel = select(prior, x, mode=s.mode, temperature=s.temperature, seed=s.seed)
    return Choice(x[sel.index:sel.index + 1], sel, s.mode)
