"""Built-in denoiser vs the pretrained reference (BF-CNN): Gaussian denoising PSNR and CPU speed.

    python -m benchmarks.bench_builtin [--limit N] [--levels 15,25,50] [--threads T]

Protocol: every image of ``../shared/data/images/dev`` (CBSD68, 68 photos),
sorted by name, in [0, 1]; for each noise std (of 255) one generator seeded
with ``--seed`` (0) draws the noise of all images in order, the same noise for
both models; no clipping of the noisy input; the denoised output is clipped to
[0, 1] for the PSNR only; PSNR is averaged over images. Both models go through
the same core ``Denoiser`` interface on [-1, 1] (sigma = 2 * std / 255).
Speed: one forward pass on a 512x512 image, median of ``--repeats`` after a
warm-up, both models in the same process with the same thread count.

Writes a markdown table to stdout and JSON to ``out/bench/builtin.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BFCNN_WEIGHTS = DATA / "weights" / "bfcnn_color_bsd300_sigma0-100.safetensors"
# BF-CNN on CBSD68, seed 0, as measured when the acceptance targets were set (issue #4).
REFERENCE_PSNR = {15: 33.84, 25: 31.22, 50: 28.00}
MAX_PSNR_GAP_DB = 1.5
MAX_TIME_RATIO = 0.5


def load_dev(limit=None):
    from PIL import Image

    folder = DATA / "images" / "dev"
    if not folder.is_dir():
        sys.exit(f"dev images not found at {folder} (the benchmark needs ../shared/data next to the repository)")
    files = sorted(folder.glob("*.png"))[:limit]
    return [(p.name, torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)[None].double() / 255)
            for p in files]


def psnr(out01: torch.Tensor, ref01: torch.Tensor) -> float:
    mse = (out01.double().clamp(0, 1) - ref01.double()).pow(2).mean().item()
    return 10 * np.log10(1.0 / mse)


def denoise01(den, y01: torch.Tensor, std255: float) -> torch.Tensor:
    """Denoise a [0, 1] image through the core interface (images and sigma mapped to [-1, 1])."""
    with torch.inference_mode():
        out = den(2 * y01.float() - 1, 2 * std255 / 255)
    return (out + 1) / 2


def time_forward(den, size: int, repeats: int) -> float:
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        den(x, 0.2)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            den(x, 0.2)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="15,25,50", help="noise stds on the 0..255 scale")
    ap.add_argument("--limit", type=int, help="only the first N dev images (quick checks; the table needs all 68)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch CPU threads for both models (default: torch's)")
    ap.add_argument("--size", type=int, default=512, help="side of the timing image")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights-dir", help="built-in weights folder (default: the shipped ones)")
    ap.add_argument("--no-reference", action="store_true", help="skip BF-CNN (quick checks only)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "builtin.json"))
    a = ap.parse_args(argv)

    from iqa_map.core.models.archs import load_bfcnn
    from iqa_map.core.models.builtin import count_parameters, load_builtin, macs_per_pixel
    from iqa_map.core.models.network import from_denoiser

    if a.threads:
        torch.set_num_threads(a.threads)
    levels = [int(v) for v in a.levels.split(",")]
    images = load_dev(a.limit)
    models = {"builtin": load_builtin(weights_dir=a.weights_dir)}
    if not a.no_reference:
        if not BFCNN_WEIGHTS.is_file():
            sys.exit(f"reference weights not found: {BFCNN_WEIGHTS}")
        models["bfcnn"] = from_denoiser(load_bfcnn(BFCNN_WEIGHTS), 0, 100 / 255, residual=True)

    res = {name: {} for name in ["noisy", *models]}
    t_start = time.time()
    for std in levels:
        gen = torch.Generator().manual_seed(a.seed)
        scores = {name: [] for name in res}
        for _, x in images:
            y = x + (std / 255) * torch.randn(x.shape, generator=gen, dtype=torch.float64)
            scores["noisy"].append(psnr(y, x))
            for name, den in models.items():
                scores[name].append(psnr(denoise01(den, y, std), x))
        for name in res:
            res[name][std] = float(np.mean(scores[name]))
        print(f"# std {std}: " + ", ".join(f"{n} {res[n][std]:.2f}" for n in res) +
              f" ({time.time() - t_start:.0f} s)", file=sys.stderr)

    timing = {name: time_forward(den, a.size, a.repeats) for name, den in models.items()}
    net = models["builtin"].net
    report = {
        "images": len(images), "seed": a.seed, "levels": levels, "psnr": res,
        "seconds_per_forward": timing, "timing_size": a.size, "threads": torch.get_num_threads(),
        "builtin_parameters": count_parameters(net), "builtin_macs_per_pixel": macs_per_pixel(net.float()),
        "builtin_config": models["builtin"].config,
        "torch": torch.__version__, "processor": platform.processor() or platform.machine(),
    }
    lines = ["| noise std (/255) | noisy | built-in | BF-CNN (reference) | built-in - BF-CNN | target (>= BF-CNN - 1.5) |",
             "|---|---|---|---|---|---|"]
    if "bfcnn" in models:
        gaps = {std: res["builtin"][std] - res["bfcnn"][std] for std in levels}
        ratio = timing["builtin"] / timing["bfcnn"]
        report["targets"] = {
            "psnr_gap_db": gaps, "psnr_met": {std: gaps[std] >= -MAX_PSNR_GAP_DB for std in levels},
            "time_ratio": ratio, "time_met": ratio <= MAX_TIME_RATIO,
        }
        for std in levels:
            ok = "met" if gaps[std] >= -MAX_PSNR_GAP_DB else f"missed by {-MAX_PSNR_GAP_DB - gaps[std]:.2f} dB"
            lines.append(f"| {std} | {res['noisy'][std]:.2f} | {res['builtin'][std]:.2f} | {res['bfcnn'][std]:.2f} "
                         f"| {gaps[std]:+.2f} | {ok} |")
        lines += ["", f"Forward pass, {a.size}x{a.size}, CPU, {torch.get_num_threads()} thread(s): built-in "
                      f"{timing['builtin']:.3f} s, BF-CNN {timing['bfcnn']:.3f} s, ratio {ratio:.3f} "
                      f"(target <= {MAX_TIME_RATIO}: {'met' if ratio <= MAX_TIME_RATIO else 'missed'})"]
    else:
        for std in levels:
            lines.append(f"| {std} | {res['noisy'][std]:.2f} | {res['builtin'][std]:.2f} | - | - | - |")
        lines += ["", f"Forward pass, {a.size}x{a.size}: built-in {timing['builtin']:.3f} s"]
    lines.insert(0, f"Gaussian denoising on CBSD68 ({len(images)} images, seed {a.seed}), mean PSNR in dB\n")
    print("\n".join(lines))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
