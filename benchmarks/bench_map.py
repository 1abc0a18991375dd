"""Does latent MAP beat pixel-space ascent? The issue-5 quality benchmark.

    python -m benchmarks.bench_map [--limit N] [--crop 128] [--methods pixel,builtin,bfcnn]

Each CBSD68 dev photo (centre crop) gets a seeded mix of blur, noise and JPEG.
Methods, all with the same prior, fidelity and iteration budget:
(a) the degraded input, (b) pixel-space gradient ascent, (c) latent MAP with the
built-in model, (d) latent MAP with the pretrained BF-CNN denoiser as diffusion
model. Scored by the optimised prior (native), held-out NR metrics that were not
optimised (CNNIQA-LIVE and PIQE when NIQE+BRISQUE are optimised), and PSNR/SSIM
against the clean original. Writes a markdown table to stdout and JSON to
out/bench/map.json (``--out``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def degrade(img: torch.Tensor, seed: int) -> torch.Tensor:
    """Seeded mix: blur sigma 0.5-1.5, noise std 3-12 /255, JPEG quality 20-60."""
    from iqa_map.core.priors.distortions import gaussian_blur, gaussian_noise, jpeg

    rng = np.random.default_rng(seed)
    x = gaussian_blur(img, float(rng.uniform(0.5, 1.5)))
    x = gaussian_noise(x, float(rng.uniform(3, 12)), seed=seed)
    return jpeg(x, int(rng.integers(20, 61)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="first N dev images (default all 68)")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--methods", default="pixel,builtin,bfcnn")
    ap.add_argument("--prior", default="builtin")
    ap.add_argument("--held-out", default="cnniqa,piqe")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--strength", type=float, default=0.35)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--optimizer", default="adam", choices=["adam", "momentum"],
                    help="the README figures were measured with adam (lr 0.003)")
    ap.add_argument("--lr", type=float, default=None, help="learning rate of every method (default: the optimiser's)")
    ap.add_argument("--latent-lr", type=float, default=None,
                    help="learning rate of the latent methods only (default: --lr), to compare at matched change")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "map.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from benchmarks.common import centre_crop, dev_files
    from iqa_map.core import map as M
    from iqa_map.core import priors
    from iqa_map.core.imageio import load_image
    from iqa_map.core.models import from_denoiser, load_builtin
    from iqa_map.core.models.archs import load_bfcnn

    files = dev_files(args.limit)
    prior = priors.load(args.prior)
    cnniqa_path = DATA / "weights" / "cnniqa_live_gray.safetensors"
    held = [priors.load(f"cnniqa:{cnniqa_path}") if n == "cnniqa" else priors.load(n)
            for n in args.held_out.split(",")]
    methods = args.methods.split(",")
    models = {"builtin": lambda: load_builtin(),
              "bfcnn": lambda: from_denoiser(load_bfcnn(DATA / "weights" / "bfcnn_color_bsd300_sigma0-100.safetensors"),
                                             0, 100 / 255, residual=True)}
    dens = {m: models[m]() for m in methods if m in models}
    settings = M.MapSettings(steps=args.steps, strength=args.strength, iterations=args.iterations, fidelity="nlpd",
                             optimizer=args.optimizer, lr=args.lr)
    latent_settings = settings if args.latent_lr is None else dataclasses.replace(settings, lr=args.latent_lr)
    rows = []
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        clean = centre_crop(load_image(f), args.crop)
        noisy = degrade(clean, seed=i)
        outs = {"input": noisy}
        for m in methods:
            res = (M.ascend_pixels(noisy, prior, settings) if m == "pixel"
                   else M.ascend(dens[m], noisy, prior, latent_settings))
            outs[m] = res.image
        row = {"image": f.name}
        with torch.no_grad():
            for name, img in outs.items():
                row[name] = {"prior": float(prior.native(img)[0]),
                             **{h_.name.split(":")[0]: float(h_.native(img)[0]) for h_ in held},
                             "psnr": M.psnr(img, clean), "ssim": M.ssim(img, clean)}
        rows.append(row)
        print(f"[{i + 1}/{len(files)}] {f.name} " + " ".join(
            f"{k}: psnr {v['psnr']:.2f}" for k, v in row.items() if k != "image"), file=sys.stderr, flush=True)

    held_names = [h_.name.split(":")[0] for h_ in held]
    lower = {h_.name.split(":")[0]: h_.lower_better for h_ in held}

    def better(a, b, key):  # is a better than b on key
        if key in ("psnr", "ssim"):
            return a[key] > b[key]
        return a[key] < b[key] if lower[key] else a[key] > b[key]

    summary = {"images": len(rows), "crop": args.crop, "settings": vars(args), "seconds": time.perf_counter() - t0,
               "mean": {}, "wins": {}}
    for name in ["input", *methods]:
        summary["mean"][name] = {k: float(np.mean([r[name][k] for r in rows]))
                                 for k in ["prior", *held_names, "psnr", "ssim"]}
    for m in [x for x in methods if x != "pixel"]:
        if "pixel" in methods:
            summary["wins"][f"{m} beats pixel"] = {k: float(np.mean([better(r[m], r["pixel"], k) for r in rows]))
                                                   for k in [*held_names, "psnr"]}
        summary["wins"][f"{m} improves on input"] = {k: float(np.mean([better(r[m], r["input"], k) for r in rows]))
                                                     for k in [*held_names, "psnr"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    cols = ["prior", *held_names, "psnr", "ssim"]
    print(f"| method | {prior.name} (native) | " + " | ".join(f"{h} (held out)" for h in held_names)
          + " | PSNR vs clean | SSIM vs clean |")
    print("|---" * (len(cols) + 1) + "|")
    for name, v in summary["mean"].items():
        print(f"| {name} | " + " | ".join(f"{v[k]:.3f}" for k in cols) + " |")
    print()
    print("| comparison | " + " | ".join(f"{k}" for k in [*held_names, "psnr"]) + " |")
    print("|---" * (len(held_names) + 2) + "|")
    for name, v in summary["wins"].items():
        print(f"| {name} | " + " | ".join(f"{100 * v[k]:.0f} %" for k in [*held_names, "psnr"]) + " |")


if __name__ == "__main__":
    main()
