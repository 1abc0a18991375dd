"""Per-call cost of the denoiser's two hot calls, eps and eps + VJP, in each execution mode.

    python -m benchmarks.bench_unet_calls [--scale sd15] [--dtype fp16] [--compile]

SD 1.5's UNet (random weights, ``benchmarks.random_sd``) wrapped as the product wraps it
(``from_diffusers``), at batch 1 on a 64x64 latent (a 512x512 photo), float64 latent pair:
eager, CUDA graphs (``Denoiser.use_cuda_graphs``, the product's default on CUDA), either with a
channels-last UNet, and optionally ``torch.compile`` (inductor, default and reduce-overhead
modes) with its compile time. Milliseconds are medians of ``--repeat`` synchronised calls after
warm-up. Writes JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from iqa_map.core.models import from_diffusers
from iqa_map.core.models.loading import DTYPES

from .random_sd import SCALES, sd_scheduler, sd_unet

REPO = Path(__file__).resolve().parents[1]


def median_ms(fn, device: str, repeat: int, warm: int = 3) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def measure(den, x, cond, device, repeat) -> dict:
    g = torch.randn_like(x)
    with torch.no_grad():
        fwd = median_ms(lambda: den.eps(x, 3.0, cond), device, repeat)
    return {"eps_ms": fwd, "eps_vjp_ms": median_ms(lambda: den.eps_and_vjp(x, 3.0, cond, g), device, repeat)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=SCALES, default="sd15")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--compile", action="store_true", help="also torch.compile (minutes of compiling)")
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "unet_calls.json"))
    args = ap.parse_args(argv)
    dev, dt = args.device, DTYPES[args.dtype]
    side = 64 if args.scale == "sd15" else 8
    ctx_dim = 768 if args.scale == "sd15" else 32
    cond = torch.zeros(1, 77 if args.scale == "sd15" else 8, ctx_dim, device=dev, dtype=dt)
    x = torch.randn(1, 4, side, side, device=dev, dtype=torch.float64)
    unet = sd_unet(args.scale).to(dev, dt)
    rows = []
    res = {"scale": args.scale, "dtype": args.dtype, "device": dev, "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name() if dev == "cuda" else None, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def add(r):  # written after every row: a run stopped by its time limit keeps what it measured
        rows.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
        out.write_text(json.dumps(res, indent=2))

    def row(name, den, **extra):
        t = time.perf_counter()
        r = {"mode": name, **measure(den, x, cond, dev, args.repeat), **extra}
        add({**r, "seconds_incl_warmup": time.perf_counter() - t})

    for cl in (False, True):
        unet.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        suffix = "-cl" if cl else ""
        row("eager" + suffix, from_diffusers(unet, sd_scheduler()))
        if dev == "cuda":
            den = from_diffusers(unet, sd_scheduler()).use_cuda_graphs()
            row("graphs" + suffix, den, graph_failed=den.accel.failed)
    unet.to(memory_format=torch.contiguous_format)
    if args.compile:
        for mode in ("reduce-overhead", "default"):
            try:
                torch._dynamo.reset()
                den = from_diffusers(torch.compile(unet, mode=mode), sd_scheduler())
                t = time.perf_counter()
                measure(den, x, cond, dev, 1)
                row(f"compile-{mode}", den, compile_seconds=time.perf_counter() - t)
            except Exception as e:  # noqa: BLE001 - report and go on: compile support varies
                add({"mode": f"compile-{mode}", "error": f"{type(e).__name__}: {str(e)[:300]}"})
    print("| mode | eps | eps + VJP |\n|---|---|---|")
    for r in rows:
        if "error" not in r:
            print(f"| {r['mode']} | {r['eps_ms']:.2f} ms | {r['eps_vjp_ms']:.2f} ms |")


if __name__ == "__main__":
    main()
