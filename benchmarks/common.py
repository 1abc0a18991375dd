"""What every benchmark shares: the dev photos and their centre crops."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from iqa_map.core.io.files import write_text

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


#: The latent units of result files written before the ``--units`` option existed.
UNITS_BEFORE_OPTION = "ve"


def add_units_option(ap, measured: str = "the README's tables before the switch to vp used ve") -> None:
    """``--units``: the latent coordinates MAP ascent steps in (``MapSettings.units``)."""
    from iqa_map.core.map import LATENT_UNITS

    ap.add_argument("--units", default=LATENT_UNITS[0], choices=LATENT_UNITS,
                    help=f"latent coordinates of the steps; {measured}")


SHARD_KEYS = ("limit", "start", "out", "threads", "merge", "resume")


def load_shards(paths: list, tool: str, ignore: tuple = ()) -> tuple[list, dict, float]:
    """Rows (sorted by image index), settings and total seconds of shards of one run; exits if they differ.

    Settings that only say which images or how many threads (``SHARD_KEYS`` and ``ignore``) may differ."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    if any(not _same_run(p["summary"]["settings"], parts[0]["summary"]["settings"], ignore) for p in parts):
        sys.exit(f"{tool} --merge: the files were run with different settings; merge shards of one run only")
    if any(p["summary"].get("partial") for p in parts):
        print(f"{tool} --merge: some files are partial (an interrupted run); summarising the images they hold",
              file=sys.stderr)
    rows = sorted((r for p in parts for r in p["rows"]), key=lambda r: r.get("index", 0))
    if len({r["image"] for r in rows}) != len(rows):
        sys.exit(f"{tool} --merge: an image appears in more than one file")
    return rows, {**parts[0]["summary"]["settings"], "merged": list(map(str, paths))}, \
        sum(p["summary"]["seconds"] for p in parts)


def _same_run(a: dict, b: dict, ignore: tuple = ()) -> bool:
    keep = SHARD_KEYS + tuple(ignore)
    return {k: v for k, v in a.items() if k not in keep} == {k: v for k, v in b.items() if k not in keep}


def checkpoint(out: str, rows: list, settings: dict, seconds: float) -> None:
    """Write the rows so far (marked partial) atomically, so a long run that dies keeps its finished images."""
    write_text(out, json.dumps({"summary": {"settings": settings, "seconds": seconds, "partial": True},
                                "rows": rows}, indent=2))


def resume_rows(out: str, settings: dict, tool: str, ignore: tuple = ()) -> tuple[list, float]:
    """Rows and seconds already in ``out`` from a run with the same settings (none if there is no file);
    exits rather than mix settings in one file."""
    path = Path(out)
    if not path.exists():
        return [], 0.0
    done = json.loads(path.read_text())
    if not _same_run(done["summary"]["settings"], settings, ignore):
        sys.exit(f"{tool} --resume: {out} was written with different settings; choose another --out")
    return done["rows"], float(done["summary"]["seconds"])
