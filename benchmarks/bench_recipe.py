"""Do the defaults match the public recipe at a fifth of its cost? The issue-5 cost benchmark.

    python -m benchmarks.bench_recipe [--limit 6] [--crop 96] [--threads 1]
        [--candidates "10/0.7/40/adam/0.006,20/1/24/momentum/1.5/cosine"] [--prefixes 12,20]
        [--reuse-recipe out/bench/recipe.json] [--out out/bench/recipe.json]

Each CBSD68 dev photo (centre crop) gets the same seeded blur + noise + JPEG mix
as ``bench_map``. Every setting optimises the built-in fused prior (NIQE +
BRISQUE, calibrated 0-100) with the built-in model and NLPD fidelity. The
reference is the public recipe of METHOD.md section 5: full inversion
(strength 1), 50 EDICT steps, 50 iterations, the momentum update (grad x 0.5,
clip 1e-3, momentum 0.9, lr 2) and NLPD with lambda 20. Candidates are given as
``steps/strength/iterations/optimizer/lr[/lambda][/schedule]`` (``-`` = the
default; schedule ``constant`` or ``cosine``); ``--recipe`` takes the same format
(default ``50/1/50/momentum/2``).

Per setting: mean prior gain (calibrated score of the output minus that of the
input), mean PSNR of the output against the input, denoiser evaluations (as
counted by ``ascend``), wall seconds, and the share of images on which the
setting reaches at least the recipe's gain at at least the recipe's PSNR vs
input. A candidate meets the target when its mean gain >= the recipe's, its mean
PSNR vs input >= the recipe's and its evaluations <= 20 % of the recipe's.
Writes a markdown table to stdout and JSON (rows written after every image) to
out/bench/recipe.json (``--out``). ``--reuse-recipe`` takes the recipe's rows
from an earlier JSON with the same images and crop, so that only the
candidates are run. ``--prefixes 12,20`` also reports every candidate stopped
after 12 and 20 iterations, read off its own longer run (the loop is
deterministic and keeps the best objective so far, so a shorter run is exactly
the prefix of a longer one; its seconds are pro rata). Denoiser evaluations are
network calls as ``ascend`` counts them: ``2 * steps`` for the inversion and
``4 * steps`` per evaluated iterate (sample + reversible backward), so the recipe
costs 100 + 51 * 200 = 10,300.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from iqa_map.core.map.optim import LR_SCHEDULES

from .bench_map import REPO, degrade

#: The demo setting, the pre-benchmark MapSettings defaults, the recommended Adam setting, and the defaults (the
#: recipe's update and step, full inversion, 20 steps, 20 iterations).
DEFAULT_CANDIDATES = "4/0.35/8/adam/-,10/0.5/20/adam/-,10/0.7/40/adam/0.006,20/1/20/momentum/-"


def parse_candidate(spec: str) -> dict:
    parts = spec.strip().split("/")
    schedule = parts.pop() if parts and parts[-1] in LR_SCHEDULES else None
    if len(parts) not in (5, 6):
        raise ValueError(f"candidate '{spec}': expected steps/strength/iterations/optimizer/lr[/lambda][/schedule]")
    opt = lambda v: None if v in ("-", "") else float(v)
    cfg = {"steps": int(parts[0]), "strength": float(parts[1]), "iterations": int(parts[2]), "optimizer": parts[3],
           "lr": opt(parts[4]), "fidelity_weight": opt(parts[5]) if len(parts) == 6 else None}
    if schedule is not None:  # (absent from files written before the option)
        cfg["lr_schedule"] = schedule
    return cfg


def label(cfg: dict) -> str:
    lr = "default" if cfg["lr"] is None else f"{cfg['lr']:g}"
    lam = "" if cfg.get("fidelity_weight") is None else f", lambda {cfg['fidelity_weight']:g}"
    sched = "" if cfg.get("lr_schedule", "constant") == "constant" else f" {cfg['lr_schedule']}"
    return (f"{cfg['steps']} steps, strength {cfg['strength']:g}, {cfg['iterations']} it, "
            f"{cfg['optimizer']} lr {lr}{sched}{lam}")


def main(argv=None) -> None:
    from benchmarks.common import UNITS_BEFORE_OPTION, add_units_option

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=6, help="first N dev images (default 6)")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--prior", default="builtin")
    ap.add_argument("--candidates", default=DEFAULT_CANDIDATES,
                    help="comma-separated steps/strength/iterations/optimizer/lr[/lambda][/schedule]; '-' = default")
    ap.add_argument("--recipe", default="50/1/50/momentum/2", help="the reference setting (same format)")
    ap.add_argument("--reuse-recipe", default=None, help="JSON of an earlier run: take the recipe rows from it")
    ap.add_argument("--prefixes", default="", type=lambda v: [int(k) for k in v.split(",") if k.strip()],
                    help="also report each candidate stopped after these iterations (read off its own run: the "
                         "loop is deterministic, so a shorter run is exactly its prefix)")
    add_units_option(ap, "every setting's, the recipe's included (its lr 2 is in vp units)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "recipe.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from benchmarks.common import centre_crop, dev_files
    from iqa_map.core import map as M
    from iqa_map.core import priors
    from iqa_map.core.io.imageio import load_image
    from iqa_map.core.map.pipeline import enhance, load_model

    files = dev_files(args.limit)
    prior = priors.load(args.prior)
    model = load_model("builtin", device="cpu")
    settings = {"recipe": parse_candidate(args.recipe), **{f"c{i + 1}": parse_candidate(s)
                                     for i, s in enumerate(args.candidates.split(",")) if s.strip()}}
    reused = {}
    if args.reuse_recipe:
        old = json.loads(Path(args.reuse_recipe).read_text())
        if old["summary"]["crop"] != args.crop:
            sys.exit(f"--reuse-recipe: crop {old['summary']['crop']} != {args.crop}")
        old_units = old["summary"].get("units", UNITS_BEFORE_OPTION)
        if old_units != args.units:
            sys.exit(f"--reuse-recipe: its recipe ran in {old_units} units, not {args.units}")
        reused = {r["image"]: r["recipe"] for r in old["rows"] if "recipe" in r}
    prefixes = [(name, k) for k in args.prefixes for name, cfg in list(settings.items())
                if name != "recipe" and k < cfg["iterations"]]
    for name, k in prefixes:
        settings[f"{name}@{k}"] = {**settings[name], "iterations": k}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def score(img):
        with torch.no_grad():
            return float(M.comparable_score(prior, img).mean())

    rows, t0 = [], time.perf_counter()
    summary = {}
    for i, f in enumerate(files):
        clean = centre_crop(load_image(f), args.crop)
        noisy = degrade(clean, seed=i)
        s_in = score(noisy)
        row = {"image": f.name, "input_score": s_in, "input_psnr_vs_clean": M.psnr(noisy, clean)}
        for name, cfg in settings.items():
            if "@" in name:  # derived from its full run below
                continue
            if name == "recipe" and f.name in reused:
                row[name] = reused[f.name]
                continue
            t, trace = time.perf_counter(), []

            def record(info, trace=trace, s_in=s_in, noisy=noisy, clean=clean):  # every iterate, for --prefixes
                trace.append({"gain": score(info["image"]) - s_in, "psnr_vs_input": M.psnr(info["image"], noisy),
                              "psnr_vs_clean": M.psnr(info["image"], clean)})

            res = enhance(noisy, model=model, prior=prior, settings=M.MapSettings(fidelity="nlpd", units=args.units,
                                                                                   **cfg),
                          callback=record if args.prefixes else None)
            rep = res.report
            row[name] = {"gain": score(res.image) - s_in, "psnr_vs_input": rep["psnr_vs_input"],
                         "psnr_vs_clean": M.psnr(res.image, clean), "evals": rep["denoiser_evals"],
                         "seconds": time.perf_counter() - t, "best_iteration": rep["best_iteration"],
                         "iterations_run": rep["iterations_run"], "events": rep["events"],
                         "history": [{k: e[k] for k in ("iteration", "objective", "score", "fidelity")}
                                     for e in rep["history"]]}
            if trace and len(trace) == len(rep["history"]):  # (the callback skips non-finite iterates)
                for e, tr in zip(row[name]["history"], trace):
                    e.update(tr)
            print(f"[{i + 1}/{len(files)}] {f.name} {name}: gain {row[name]['gain']:+.2f} "
                  f"psnr vs input {row[name]['psnr_vs_input']:.2f} evals {row[name]['evals']} "
                  f"({row[name]['seconds']:.0f} s)", file=sys.stderr, flush=True)
        for name, k in prefixes:
            row[f"{name}@{k}"] = truncated(row[name], settings[name], k)
        rows.append(row)
        summary = summarise(rows, settings, args, time.perf_counter() - t0)
        out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    print_table(summary, settings)


def truncated(res: dict, cfg: dict, k: int) -> dict:
    """The result the same candidate gives with ``iterations=k``: the best objective among iterates 0..k."""
    hist = res["history"][: k + 1]
    best = max(range(len(hist)), key=lambda i: (hist[i]["objective"], -i))  # first maximum, as the loop keeps
    per_iter = res["evals"] - 4 * cfg["steps"] * (len(res["history"]) - len(hist))
    return {"gain": hist[best]["gain"], "psnr_vs_input": hist[best]["psnr_vs_input"],
            "psnr_vs_clean": hist[best]["psnr_vs_clean"],
            "evals": per_iter, "seconds": res["seconds"] * len(hist) / len(res["history"]), "best_iteration": best,
            "derived": True}


def summarise(rows, settings, args, seconds) -> dict:
    rec = [r["recipe"] for r in rows]
    summary = {"images": len(rows), "crop": args.crop, "prior": args.prior, "threads": args.threads,
               "units": args.units,
               "seconds": seconds, "settings": settings, "mean": {}}
    r_evals = float(np.mean([x["evals"] for x in rec]))
    r_gain = float(np.mean([x["gain"] for x in rec]))
    r_psnr = float(np.mean([x["psnr_vs_input"] for x in rec]))
    for name in settings:
        v = [r[name] for r in rows]
        m = {k: float(np.mean([x[k] for x in v])) for k in ("gain", "psnr_vs_input", "psnr_vs_clean", "evals", "seconds")}
        m["evals_share"] = m["evals"] / r_evals
        m["wins"] = float(np.mean([x["gain"] >= y["gain"] and x["psnr_vs_input"] >= y["psnr_vs_input"]
                                   for x, y in zip(v, rec)]))
        m["meets_target"] = bool(m["gain"] >= r_gain and m["psnr_vs_input"] >= r_psnr and m["evals_share"] <= 0.2)
        summary["mean"][name] = m
    summary["mean_input_score"] = float(np.mean([r["input_score"] for r in rows]))
    summary["mean_input_psnr_vs_clean"] = float(np.mean([r["input_psnr_vs_clean"] for r in rows]))
    return summary


def print_table(summary, settings) -> None:
    print(f"{summary['images']} images, {summary['crop']}x{summary['crop']}, input score "
          f"{summary['mean_input_score']:.1f}, input PSNR vs clean {summary['mean_input_psnr_vs_clean']:.2f} dB, "
          f"{summary['seconds'] / 60:.0f} min")
    print("| setting | prior gain | PSNR vs input (dB) | PSNR vs clean (dB) | denoiser evals | share of recipe's evals "
          "| s / image | images with gain and PSNR >= recipe | meets target |")
    print("|---" * 9 + "|")
    for name, m in summary["mean"].items():
        lab = "reference (public recipe): " + label(settings[name]) if name == "recipe" else f"{name}: {label(settings[name])}"
        print(f"| {lab} | {m['gain']:+.2f} | {m['psnr_vs_input']:.2f} | {m['psnr_vs_clean']:.2f} | {m['evals']:.0f} "
              f"| {100 * m['evals_share']:.1f} % | {m['seconds']:.0f} | "
              + ("-" if name == "recipe" else f"{100 * m['wins']:.0f} %") + " | "
              + ("-" if name == "recipe" else ("yes" if m["meets_target"] else "no")) + " |")


if __name__ == "__main__":
    main()
