"""The few-step preset's learning rate on a real denoiser: 4 EDICT steps, momentum, lr 0.02 / 0.2 / 2.

    python -m benchmarks.bench_fewstep [--limit 4] [--crop 96] [--lrs 0.02,0.2,2] [--iterations 20]
        [--prefixes 10] [--threads 1] [--out out/bench/fewstep.json] [--images out/bench/fewstep]

Each CBSD68 dev photo (centre crop) gets the seeded blur + noise + JPEG mix of ``bench_map``; the pretrained
built-in model (``load_model("builtin")``, the real denoiser) inverts it at the few-step preset's schedule
(core.map.settings.FEW_STEP: 4 steps, strength 1) and the momentum ascent optimises the built-in fused prior with
NLPD fidelity at each learning rate. Per setting: mean prior gain (calibrated score of the output minus the
input's), PSNR of the output against the input and against the clean photo. A shorter run is read off the longer
one's iterates (``--prefixes``: the loop is deterministic and keeps the best objective so far). The outputs are
written as PNGs (``--images``; input, clean and one per setting) so that the choice can be judged by eye.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .bench_map import REPO, degrade


def best_prefix(trace: list, k: int) -> dict:
    """The iterate the loop returns when stopped after ``k`` iterations: the first with the best objective."""
    hist = trace[: k + 1]
    return hist[max(range(len(hist)), key=lambda i: (hist[i]["objective"], -i))]


def main(argv=None) -> None:
    from benchmarks.common import centre_crop, dev_files
    from iqa_map.core import map as M
    from iqa_map.core import priors
    from iqa_map.core.io.imageio import load_image, save_image
    from iqa_map.core.map.pipeline import enhance, load_model
    from iqa_map.core.map.settings import FEW_STEP

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=4, help="first N dev images (default 4)")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--prior", default="builtin")
    ap.add_argument("--lrs", default="0.02,0.2,2", type=lambda v: [float(x) for x in v.split(",")])
    ap.add_argument("--iterations", type=int, default=FEW_STEP["iterations"])
    ap.add_argument("--prefixes", default="10", type=lambda v: [int(k) for k in v.split(",") if k.strip()])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "fewstep.json"))
    ap.add_argument("--images", default=str(REPO / "out" / "bench" / "fewstep"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    prior = priors.load(args.prior)
    model = load_model("builtin", device="cpu")
    stops = sorted({*[k for k in args.prefixes if k < args.iterations], args.iterations})
    images = Path(args.images)
    images.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def score(img):
        with torch.no_grad():
            return float(M.comparable_score(prior, img).mean())

    rows, t0 = [], time.perf_counter()
    for i, f in enumerate(dev_files(args.limit)):
        clean = centre_crop(load_image(f), args.crop)
        noisy = degrade(clean, seed=i)
        s_in = score(noisy)
        save_image(noisy, images / f"{f.stem}_input.png")
        save_image(clean, images / f"{f.stem}_clean.png")
        row = {"image": f.name, "input_score": s_in, "input_psnr_vs_clean": M.psnr(noisy, clean), "runs": {}}
        for lr in args.lrs:
            trace, t = [], time.perf_counter()

            def record(info, trace=trace):
                img = info["image"].detach().clone()
                trace.append({"objective": float(info["objective"]), "gain": score(img) - s_in,
                              "psnr_vs_input": M.psnr(img, noisy), "psnr_vs_clean": M.psnr(img, clean),
                              "image": img})

            settings = M.MapSettings(steps=FEW_STEP["steps"], strength=FEW_STEP["strength"], iterations=args.iterations,
                                     optimizer=FEW_STEP["optimizer"], lr=lr, fidelity="nlpd")
            res = enhance(noisy, model=model, prior=prior, settings=settings, callback=record)
            for k in stops:
                b = best_prefix(trace, k)
                save_image(b["image"], images / f"{f.stem}_lr{lr:g}_it{k}.png")
                row["runs"][f"{lr:g}@{k}"] = {key: v for key, v in b.items() if key != "image"}
                row["runs"][f"{lr:g}@{k}"]["best_iteration"] = trace.index(b)
            row["runs"][f"{lr:g}@{args.iterations}"]["seconds"] = time.perf_counter() - t
            row["runs"][f"{lr:g}@{args.iterations}"]["evals"] = res.report["denoiser_evals"]
            print(f"[{i + 1}] {f.name} lr {lr:g}: " + ", ".join(
                f"{k} it gain {row['runs'][f'{lr:g}@{k}']['gain']:+.2f} psnr {row['runs'][f'{lr:g}@{k}']['psnr_vs_input']:.1f}"
                for k in stops), file=sys.stderr, flush=True)
        rows.append(row)
        summary = {"images": len(rows), "crop": args.crop, "prior": args.prior, "steps": FEW_STEP["steps"],
                   "seconds": time.perf_counter() - t0, "mean": {
                       key: {m: float(np.mean([r["runs"][key][m] for r in rows]))
                             for m in ("gain", "psnr_vs_input", "psnr_vs_clean")} for key in rows[0]["runs"]},
                   "mean_input_score": float(np.mean([r["input_score"] for r in rows])),
                   "mean_input_psnr_vs_clean": float(np.mean([r["input_psnr_vs_clean"] for r in rows]))}
        out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    print(f"{summary['images']} photos, {args.crop} px crops, {FEW_STEP['steps']} steps, prior {args.prior}; input: "
          f"score {summary['mean_input_score']:.2f}, PSNR vs clean {summary['mean_input_psnr_vs_clean']:.2f} dB\n")
    print("| lr | iterations | prior gain | PSNR vs input (dB) | PSNR vs clean (dB) |\n| --- | --- | --- | --- | --- |")
    for key, m in summary["mean"].items():
        lr, k = key.split("@")
        print(f"| {lr} | {k} | {m['gain']:+.2f} | {m['psnr_vs_input']:.2f} | {m['psnr_vs_clean']:.2f} |")


if __name__ == "__main__":
    main()
