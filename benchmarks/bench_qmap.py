"""Quality maps and quality-adaptive MAP: the issue-7 benchmark.

    python -m benchmarks.bench_qmap [--limit N] [--crop 192] [--priors cnniqa-builtin,piqe,brisque] [--map-only]
    python -m benchmarks.bench_qmap --start 34 --limit 34 --out b.json ...   # a shard, for parallel runs
    python -m benchmarks.bench_qmap --merge a.json b.json --out all.json     # the shards' rows, one summary
    python -m benchmarks.bench_qmap --normalise damaged --uniform-from a.json b.json ...  # adaptive runs only

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
    from benchmarks.common import add_units_option
    from iqa_map.core.map.settings import OPTIMISERS, PRESETS

    FAST = PRESETS["fast"]  # the benchmarks' defaults are the fast preset's

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="N dev images (default all 68)")
    ap.add_argument("--start", type=int, default=0, help="index of the first dev image (a shard; the degradation "
                    "is seeded by the global index, so shards reproduce the full run)")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="summarise the rows of these result files "
                    "(shards of one setting) instead of running")
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--priors", default="cnniqa-builtin,piqe,brisque", help="priors whose maps are scored")
    ap.add_argument("--window", type=int, default=48)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--map-only", action="store_true", help="skip the adaptive-vs-uniform MAP runs")
    ap.add_argument("--map-prior", default="cnniqa-builtin", help="the prior whose map weights the fidelity")
    ap.add_argument("--prior", default="builtin", help="the optimised prior")
    ap.add_argument("--steps", type=int, default=FAST["steps"], help="default: the fast preset's")
    ap.add_argument("--strength", type=float, default=FAST["strength"])
    ap.add_argument("--iterations", type=int, default=FAST["iterations"])
    ap.add_argument("--optimizer", default=FAST["optimizer"], choices=list(OPTIMISERS))
    ap.add_argument("--lr", type=float, default=None, help="default: the optimiser's")
    add_units_option(ap, "the README's tables were measured in ve")
    ap.add_argument("--fidelity-weight", type=float, default=None, help="default: the fidelity's")
    ap.add_argument("--floor", type=float, default=0.1, help="fidelity weight of the worst region relative to the best")
    ap.add_argument("--normalise", default="worst,mean", help="adaptive weight normalisation(s), comma-separated: "
                    "mean (same total fidelity as uniform), worst (worst region keeps the uniform weight), "
                    "damaged (the map's damaged class keeps it)")
    ap.add_argument("--uniform-from", nargs="+", metavar="JSON", help="take the input and uniform rows from these "
                    "result files of a run with the same ascent settings (the uniform run is deterministic) and run "
                    "only the adaptive variants: half the time")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "qmap.json"),
                    help="result JSON; rewritten after every image (marked partial until the run ends)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the images already in --out (same settings) and run only the others")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.merge:
        return merge(args.merge, args.out)

    from benchmarks.common import centre_crop, checkpoint, dev_files, resume_rows
    from iqa_map.core import map as M
    from iqa_map.core import priors
    from iqa_map.core.io.imageio import load_image
    from iqa_map.core.models import load_builtin
    from iqa_map.core.quality.metrics import roc_auc
    from iqa_map.core.quality.qmap import quality_map

    files = dev_files()[args.start:]
    files = files[:args.limit] if args.limit is not None else files
    norms = args.normalise.split(",")
    map_priors = {n: priors.load(n) for n in args.priors.split(",")}
    if args.map_prior not in map_priors:
        map_priors[args.map_prior] = priors.load(args.map_prior)
    prior = priors.load(args.prior)
    den = None if args.map_only else load_builtin()
    settings = M.MapSettings(steps=args.steps, strength=args.strength, iterations=args.iterations, lr=args.lr,
                             optimizer=args.optimizer, units=args.units,
                             fidelity_weight=args.fidelity_weight)
    reuse = {} if den is None or not args.uniform_from else uniform_rows(args.uniform_from, vars(args))
    rows, seconds0 = resume_rows(args.out, vars(args), "bench_qmap") if args.resume else ([], 0.0)
    done = {r["index"] for r in rows}
    t0 = time.perf_counter() - seconds0
    for i, f in enumerate(files, start=args.start):
        if i in done:
            continue
        clean = centre_crop(load_image(f), args.crop)
        img, mask, kind = degrade_rect(clean, seed=i)
        row = {"index": i, "image": f.name, "kind": kind, "auc": {}}
        qmaps = {}
        for name, p in map_priors.items():
            t = time.perf_counter()
            qmaps[name] = quality_map(p, img, window=args.window, stride=args.stride)
            row["auc"][name] = roc_auc(qmaps[name].badness.numpy(), mask.numpy())
            row.setdefault("map_seconds", {})[name] = time.perf_counter() - t
        if den is not None:
            if i in reuse and reuse[i]["image"] != f.name:
                sys.exit(f"bench_qmap --uniform-from: row {i} is {reuse[i]['image']}, not {f.name}")
            runs = {} if i in reuse else {"input": None, "uniform": M.ascend(den, img, prior, settings)}
            row.update({k: reuse[i][k] for k in ("input", "uniform")} if i in reuse else {})
            for norm in norms:
                weight = qmaps[args.map_prior].weight_map(args.floor, normalise=norm)
                runs[adaptive_name(norm)] = M.ascend(den, img, prior, settings, weight_map=weight)
            clean_m = 1 - mask
            for name, res in runs.items():
                out = img if res is None else res.image
                row[name] = {"psnr_clean_region": region_psnr(out, clean, clean_m),
                             "psnr_degraded_region": region_psnr(out, clean, mask),
                             "prior": float(comparable_score_safe(prior, out))}
        rows.append(row)
        checkpoint(args.out, rows, vars(args), time.perf_counter() - t0)
        print(f"[{i + 1 - args.start}/{len(files)}] {f.name} {kind} AUC " + " ".join(f"{k} {v:.3f}" for k, v in row["auc"].items())
              + ("" if den is None else "".join(
                  f" | {a}: clean {row['uniform']['psnr_clean_region']:.2f}->{row[a]['psnr_clean_region']:.2f}"
                  f" degraded {row['uniform']['psnr_degraded_region']:.2f}->{row[a]['psnr_degraded_region']:.2f}"
                  for a in map(adaptive_name, norms))),
              file=sys.stderr, flush=True)

    rows.sort(key=lambda r: r["index"])
    summary = summarise(rows, vars(args), time.perf_counter() - t0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    report(summary)


UNIFORM_SETTINGS = ("crop", "prior", "steps", "strength", "iterations", "optimizer", "lr", "units", "fidelity_weight")


def uniform_rows(paths: list, settings: dict) -> dict:
    """Index -> row of earlier runs whose uniform ascent had these settings."""
    from benchmarks.common import UNITS_BEFORE_OPTION

    out = {}
    for p in paths:
        part = json.loads(Path(p).read_text())
        theirs = {"units": UNITS_BEFORE_OPTION, **part["summary"]["settings"]}
        diff = [k for k in UNIFORM_SETTINGS if theirs.get(k) != settings.get(k)]
        if diff:
            sys.exit(f"bench_qmap --uniform-from: {p} was run with different {', '.join(diff)}")
        out.update({r["index"]: r for r in part["rows"] if "uniform" in r})
    return out


def merge(paths: list, out: str) -> None:
    """One summary over the rows of several shards run with the same settings."""
    from benchmarks.common import load_shards

    rows, settings, seconds = load_shards(paths, "bench_qmap", ignore=("uniform_from",))
    summary = summarise(rows, settings, seconds)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    report(summary)


def summarise(rows: list, settings: dict, seconds: float) -> dict:
    map_priors = list(rows[0]["auc"])
    methods = [m for m in ("input", "uniform") if m in rows[0]] + [m for m in rows[0] if m.startswith("adaptive")]
    summary = {"images": len(rows), "settings": settings, "seconds": seconds,
               "mean_auc": {n: float(np.mean([r["auc"][n] for r in rows])) for n in map_priors},
               "mean_auc_by_kind": {k: {n: float(np.mean([r["auc"][n] for r in rows if r["kind"] == k]))
                                        for n in map_priors} for k in ("blur", "noise", "jpeg")
                                    if any(r["kind"] == k for r in rows)},
               "map_seconds": {n: float(np.mean([r["map_seconds"][n] for r in rows])) for n in map_priors}}
    if "uniform" in rows[0]:
        summary["mean"] = {m: {k: float(np.mean([r[m][k] for r in rows])) for k in rows[0][m]} for m in methods}
        for a in methods[2:]:
            clean_up = [r[a]["psnr_clean_region"] > r["uniform"]["psnr_clean_region"] for r in rows]
            bad_ok = [r[a]["psnr_degraded_region"] >= r["uniform"]["psnr_degraded_region"] - 1e-9 for r in rows]
            summary[a] = {"higher_on_clean": float(np.mean(clean_up)), "no_worse_on_degraded": float(np.mean(bad_ok)),
                          "both": float(np.mean([c and b for c, b in zip(clean_up, bad_ok)])),
                          **{f"median_gain_{region}_db": float(np.median(
                              [r[a][f"psnr_{region}_region"] - r["uniform"][f"psnr_{region}_region"] for r in rows]))
                             for region in ("clean", "degraded")}}
    return summary


def report(summary: dict) -> None:
    map_priors = list(summary["mean_auc"])
    print("| prior | mean ROC AUC | " + " | ".join(summary["mean_auc_by_kind"]) + " | seconds per map |")
    print("|---" * (3 + len(summary["mean_auc_by_kind"])) + "|")
    for n in map_priors:
        print(f"| {n} | {summary['mean_auc'][n]:.3f} | "
              + " | ".join(f"{summary['mean_auc_by_kind'][k][n]:.3f}" for k in summary["mean_auc_by_kind"])
              + f" | {summary['map_seconds'][n]:.2f} |")
    if "mean" in summary:
        methods = list(summary["mean"])
        print()
        print("| method | PSNR clean region | PSNR degraded region | prior |")
        print("|---|---|---|---|")
        for m, v in summary["mean"].items():
            print(f"| {m} | {v['psnr_clean_region']:.2f} | {v['psnr_degraded_region']:.2f} | {v['prior']:.1f} |")
        for a in methods[2:]:
            v = summary[a]
            print(f"\n{a} > uniform on the clean region: {100 * v['higher_on_clean']:.0f} % "
                  f"(median {v['median_gain_clean_db']:+.3f} dB); no worse on the degraded region: "
                  f"{100 * v['no_worse_on_degraded']:.0f} % (median {v['median_gain_degraded_db']:+.3f} dB); "
                  f"both: {100 * v['both']:.0f} %")


def adaptive_name(normalise: str) -> str:
    """Row key of an adaptive run; "mean" keeps the historical name "adaptive"."""
    return "adaptive" if normalise == "mean" else f"adaptive_{normalise}"


def comparable_score_safe(prior, img):
    from iqa_map.core.map import comparable_score
    with torch.no_grad():
        return comparable_score(prior, img).mean()


if __name__ == "__main__":
    main()
