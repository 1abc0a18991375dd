"""The command line's batch workers: each loads the model and priors once, then does one photo (or one photo
under one prior) per task, writing its output itself, atomically. They run here or as Ray actors
(:mod:`iqa_map.core.map.batch`), so they take only picklable settings."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path


def _read_quietly(path):
    """The photo at ``path``; what the reader warns of (an animation's unused frames) was said when the inputs
    were checked."""
    from ..core.io.imageio import ImageWarning, read_photo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageWarning)
        return read_photo(path)


def _threads(n):
    if n:
        import torch

        torch.set_num_threads(int(n))


class EnhanceWorker:
    """``run(path)`` -> the report of ``<out>/<stem>_enhanced.png``."""

    def __init__(self, *, model, dtype, prompt, model_config, prior, fusion, monitors, weights_dir, device,
                 settings: dict, tiles: dict, out: str, protect=(), threads=None, name_suffix="_enhanced",
                 progress=False, cuda_graphs=True, compile=False):
        from ..core.map import settings as S
        from ..core.models.loading import DTYPES, load_model
        from ..core.map.pipeline import load_prior

        _threads(threads)
        self.model = load_model(model, device=device, dtype=DTYPES[dtype], config=model_config, prompt=prompt,
                                cuda_graphs=cuda_graphs, compile=compile)
        self.prior = load_prior(prior, fusion=fusion, weights_dir=weights_dir, device=device)
        self.monitors = [load_prior([m], weights_dir=weights_dir, device=device) for m in monitors]
        self.settings, self.tiles = S.MapSettings(**settings), S.TileSettings(**tiles)
        self.out, self.protect, self.suffix, self.progress = Path(out), tuple(protect), name_suffix, progress
        self.extra = {"model": model, "dtype": dtype, "prompt": prompt}

    def run(self, path, prior=None, suffix=None) -> dict:
        """Enhance one photo (under ``prior``, default the worker's; output name ``<stem><suffix>.png``)."""
        from ..core.io.imageio import write_photo
        from ..core.map.progress import enhance_with_progress
        from ..core.map.settings import TileSettings
        from ..core.options import flag_of

        path = Path(path)
        photo = _read_quietly(path)
        res = enhance_with_progress(self.model, photo.image, prior or self.prior, self.settings, self.tiles,
                                    monitors=self.monitors, name=path.name, bar=self.progress, log=print,
                                    tile_label=flag_of(TileSettings, "tile"))
        dest = write_photo(res.image, self.out / f"{path.stem}{suffix or self.suffix}.png", like=photo,
                           protect=self.protect)
        return {**res.report.to_dict(), "output": str(dest), **self.extra}


class CompareWorker:
    """``run((path, prior))`` -> the photo enhanced under ``prior`` (``<out>/<stem>_<prior>.png``), scored by
    every prior of the comparison (calibrated 0-100 where available), with the input's scores."""

    def __init__(self, *, priors, weights_dir, device, threads=None, **enhance):
        from ..core import priors as P

        _threads(threads)
        self.judges = {n: P.load(n, weights_dir=weights_dir, device=device) for n in priors}
        # One model for every prior: the enhancing worker's own prior is replaced per task.
        self.enhancer = EnhanceWorker(prior=[priors[0]], fusion="mean", monitors=[], weights_dir=weights_dir,
                                      device=device, **enhance)

    def run(self, task) -> dict:
        from ..core.priors.base import comparable_float

        path, name = Path(task[0]), task[1]
        rep = self.enhancer.run(path, prior=self.judges[name], suffix=f"_{name}")
        img, out = _read_quietly(path).image, _read_quietly(rep["output"]).image
        return {"photo": path.name, "input": str(path), "optimised_for": name, "output": rep["output"],
                "scores": {b: comparable_float(j, out.to(j.device)) for b, j in self.judges.items()},
                "input_scores": {b: comparable_float(j, img.to(j.device)) for b, j in self.judges.items()},
                "seconds": rep["wall_seconds"]}


class UpscaleWorker:
    """``run(path)`` -> the entry of ``<out>/<stem>_x<scale>.png``, scored by ``prior`` when one is given."""

    def __init__(self, *, model, lora, prior, weights_dir, device, tile, overlap, out, protect=(), threads=None,
                 loaded=None):
        from ..core import sr
        from ..core.map.pipeline import load_prior

        _threads(threads)
        self.model = loaded if loaded is not None else sr.load_upscaler(model, device=device)
        if lora and loaded is None:
            self.model = sr.apply_lora(self.model, lora)
        self.prior = load_prior(prior, weights_dir=weights_dir, device=device) if prior else None
        self.spec, self.tile, self.overlap = model, tile, overlap
        self.out, self.protect = Path(out), tuple(protect)

    def run(self, path) -> dict:
        import torch
        import torch.nn.functional as F

        from ..core import sr
        from ..core.io.imageio import write_photo
        from ..core.priors.base import comparable_float, scale_note

        path = Path(path)
        photo = _read_quietly(path)
        with torch.no_grad():
            img = sr.upscale(self.model, photo.image, tile=self.tile, overlap=self.overlap)
        if photo.alpha is not None:  # the alpha channel follows the picture (bicubic)
            photo = dataclasses.replace(photo, alpha=F.interpolate(photo.alpha, size=img.shape[-2:], mode="bicubic",
                                                                   align_corners=False).clamp(0, 1))
        dest = write_photo(img, self.out / f"{path.stem}_x{self.model.scale}.png", like=photo, protect=self.protect)
        entry = {"output": str(dest), "model": self.spec, "scale": self.model.scale,
                 "size": [img.shape[-1], img.shape[-2]], "input_size": [photo.image.shape[-1], photo.image.shape[-2]]}
        if self.prior is not None:
            entry["scores"] = {self.prior.name: comparable_float(self.prior, img)}
            entry["scale_note"] = scale_note(self.prior)
        return entry


def settings_dicts(settings, tiles) -> tuple[dict, dict]:
    return dataclasses.asdict(settings), dataclasses.asdict(tiles)
