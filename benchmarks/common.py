"""What every benchmark shares: the dev photos and their centre crops."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def dev_files(limit: int | None = None) -> list[Path]:
    """The CBSD68 dev photos (sorted), the first ``limit`` of them; exits with a message if absent."""
    files = sorted((DATA / "images" / "dev").glob("*.png"))[:limit]
    if not files:
        sys.exit(f"no dev images under {DATA} (expected ../shared/data beside the repository)")
    return files


def centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` crop (the whole side if the photo is smaller)."""
    h, w = img.shape[-2:]
    ch, cw = min(size, h), min(size, w)
    return img[..., (h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw].contiguous()


SHARD_KEYS = ("limit", "start", "out", "threads", "merge")


def load_shards(paths: list, tool: str, ignore: tuple = ()) -> tuple[list, dict, float]:
    """Rows (sorted by image index), settings and total seconds of shards of one run; exits if they differ.

    Settings that only say which images or how many threads (``SHARD_KEYS`` and ``ignore``) may differ."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    keep = SHARD_KEYS + tuple(ignore)
    settings = [{k: v for k, v in p["summary"]["settings"].items() if k not in keep} for p in parts]
    if any(st != settings[0] for st in settings):
        sys.exit(f"{tool} --merge: the files were run with different settings; merge shards of one run only")
    rows = sorted((r for p in parts for r in p["rows"]), key=lambda r: r.get("index", 0))
    if len({r["image"] for r in rows}) != len(rows):
        sys.exit(f"{tool} --merge: an image appears in more than one file")
    return rows, {**parts[0]["summary"]["settings"], "merged": list(map(str, paths))}, \
        sum(p["summary"]["seconds"] for p in parts)
