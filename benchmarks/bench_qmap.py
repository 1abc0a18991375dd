"""Quality maps and quality-adaptive MAP: the issue-7 benchmark.

    python -m benchmarks.bench_qmap [--limit N] [--crop 192] [--priors cnniqa-builtin,piqe,brisque] [--map-only]

Each CBSD68 dev photo (centre crop) gets one seeded random rectangle of a quarter
of its area degraded by blur, noise or JPEG (the kind and strength seeded too).
(1) ROC AUC of each prior's quality map (badness) against the rectangle's pixels.
(2) MAP with the quality map as per-pixel fidelity weight (adaptive) versus the
same run with a uniform weight, same prior, fidelity, steps and iterations: PSNR
against the clean original on the clean part and on the degraded part.
Writes a markdown table to stdout and JSON to out/bench/qmap.json (``--out``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def degrade_rect(img: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``img`` with a random H/2 x W/2 rectangle blurred, noised or JPEG-compressed; returns (image, mask, kind)."""
    from iqa_map.core.priors.distortions import gaussian_blur, gaussian_noise, jpeg

    rng = np.random.default_rng(1000 + seed)
    h, w = img.shape[-2:]
    rh, rw = h // 2, w // 2
    y, x = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    kind = ("blur", "noise", "jpeg")[seed % 3]
    if kind == "blur":
        bad = gaussian_blur(img, float(rng.uniform(1.5, 3.0)))
    elif kind == "noise":
        bad = gaussian_noise(img, float(rng.uniform(10, 25)), seed=seed)
    else:
        bad = jpeg(img, int(rng.integers(8, 21)))
    mask = torch.zeros(1, 1, h, w)
    mask[..., y:y + rh, x:x + rw] = 1
    return img * (1 - mask) + bad * mask, mask, kind


