"""Latent MAP ascent on Stable Diffusion 1.5's architecture: time, memory and evaluations on a GPU.

    python -m benchmarks.bench_sd [--size 512] [--dtypes fp16,fp32] [--steps 20] [--iterations 20]

No SD weights exist offline, so the pipeline is SD 1.5's exact architecture
with random weights (``benchmarks.random_sd``), saved as a diffusers folder and
loaded through the product's own loader (``load_model``), exactly as a user's
checkpoint would be. Cost does not depend on the weights; quality does, so
nothing here is about quality. The photo is scikit-image's ``chelsea`` resized
to ``--size`` and degraded like the demo's.

For each dtype and variant (eager network calls or CUDA graphs, each optionally
channels-last): load time, one full :func:`iqa_map.core.map.ascend` at the
library defaults (EDICT inversion, then ``--iterations`` gradient steps through
the reversible sampler and the VAE decoder, prior and fidelity), its
seconds per iteration, denoiser evaluations, peak GPU memory
(``max_memory_allocated``) and the inversion error. Then the peak memory of a
single iteration at 5 and 50 steps, to show the gradient's memory does not
grow with the number of steps. Writes JSON to ``--out`` and a markdown table.
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from iqa_map.core.models.loading import DTYPES

REPO = Path(__file__).resolve().parents[1]
# Network-call variants: eager, CUDA graphs (the product's default on CUDA), each optionally channels-last.
VARIANTS = ("eager", "graphs", "eager-cl", "graphs-cl")


def photo(size: int) -> torch.Tensor:
    from iqa_map.cli.demo import degrade, sample_photo

    img = F.interpolate(sample_photo(), size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
    return degrade(img)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def one_run(model, img, prior, settings, device: str, label: str) -> dict:
    from iqa_map.core.map.pipeline import enhance
    from iqa_map.core.map.settings import TileSettings

    sync(device)
    t0 = time.perf_counter()

    def progress(info):
        print(f"  {label} iteration {info['iteration']:2d}/{info['total']}: prior {info['score']:6.2f} "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)

    res = enhance(img, model=model, prior=prior, settings=settings, tiles=TileSettings(tile=0), callback=progress)
    sync(device)
    total = time.perf_counter() - t0
    rep = res.report
    secs = [h["seconds"] for h in rep["history"]]
    per_it = statistics.median(b - a for a, b in itertools.pairwise(secs)) if len(secs) > 1 else None
    return {"seconds_total": total, "seconds_inversion": total - rep["wall_seconds"],
            "seconds_ascent": rep["wall_seconds"], "seconds_per_iteration": per_it,
            "iterations_run": rep["iterations_run"], "denoiser_evals": rep["denoiser_evals"],
            "peak_memory_bytes": rep["peak_memory_bytes"], "inversion_error": rep["inversion_error"],
            "events": rep["events"]}


def timeit(fn, device: str, repeat: int = 5) -> float:
    """Median seconds of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def components(model, img, prior, settings, device: str) -> dict:
    """Seconds of each part of one iteration, to see where the time goes.

    An iteration evaluates the network ``2 * steps`` times going forward and
    ``2 * steps`` times (with a vector-Jacobian product) going back, then
    decodes, scores and differentiates the image once.
    """
    from iqa_map.core.map.objective import objective as make_objective
    from iqa_map.core.map.settings import resolve_lr

    den, codec, cond = model.denoiser, model.codec, model.cond
    with torch.no_grad():
        z = codec.encode(img.to(device)).double()
    sigma = float(den.sigmas(settings.steps)[1])
    x = z + sigma * torch.randn_like(z)

    def eps_vjp():
        den.eps_and_vjp(x, sigma, cond, torch.ones_like(x))

    s = resolve_lr(settings)
    ref = img.to(device).float()
    terms = make_objective(prior, s.fidelity, s.fidelity_weight, ref)
    objective = lambda img: terms(img).total  # noqa: E731

    def decode_objective_vjp():
        with torch.enable_grad():
            leaf = z.detach().requires_grad_(True)
            torch.autograd.grad(objective(codec.decode(leaf).float().clamp(0, 1)), leaf)

    def objective_vjp():
        with torch.enable_grad():
            leaf = ref.detach().requires_grad_(True)
            torch.autograd.grad(objective(leaf), leaf)

    with torch.no_grad():
        parts = {"network": timeit(lambda: den.eps(x, sigma, cond), device)}
    parts["network_with_vjp"] = timeit(eps_vjp, device)
    parts["decode_and_objective_with_vjp"] = timeit(decode_objective_vjp, device)
    parts["objective_with_vjp"] = timeit(objective_vjp, device)
    n = 2 * settings.steps
    parts["iteration_estimate"] = n * (parts["network"] + parts["network_with_vjp"]) \
        + parts["decode_and_objective_with_vjp"]
    return parts


