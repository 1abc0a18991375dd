"""Cost of one gradient through EDICT: reversible (constant memory) vs plain autograd.

    python -m benchmarks.bench_edict [--size 128] [--device cpu] [--threads 2]

Model: the pretrained bias-free CNN denoiser from ../shared/data/weights (a real
natural-image prior), or ``--model sd`` / ``sd15`` for a random-weight SD-1.5-architecture
latent UNet at reduced / full width (no weights needed). Each memory figure comes from a fresh process:
peak RSS growth on CPU, ``torch.cuda.max_memory_allocated`` growth on CUDA,
both measured from after the model and inputs are in memory. Times are the
minimum of ``--repeat`` runs, all configurations interleaved in one process.
Writes a markdown table to stdout and JSON to out/bench/edict.json.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BFCNN = REPO.parent / "shared" / "data" / "weights" / "bfcnn_color_bsd300_sigma0-100.safetensors"


def build(model: str, size: int, device: str):
    from iqa_map.core.models import from_denoiser, from_diffusers

    g = torch.Generator().manual_seed(0)
    if model == "bfcnn":
        from iqa_map.core.models.archs import load_bfcnn

        if not BFCNN.exists():
            sys.exit(f"pretrained denoiser not found at {BFCNN}; use --model sd")
        den = from_denoiser(load_bfcnn(BFCNN, device=device), 0, 100 / 255, residual=True)
        x = (torch.rand(1, 3, size, size, generator=g) * 2 - 1).to(device)
        return den, x, None
    from diffusers import UNet2DConditionModel

    from .random_sd import sd_scheduler, sd_unet

    if model == "sd15":  # Stable Diffusion 1.5's full architecture
        unet, dim = sd_unet("sd15").to(device), 768
    else:
        torch.manual_seed(0)
        unet = UNet2DConditionModel(  # SD 1.5 layout at reduced width
            sample_size=size // 8, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(64, 128, 256, 256), cross_attention_dim=256, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        ).to(device).eval().requires_grad_(False)
        dim = 256
    x = torch.randn(1, 4, size // 8, size // 8, generator=g).to(device)
    return from_diffusers(unet, sd_scheduler()), x, torch.randn(1, 77, dim, generator=g).to(device)


def one_gradient(den, pair, sig, cond, mode):
    from iqa_map.core.sampling import edict

    if mode == "none":
        return edict.sample(den, pair, sig, cond=cond, grad=None)
    return edict.value_and_grad(den, pair, sig, lambda a, b: (a * a).mean() + b.mean(), cond=cond, grad=mode)


rss_growth: dict = {}


def measure_memory(args, mode: str, steps: int) -> int:
    """Peak extra bytes of one call, in a fresh process."""
    cmd = [sys.executable, "-m", "benchmarks.bench_edict", "--child", mode, str(steps),
           "--model", args.model, "--size", str(args.size), "--device", args.device, "--threads", str(args.threads)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    lines = out.stdout.strip().splitlines()
    if args.device != "cuda":
        rss_growth[f"{mode}@{steps}"] = int(lines[-2])
    return None if lines[-1] == "oom" else int(lines[-1])


def child(args, mode: str, steps: int) -> None:
    from iqa_map.core.sampling import edict

    den, x, cond = build(args.model, args.size, args.device)
    sig = den.sigmas(steps)
    pair = edict.invert(den, x, den.sigmas(2), cond=cond)  # warm-up, fills caches
    pair = tuple(p.to(x.dtype) for p in pair)
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        try:
            one_gradient(den, pair, sig, cond, mode)
        except torch.cuda.OutOfMemoryError:
            print("oom")  # plain autograd at SD scale: the point of the reversible gradient
            return
        torch.cuda.synchronize()
        print(torch.cuda.max_memory_allocated() - base)
        return
    # CPU: peak of live tensor bytes from the profiler's allocation trace (the CPU analogue of
    # max_memory_allocated; peak RSS also counts allocator caching and is printed alongside).
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        one_gradient(den, pair, sig, cond, mode)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    with tempfile.TemporaryDirectory() as d:
        prof.export_chrome_trace(f"{d}/trace.json")
        events = json.load(open(f"{d}/trace.json"))["traceEvents"]
    peak = max((e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"), default=0)
    print(rss)
    print(peak)


def timed(den, pair, sig, cond, mode, device) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    one_gradient(den, pair, sig, cond, mode)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["bfcnn", "sd", "sd15"], default="bfcnn",
                    help="sd: SD 1.5 layout at reduced width; sd15: its full architecture (both random weights)")
    ap.add_argument("--size", type=int, default=128, help="image side in pixels")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--time-steps", type=int, default=10, help="steps for the time ratio")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "STEPS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args, args.child[0], int(args.child[1]))

    from iqa_map.core.sampling import edict

    mem = {}
    for mode, steps in [("reversible", 5), ("reversible", 50), ("autograd", 5), ("autograd", 20)]:
        mem[f"{mode}@{steps}"] = measure_memory(args, mode, steps)
        print(f"  memory {mode:10s} {steps:2d} steps: {_mib(mem[f'{mode}@{steps}'])} MiB", file=sys.stderr)

    den, x, cond = build(args.model, args.size, args.device)
    sig = den.sigmas(args.time_steps)
    pair = tuple(p.to(x.dtype) for p in edict.invert(den, x, sig, cond=cond))
    times = {"none": [], "reversible": [], "autograd": []}
    for _ in range(args.repeat):
        for mode in times:
            try:
                times[mode].append(timed(den, pair, sig, cond, mode, args.device))
            except torch.cuda.OutOfMemoryError:
                times[mode].append(math.inf)  # autograd at SD scale
                torch.cuda.empty_cache()
    best = {k: min(v) for k, v in times.items()}
    res = {
        "model": args.model, "size": args.size, "device": args.device, "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "torch": torch.__version__,
        "peak_extra_bytes": mem,
        "memory_measure": "max_memory_allocated growth" if args.device == "cuda" else
                          "peak live tensor bytes (torch.profiler allocation trace)",
        "peak_rss_growth_bytes": rss_growth or None,
        "memory_ratio_reversible_50_vs_5": _ratio(mem["reversible@50"], mem["reversible@5"]),
        "memory_ratio_autograd_20_vs_5": _ratio(mem["autograd@20"], mem["autograd@5"]),
        "time_steps": args.time_steps, "seconds": best,
        "time_ratio_reversible_vs_plain": best["reversible"] / best["none"],
        "time_ratio_autograd_vs_plain": best["autograd"] / best["none"],
    }
    out = REPO / "out" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "edict.json").write_text(json.dumps(res, indent=2))
    mib = {k: _mib(v) for k, v in mem.items()}
    ratio = {k: "" if v is None else f" (x{v:.2f})" for k, v in res.items() if k.startswith("memory_ratio")}
    print(f"| model | device | size | reversible 5 / 50 steps (MiB) | autograd 5 / 20 steps (MiB) "
          f"| plain EDICT pass ({args.time_steps} steps) | reversible gradient | ratio | autograd ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {res['gpu'] or 'CPU, %d threads' % args.threads} | {args.size} "
          f"| {mib['reversible@5']} / {mib['reversible@50']}{ratio['memory_ratio_reversible_50_vs_5']} "
          f"| {mib['autograd@5']} / {mib['autograd@20']}{ratio['memory_ratio_autograd_20_vs_5']} "
          f"| {best['none']:.2f} s | {best['reversible']:.2f} s | {res['time_ratio_reversible_vs_plain']:.2f}x "
          f"| {res['time_ratio_autograd_vs_plain']:.2f}x |")


def _mib(v) -> str:
    return "out of memory" if v is None else f"{v / 2**20:.0f}"


def _ratio(a, b):
    return None if a is None or b is None else a / max(b, 1)


if __name__ == "__main__":
    main()
