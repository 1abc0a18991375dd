"""The CPU path: what torch.compile and channels-last buy the built-in model and priors, and one run before/after.

    python -m benchmarks.bench_cpu [--size 256x192] [--repeat 5] [--threads 2] [--runs fast,default]

Part 1, per call (medians of ``--repeat`` calls after warm-up, in one process, the variants
interleaved so machine load hits them alike): the built-in pixel model's ``eps`` and ``eps`` +
VJP, and the built-in fused prior (NIQE + BRISQUE) with its gradient, each eager,
channels-last, and ``torch.compile`` (inductor) with its compile time.

Part 2, whole enhancements at the ``fast`` preset and the defaults: the loop as it was (every
iterate's gradient taken) against the loop now (not for the iterate that ends the run), on the
same photo, in one process, alternating; output bytes compared, evaluations counted.
Writes JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


def median_s(fn, repeat: int, warm: int = 2) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def per_call(size, repeat: int, rounds: int = 3, compile_: bool = True) -> list:
    """Median seconds per call of each variant; variants built first, then timed in interleaved rounds."""
    from iqa_map.core import priors
    from iqa_map.core.models import load_builtin

    h, w = size
    x = torch.randn(1, 3, h, w, dtype=torch.float64)
    img = torch.rand(1, 3, h, w)
    g = torch.randn_like(x)

    def prior_grad(prior):
        leaf = img.detach().requires_grad_(True)
        torch.autograd.grad(prior.calibrated(leaf).sum(), leaf)

    variants = {}
    for name in ("eager", "channels-last", "compile") if compile_ else ("eager", "channels-last"):
        den, prior = load_builtin(), priors.load("builtin")
        info = {"variant": name}
        if name == "channels-last":
            den.net.to(memory_format=torch.channels_last)
        if name == "compile":
            try:  # the first calls compile (forward and backward): their time is the start-up cost
                den.net = den.network = torch.compile(den.net, dynamic=False)
                t = time.perf_counter()
                with torch.no_grad():
                    den.eps(x, 0.5)
                den.eps_and_vjp(x, 0.5, None, g)
                info["compile_model_s"] = time.perf_counter() - t
                prior._native = torch.compile(prior._native, dynamic=False)
                t = time.perf_counter()
                prior_grad(prior)
                info["compile_prior_s"] = time.perf_counter() - t
            except Exception as e:  # noqa: BLE001 - record and go on: compile support varies
                info["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                print(json.dumps(info), file=sys.stderr, flush=True)
        variants[name] = (den, prior, info, {"eps": [], "eps_vjp": [], "prior_grad": []})
    for _ in range(rounds):
        for name, (den, prior, info, t) in variants.items():
            if "error" in info:
                continue
            with torch.no_grad():
                t["eps"].append(median_s(lambda: den.eps(x, 0.5), repeat, warm=1))
            t["eps_vjp"].append(median_s(lambda: den.eps_and_vjp(x, 0.5, None, g), repeat, warm=1))
            t["prior_grad"].append(median_s(lambda: prior_grad(prior), repeat, warm=1))
    rows = []
    for name, (_, _, info, t) in variants.items():
        rows.append({**info, **{f"{k}_s": statistics.median(v) for k, v in t.items() if v}})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def whole_runs(size, presets, rounds: int) -> list:
    """Enhancements with the gradient of every iterate (as before) and without the final one's (now)."""
    from iqa_map.cli.demo import degrade, sample_photo
    from iqa_map.core.sampling import edict
    from iqa_map.core.map.pipeline import enhance, load_model, load_prior
    from iqa_map.core.map.settings import TileSettings

    img = degrade(F.interpolate(sample_photo(), size=size, mode="bicubic", antialias=True).clamp(0, 1))
    model, prior = load_model("builtin", device="cpu"), load_prior("builtin", device="cpu")
    lazy = edict.value_and_lazy_grad

    def every_gradient(*a, **k):  # the loop before: the gradient taken at once, used or not
        loss, gradient = lazy(*a, **k)
        grads = gradient()
        return loss, lambda: grads

    rows = []
    for name in presets:
        for rnd in range(rounds):
            for variant in ("before", "after"):
                edict.value_and_lazy_grad = every_gradient if variant == "before" else lazy
                try:
                    t = time.perf_counter()
                    res = enhance(img, model=model, prior=prior, preset_name=name, tiles=TileSettings(tile=0))
                    secs = time.perf_counter() - t
                finally:
                    edict.value_and_lazy_grad = lazy
                r = {"preset": name, "round": rnd, "variant": variant, "seconds": secs,
                     "denoiser_evals": res.report.denoiser_evals, "output_sum": float(res.image.double().sum()),
                     "score_out": res.report.output_scores}
                rows.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="192x256", help="HxW of the photo (the demo's crop)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default="fast,default", help="presets of the whole-run comparison ('' to skip)")
    ap.add_argument("--rounds", type=int, default=1, help="before/after pairs per preset")
    ap.add_argument("--skip-calls", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the per-call part")
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "cpu.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.split("x"))
    res = {"size": size, "threads": args.threads, "torch": torch.__version__}
    res["per_call"] = [] if args.skip_calls else per_call(size, args.repeat, compile_=not args.no_compile)
    presets = [p for p in args.runs.split(",") if p]
    res["whole_runs"] = whole_runs(size, presets, args.rounds) if presets else []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    for r in res["per_call"]:
        print(r)
    for r in res["whole_runs"]:
        print(r["preset"], r["variant"], f"{r['seconds']:.1f} s", r["denoiser_evals"], r["output_sum"])


if __name__ == "__main__":
    main()