def main(argv=None) -> None:
    from iqa_map.core import priors
    from iqa_map.core.map import MapSettings
    from iqa_map.core.models.loading import load_model

    from .random_sd import SCALES, save_random_pipeline

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="image side in pixels (SD 1.5: 512)")
    ap.add_argument("--dtypes", default="fp16,fp32", help=f"comma-separated, from {', '.join(DTYPES)}")
    ap.add_argument("--variants", default="eager,graphs",
                    help=f"comma-separated, from {', '.join(VARIANTS)}: eager network calls, CUDA graphs "
                         "(the default on CUDA), either with channels-last UNet and VAE; each is one row per dtype")
    ap.add_argument("--steps", type=int, default=MapSettings.steps)
    ap.add_argument("--iterations", type=int, default=MapSettings.iterations)
    ap.add_argument("--prior", default="builtin")
    ap.add_argument("--memory-steps", default="5,50", help="steps of the one-iteration memory runs ('' to skip)")
    ap.add_argument("--scale", choices=SCALES, default="sd15", help="tiny: toy width, for a quick CPU check")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pipeline", help="a random pipeline folder saved earlier (default: build one in a temp folder)")
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "sd.json"))
    args = ap.parse_args(argv)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if bad := [d for d in dtypes if d not in DTYPES]:
        sys.exit(f"unknown dtype(s) {bad}; choose from {', '.join(DTYPES)}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if bad := [v for v in variants if v not in VARIANTS]:
        sys.exit(f"unknown variant(s) {bad}; choose from {', '.join(VARIANTS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here; use --device cpu (slow at SD scale: try --scale tiny)")
    mem_steps = [int(v) for v in args.memory_steps.split(",") if v.strip()]

    tmp = None
    if args.pipeline:
        folder = Path(args.pipeline)
    else:
        tmp = tempfile.TemporaryDirectory()
        t = time.perf_counter()
        folder = save_random_pipeline(tmp.name, args.scale)
        print(f"random {args.scale} pipeline saved in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    img = photo(args.size)
    prior = priors.load(args.prior, device=args.device)
    settings = MapSettings(steps=args.steps, iterations=args.iterations)
    rows = []
    res = {"scale": args.scale, "size": args.size, "steps": args.steps, "iterations": args.iterations,
           "prior": args.prior, "device": args.device,
           "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
           "cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, variant in itertools.product(dtypes, variants):
        sync(args.device)
        t = time.perf_counter()
        model = load_model(str(folder), device=args.device, dtype=DTYPES[name], cuda_graphs="graphs" in variant)
        if variant.endswith("-cl"):
            for m in (model.denoiser.network, model.codec.vae):
                m.to(memory_format=torch.channels_last)
        sync(args.device)
        load_s = time.perf_counter() - t
        weights = torch.cuda.memory_allocated() if args.device == "cuda" else None
        label = f"{name} {variant}"
        # The warm-up also captures the CUDA graphs (once per shape, whatever the steps).
        one_run(model, img, prior, MapSettings(steps=2, iterations=1), args.device, f"{label} warm-up")
        row = {"dtype": name, "variant": variant, "seconds_load": load_s, "weights_bytes": weights,
               **one_run(model, img, prior, settings, args.device, label)}
        graphs = model.denoiser.accel
        row["cuda_graphs"] = None if graphs is None else {"replays": graphs.replays, "failed": graphs.failed}
        row["components"] = components(model, img, prior, settings, args.device)
        row["memory_by_steps"] = {}
        for n in mem_steps:
            r = one_run(model, img, prior, MapSettings(steps=n, iterations=1), args.device, f"{label} {n} steps")
            row["memory_by_steps"][n] = r["peak_memory_bytes"]
        rows.append(row)
        out.write_text(json.dumps(res, indent=2))  # after every row: a run cut short keeps what it measured
        print(json.dumps(row, indent=1), file=sys.stderr)
        del model
        if args.device == "cuda":
            torch.cuda.empty_cache()
    gib = 2 ** 30
    print(f"| dtype | variant | load | inversion ({args.steps} steps) | per iteration | {args.iterations} iterations, total "
          f"| denoiser evals | peak memory | weights | memory at " + " / ".join(map(str, mem_steps))
          + " steps | inversion error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        w = f"{r['weights_bytes'] / gib:.2f} GiB" if r["weights_bytes"] is not None else "-"
        m = " / ".join(f"{r['memory_by_steps'][n] / gib:.2f}" for n in mem_steps) + " GiB" if mem_steps else "-"
        print(f"| {r['dtype']} | {r['variant']} | {r['seconds_load']:.1f} s | {r['seconds_inversion']:.1f} s "
              f"| {r['seconds_per_iteration']:.2f} s | {r['seconds_total']:.0f} s | {r['denoiser_evals']} "
              f"| {r['peak_memory_bytes'] / gib:.2f} GiB | {w} | {m} | {r['inversion_error']:.1e} |")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
