"""What a long run does when it is stopped: by the user (:class:`Interrupted`) or by memory (OOM recovery).

Out-of-memory recovery by tiles: on an OOM error, halve the tile and run again (as ComfyUI's upscaler node
does). A tile that fits one GPU may not fit another, or the same one while another model holds memory. Instead of
failing the run, the work is redone with tiles half as large (the memory of one tile roughly quarters), down to
a floor below which the error is passed on with what to do.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional, TypeVar

import torch

log = logging.getLogger("iqa_map")
T = TypeVar("T")
#: Below this tile side (pixels) an OOM is passed on rather than retried.
MIN_TILE = 64


class Interrupted(RuntimeError):
    """Raised by a progress callback to stop a run (MAP ascent, SR fine-tuning); what the run keeps is its own:
    the ascent its best iterate so far, fine-tuning the checkpoint of the last finished step."""


def is_oom(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, and the RuntimeErrors other backends (MPS, older torch) raise for the same."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def halving_retry(run: Callable[[int], T], tile: int, min_tile: int = MIN_TILE,
                  on_oom: Optional[Callable[[], None]] = None, what: str = "run", unit: str = "-pixel tiles",
                  advice: str = "free GPU memory (close other models), or run on the CPU") -> T:
    """``run(tile)``; on an out-of-memory error, free the cache (``on_oom``, default torch's) and retry with
    ``tile // 2`` until it works or the tile would fall under ``min_tile``. ``tile`` may count something else
    than pixels (the quality map halves its crops per batch): ``unit`` names it in the messages."""
    while True:
        try:
            return run(tile)
        except Exception as e:  # noqa: BLE001 - only OOM is handled, everything else is re-raised as is
            if not is_oom(e):
                raise
            smaller = tile // 2
            (on_oom or empty_cache)()
            if smaller < min_tile:
                cause = (str(e).strip().splitlines() or [type(e).__name__])[0]  # the backend's own figures
                raise RuntimeError(f"out of memory in {what} even with {tile}{unit} ({cause}): {advice}") from e
            log.warning("IQA-MAP: out of memory in %s with %d%s; retrying with %d", what, tile, unit, smaller)
            tile = smaller