def region_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    m = mask.expand_as(a).bool()
    mse = float(((a - b)[m] ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="first N dev images (default all 68)")
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--priors", default="cnniqa-builtin,piqe,brisque", help="priors whose maps are scored")
    ap.add_argument("--window", type=int, default=48)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--map-only", action="store_true", help="skip the adaptive-vs-uniform MAP runs")
    ap.add_argument("--map-prior", default="cnniqa-builtin", help="the prior whose map weights the fidelity")
    ap.add_argument("--prior", default="builtin", help="the optimised prior")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--strength", type=float, default=0.35)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--optimizer", default="adam", choices=["adam", "momentum"])
    ap.add_argument("--lr", type=float, default=None, help="default: the optimiser's")
    ap.add_argument("--fidelity-weight", type=float, default=None, help="default: the fidelity's")
    ap.add_argument("--floor", type=float, default=0.1, help="fidelity weight of the worst region relative to the best")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "qmap.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from benchmarks.common import centre_crop, dev_files
    from iqa_map.core import map as M
    from iqa_map.core import priors
    from iqa_map.core.imageio import load_image
    from iqa_map.core.models import load_builtin
    from iqa_map.core.qmap import quality_map, roc_auc

    files = dev_files(args.limit)
    map_priors = {n: priors.load(n) for n in args.priors.split(",")}
    if args.map_prior not in map_priors:
        map_priors[args.map_prior] = priors.load(args.map_prior)
    prior = priors.load(args.prior)
    den = None if args.map_only else load_builtin()
    settings = M.MapSettings(steps=args.steps, strength=args.strength, iterations=args.iterations, lr=args.lr,
                             optimizer=args.optimizer,
                             fidelity_weight=args.fidelity_weight)
    rows, t0 = [], time.perf_counter()
    for i, f in enumerate(files):
        clean = centre_crop(load_image(f), args.crop)
        img, mask, kind = degrade_rect(clean, seed=i)
        row = {"image": f.name, "kind": kind, "auc": {}}
        qmaps = {}
        for name, p in map_priors.items():
            t = time.perf_counter()
            qmaps[name] = quality_map(p, img, window=args.window, stride=args.stride)
            row["auc"][name] = roc_auc(qmaps[name].badness.numpy(), mask.numpy())
            row.setdefault("map_seconds", {})[name] = time.perf_counter() - t
        if den is not None:
            weight = qmaps[args.map_prior].weight_map(args.floor)
            uni = M.ascend(den, img, prior, settings)
            ada = M.ascend(den, img, prior, settings, weight_map=weight)
            clean_m = 1 - mask
            for name, res in (("input", None), ("uniform", uni), ("adaptive", ada)):
                out = img if res is None else res.image
                row[name] = {"psnr_clean_region": region_psnr(out, clean, clean_m),
                             "psnr_degraded_region": region_psnr(out, clean, mask),
                             "prior": float(comparable_score_safe(prior, out))}
        rows.append(row)
        print(f"[{i + 1}/{len(files)}] {f.name} {kind} AUC " + " ".join(f"{k} {v:.3f}" for k, v in row["auc"].items())
              + ("" if den is None else
                 f" | clean {row['uniform']['psnr_clean_region']:.2f}->{row['adaptive']['psnr_clean_region']:.2f}"
                 f" degraded {row['uniform']['psnr_degraded_region']:.2f}->{row['adaptive']['psnr_degraded_region']:.2f}"),
              file=sys.stderr, flush=True)

    summary = {"images": len(rows), "settings": vars(args), "seconds": time.perf_counter() - t0,
               "mean_auc": {n: float(np.mean([r["auc"][n] for r in rows])) for n in map_priors},
               "mean_auc_by_kind": {k: {n: float(np.mean([r["auc"][n] for r in rows if r["kind"] == k]))
                                        for n in map_priors} for k in ("blur", "noise", "jpeg")
                                    if any(r["kind"] == k for r in rows)},
               "map_seconds": {n: float(np.mean([r["map_seconds"][n] for r in rows])) for n in map_priors}}
    if den is not None:
        summary["mean"] = {m: {k: float(np.mean([r[m][k] for r in rows])) for k in rows[0][m]}
                           for m in ("input", "uniform", "adaptive")}
        summary["adaptive_higher_on_clean"] = float(np.mean(
            [r["adaptive"]["psnr_clean_region"] > r["uniform"]["psnr_clean_region"] for r in rows]))
        summary["adaptive_no_worse_on_degraded"] = float(np.mean(
            [r["adaptive"]["psnr_degraded_region"] >= r["uniform"]["psnr_degraded_region"] - 1e-9 for r in rows]))
        summary["adaptive_both"] = float(np.mean(
            [r["adaptive"]["psnr_clean_region"] > r["uniform"]["psnr_clean_region"]
             and r["adaptive"]["psnr_degraded_region"] >= r["uniform"]["psnr_degraded_region"] - 1e-9
             for r in rows]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    print("| prior | mean ROC AUC | " + " | ".join(summary["mean_auc_by_kind"]) + " | seconds per map |")
    print("|---" * (3 + len(summary["mean_auc_by_kind"])) + "|")
    for n in map_priors:
        print(f"| {n} | {summary['mean_auc'][n]:.3f} | "
              + " | ".join(f"{summary['mean_auc_by_kind'][k][n]:.3f}" for k in summary["mean_auc_by_kind"])
              + f" | {summary['map_seconds'][n]:.2f} |")
    if den is not None:
        print()
        print("| method | PSNR clean region | PSNR degraded region | prior |")
        print("|---|---|---|---|")
        for m, v in summary["mean"].items():
            print(f"| {m} | {v['psnr_clean_region']:.2f} | {v['psnr_degraded_region']:.2f} | {v['prior']:.1f} |")
        print(f"\nadaptive > uniform on the clean region: {100 * summary['adaptive_higher_on_clean']:.0f} %; "
              f"no worse on the degraded region: {100 * summary['adaptive_no_worse_on_degraded']:.0f} %; "
              f"both: {100 * summary['adaptive_both']:.0f} %")


def comparable_score_safe(prior, img):
    from iqa_map.core.map import comparable_score
    with torch.no_grad():
        return comparable_score(prior, img).mean()


if __name__ == "__main__":
    main()
