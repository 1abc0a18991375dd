"""Benchmark of the built-in NR-IQA priors: distortion ranking and gradient cost.

For every built-in prior (NIQE, BRISQUE, PIQE, CNNIQA, the fused
``hybrid-builtin``) and every dev photo (``../shared/data/images/dev``,
CBSD68, 481x321), the photo is degraded by Gaussian blur, Gaussian noise and
JPEG at 4 levels (``core/priors/distortions.py``). Reported per distortion: the
Spearman correlation between the prior's score (higher = better) and minus the
distortion level (0..4), computed per image and averaged (+1 = the prior ranks
all five versions correctly), and pooled over all images and kinds ("all").
Also the median time of one forward + backward pass on a 512x512 image on CPU.

    python -m benchmarks.bench_priors [--limit 20] [--threads 1]

Writes a markdown table to stdout and the numbers to out/bench/priors.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from iqa_map.core import priors
from iqa_map.core.priors.calibration import read_image
from iqa_map.core.priors.distortions import LEVELS, distort

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def time_fwd_bwd(prior, repeats: int = 3) -> float:
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    times = []
    for i in range(repeats + 1):
        xi = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        prior(xi).sum().backward()
        if i:  # first run is warm-up
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=SHARED / "images" / "dev")
    ap.add_argument("--cnniqa", type=Path, default=SHARED / "weights" / "cnniqa_live_gray.safetensors")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images (0 = all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "priors.json")
    args = ap.parse_args()
    if not args.images.is_dir():
        raise SystemExit(f"dev images not found at {args.images}")
    torch.set_num_threads(args.threads)

    base = {n: priors.load(n) for n in priors.BUILTINS}
    base["cnniqa"] = priors.load(f"cnniqa:{args.cnniqa}")
    members = [(base[n], w) for n, w in priors.HYBRID_BUILTIN["members"]]
    hybrid_name = "hybrid-builtin"

    files = sorted(args.images.glob("*.png"))
    files = files[: args.limit] if args.limit else files
    # scores[prior][kind] = array [n_images, 5 levels]
    scores = {n: {k: np.zeros((len(files), 5)) for k in LEVELS} for n in [*base, hybrid_name]}
    weights = dict(priors.HYBRID_BUILTIN["members"])

    def score_all(x: torch.Tensor) -> dict[str, float]:
        out, cal = {}, {}
        for n, p in base.items():
            native = p.native(x)
            out[n] = float(-native if p.lower_better else native)
            if n in weights:  # the hybrid from the same evaluations (same arithmetic as FusedPrior, mode mean)
                cal[n] = float(p.calibration(native, p.lower_better))
        out[hybrid_name] = sum(weights[n] * c for n, c in cal.items()) / sum(weights.values())
        return out

    with torch.no_grad():
        for i, f in enumerate(files):
            img = read_image(f)
            clean = score_all(img)
            for kind in LEVELS:
                for lv in range(5):
                    s = clean if lv == 0 else score_all(distort(img, kind, lv))
                    for n, v in s.items():
                        scores[n][kind][i, lv] = v
            print(f"[{i + 1}/{len(files)}] {f.name}", flush=True, file=sys.stderr)

    levels = np.arange(5)
    results = {}
    for n, per_kind in scores.items():
        row = {}
        for kind, s in per_kind.items():
            row[kind] = float(np.nanmean([spearmanr(si, -levels)[0] for si in s]))
        allx = np.concatenate([s.reshape(-1) for s in per_kind.values()])
        ally = np.concatenate([np.tile(-levels, len(files)) for _ in per_kind])
        row["all_pooled"] = float(spearmanr(allx, ally)[0])
        results[n] = row
    fused = priors.fuse(members, name=hybrid_name)
    for n, p in {**base, hybrid_name: fused}.items():
        results[n]["fwd_bwd_512_s"] = time_fwd_bwd(p)

    meta = {"images": len(files), "image_folder": str(args.images), "levels": LEVELS, "threads": args.threads,
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))

    print(f"SRCC(score, -distortion level), mean over {len(files)} dev images; time: 1 forward+backward, "
          f"512x512, CPU, {args.threads} thread(s)\n")
    print("| prior | blur | noise | JPEG | all (pooled) | fwd+bwd 512² (s) |")
    print("|---|---|---|---|---|---|")
    for n, r in results.items():
        print(f"| {n} | {r['blur']:.3f} | {r['noise']:.3f} | {r['jpeg']:.3f} | {r['all_pooled']:.3f} "
              f"| {r['fwd_bwd_512_s']:.2f} |")


if __name__ == "__main__":
    main()
