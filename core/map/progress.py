"""One photo through :func:`~iqa_map.core.map.pipeline.enhance` as a batch tool shows it: a notice first when the
photo is split into tiles (how many, so a long run is expected), then a progress bar over every tile's iterations."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from .pipeline import enhance
from .settings import MapSettings, TileSettings
from .tiling import tile_grid


def enhance_with_progress(model, image, prior, settings: MapSettings, tiles: TileSettings, *, monitors: Sequence = (),
                          name: str = "", bar: bool = False, log: Optional[Callable[[str], None]] = None,
                          tile_label: str = "tile"):
    """:func:`enhance` of ``image`` with a loaded ``model`` and ``prior``; ``log`` is told of the tiling (the tile
    size named ``tile_label``, e.g. the command line's flag); ``bar``: a tqdm bar named ``name``."""
    from tqdm import tqdm

    h, w = image.shape[-2:]
    grid = tile_grid(model.denoiser, model.codec, h, w, tiles.tile, tiles.tile_overlap) if tiles.tile else None
    if grid is not None and log is not None:
        log(f"{name}: {w}x{h} is larger than {tile_label} {tiles.tile}: {len(grid)} tiles of {grid.tile} pixels, "
            f"{grid.overlap} shared between neighbours")
    per_tile = settings.iterations + 1
    progress = tqdm(total=per_tile * (len(grid) if grid else 1), desc=name, unit="it", leave=False, disable=not bar)

    def callback(info):
        # Tiles may stop early (target, patience, guard): the bar counts each tile's full budget.
        progress.n = info.get("tile", 0) * per_tile + info["iteration"] + 1
        progress.set_postfix(score=f"{info['score']:.2f}", fid=f"{info['fidelity']:.4f}",
                             **({"tile": f"{info['tile'] + 1}/{info['tiles']}"} if grid else {}))

    try:
        return enhance(image, model=model, prior=prior, monitors=monitors, settings=settings, tiles=tiles,
                       callback=callback)
    finally:
        progress.close()
