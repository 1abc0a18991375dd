"""One call from a photo to its enhanced version: :func:`enhance`.

It loads what it is given by name (model, prior, monitors), picks the settings
(a preset, a :class:`~iqa_map.core.map.settings.MapSettings`, keyword overrides),
splits a large photo into tiles, and returns the result with its typed
:class:`~iqa_map.core.map.report.Report`. The command line, ``make demo`` and the
benchmarks call it; for a batch, load the model and priors once
(:func:`load_model`, :func:`load_prior`) and pass the objects.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

from . import tiling
from .ascent import MapResult, check_image
from ..models import loading
from ..models.loading import DTYPES, LoadedModel, load_model
from .settings import MapSettings, TileSettings, preset

__all__ = ["DTYPES", "enhance", "load_model", "load_prior"]


def _split_weight(spec: str) -> tuple[str, float]:
    """``name[:weight]`` -> (name, weight); a ':' not followed by a number is part of the name (a path)."""
    name, sep, w = spec.rpartition(":")
    if sep and name:
        try:
            return name, float(w)
        except ValueError:
            pass
    return spec, 1.0


def load_prior(specs: Union[str, Sequence[str], None] = "builtin", *, fusion: str = "mean", weights_dir=None,
               device=None):
    """One prior from names (``"niqe"``, or ``["niqe:2", "brisque"]`` fused on calibrated scores)."""
    from .. import priors

    specs = [specs] if isinstance(specs, str) else list(specs or ["builtin"])
    loaded = [(priors.load(n, weights_dir=weights_dir, device=device), w) for n, w in map(_split_weight, specs)]
    return loaded[0][0] if len(loaded) == 1 else priors.fuse(loaded, mode=fusion)


def enhance(
    image: torch.Tensor,
    *,
    model: Union[str, LoadedModel] = "builtin",
    prior="builtin",
    monitors: Sequence = (),
    settings: Optional[MapSettings] = None,
    preset_name: str = "default",
    tiles: Optional[TileSettings] = None,
    weight_map: Optional[torch.Tensor] = None,
    device=None,
    dtype: str = "fp32",
    prompt: str = "",
    model_config=None,
    weights_dir=None,
    callback: Optional[Callable[[dict], None]] = None,
    **overrides,
) -> MapResult:
    """Enhance ``image`` ([1,3,H,W] or [3,H,W] in [0, 1]) by latent MAP ascent.

    ``model``: a name for :func:`load_model` (``"builtin"``, a diffusers folder, a
    checkpoint file) or a loaded model. ``prior``: a name, a list of names (fused)
    or a prior; ``monitors``: the same, each a held-out judge for the hack guard.
    Settings: ``settings`` if given, else the preset ``preset_name``; keyword
    ``overrides`` set fields of :class:`MapSettings` on top. ``tiles``: how a photo
    larger than one tile is split (default :class:`TileSettings`). The torch seed is
    set from the settings, so a call is reproducible on its own.
    """
    s = settings if settings is not None else preset(preset_name)
    if overrides:
        import dataclasses

        s = dataclasses.replace(s, **overrides)
    s.validate()
    tiles = tiles or TileSettings()
    tiles.validate()
    if torch.is_tensor(image) and image.ndim == 3:
        image = image[None]
    check_image(image)
    if isinstance(model, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        model = loading.load_model(model, device=device, dtype=DTYPES[dtype], config=model_config, prompt=prompt)
    if isinstance(prior, (str, list, tuple)):
        prior = load_prior(prior, weights_dir=weights_dir, device=device)
    monitors = [load_prior(m, weights_dir=weights_dir, device=device) if isinstance(m, str) else m
                for m in monitors]
    den = model.denoiser
    h, w = image.shape[-2:]
    tile, overlap = (tiles.tile, tiles.tile_overlap) if tiles.tile else (max(h, w), 0)
    torch.manual_seed(s.seed)
    adaptive_prior = None  # the quality map's prior, loaded here like the others (None: none, or the prior itself)
    if s.adaptive_fidelity and s.adaptive_fidelity != "prior":
        adaptive_prior = load_prior(s.adaptive_fidelity, weights_dir=weights_dir, device=den.device)
    return tiling.ascend_tiled(den, image.to(den.device), prior, s, tile=tile, overlap=overlap, codec=model.codec,
                               monitors=monitors, weight_map=weight_map, cond=model.cond, callback=callback,
                               adaptive_prior=adaptive_prior)
