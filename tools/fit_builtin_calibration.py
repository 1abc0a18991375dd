"""Fit the shipped calibration constants of the built-in priors (NIQE, BRISQUE, PIQE, CNNIQA-builtin, CNNIQA-LIVE).

Scores every image of a folder (default: the project's training photos,
``../shared/data/images/train``, centre-cropped to at most 384x384) clean and
degraded by blur, noise and JPEG at 4 levels each (``core/priors/distortions.py``),
then maps the 25 % / 75 % quantiles of the pooled native scores to 25 / 75
(``calibration.fit_constants``) and writes them into
``core/priors/data/calibration.json``. The dev images are left for the benchmark.

    python tools/fit_builtin_calibration.py --limit 24
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from iqa_map.core import priors
from iqa_map.core.priors.calibration import DEFAULTS_FILE, IMAGE_SUFFIXES, fit_constants, read_image
from iqa_map.core.priors.distortions import LEVELS, distort

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return img[..., top:top + size, left:left + size]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=SHARED / "images" / "train")
    ap.add_argument("--cnniqa", type=Path, default=SHARED / "weights" / "cnniqa_live_gray.safetensors")
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--crop", type=int, default=384)
    ap.add_argument("--priors", default="niqe,brisque,piqe,cnniqa-builtin,cnniqa",
                    help="which constants to (re)fit; the others in the file are kept")
    args = ap.parse_args()
    torch.set_num_threads(1)
    files = sorted(f for f in args.images.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    files = files[:: max(1, len(files) // args.limit)][: args.limit]  # spread over sun_* and urban_*
    ap_names = [n.strip() for n in args.priors.split(",") if n.strip()]
    names = [f"cnniqa:{args.cnniqa}" if n == "cnniqa" else n for n in ap_names]
    loaded = {n: priors.load(n) for n in names}
    scores = {p.name: [] for p in loaded.values()}
    for f in files:
        img = centre_crop(read_image(f), args.crop)
        versions = [img] + [distort(img, k, lv) for k in LEVELS for lv in range(1, 5)]
        with torch.no_grad():
            for p in loaded.values():
                scores[p.name] += [float(p.native(v)) for v in versions]
    data = json.loads(DEFAULTS_FILE.read_text())
    for p in loaded.values():
        cal = fit_constants(scores[p.name])
        data[p.name] = {"C": round(cal.C, 4), "S": round(cal.S, 4),
                        "source": f"IQA-MAP fit: {len(files)} train photos x (clean + blur/noise/JPEG x 4 levels), "
                                  f"quantiles 25/75 -> 25/75 (tools/fit_builtin_calibration.py)"}
        print(f"{p.name}: C={cal.C:.4f} S={cal.S:.4f}")
    DEFAULTS_FILE.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
