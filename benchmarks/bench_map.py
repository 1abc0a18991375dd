"""Does latent MAP beat pixel-space ascent? The issue-5 quality benchmark.

    python -m benchmarks.bench_map [--limit N] [--crop 128] [--methods pixel,builtin,bfcnn]
    python -m benchmarks.bench_map --start 34 --limit 34 --out b.json ...   # a shard, for parallel runs
    python -m benchmarks.bench_map --merge a.json b.json --out all.json     # the shards' rows, one summary
    python -m benchmarks.bench_map --methods pixel,model --model sd15.safetensors --model-config sd15-configs/ \
        --held-out musiq,liqe,piqe                                          # a checkpoint, semantic judges

Each CBSD68 dev photo (centre crop) gets a seeded mix of blur, noise and JPEG.
Methods, all with the same prior, fidelity and iteration budget:
(a) the degraded input, (b) pixel-space gradient ascent, (c) latent MAP with the
built-in model, (d) latent MAP with the pretrained BF-CNN denoiser as diffusion
model, and ``model``: latent MAP with any model the command line's ``--model``
loads (a Stable Diffusion checkpoint where one exists). Scored by the optimised
prior (native), held-out NR metrics that were not optimised (CNNIQA-LIVE and
PIQE when NIQE+BRISQUE are optimised; any prior name, pyiqa's included, when
its weights are in ``$IQA_MAP_WEIGHTS``), and PSNR/SSIM against the clean
original. Writes a markdown table to stdout and JSON to out/bench/map.json
(``--out``).
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


_OUTPUT_ONLY = ("figure", "save_images")  # options that change no score: shards and resumed runs may differ in them


def degrade(img: torch.Tensor, seed: int) -> torch.Tensor:
    """Seeded mix: blur sigma 0.5-1.5, noise std 3-12 /255, JPEG quality 20-60."""
    from iqa_map.core.priors.distortions import gaussian_blur, gaussian_noise, jpeg

    rng = np.random.default_rng(seed)
    x = gaussian_blur(img, float(rng.uniform(0.5, 1.5)))
    x = gaussian_noise(x, float(rng.uniform(3, 12)), seed=seed)
    return jpeg(x, int(rng.integers(20, 61)))


LATENT_METHODS = ("builtin", "bfcnn", "model")


def _latent_model(name: str, args, dev) -> tuple:
    """(denoiser, codec, conditioning) of a latent method; no codec or conditioning for pixel-space models."""
    from iqa_map.core.models import from_denoiser, load_builtin
    from iqa_map.core.models.archs import load_bfcnn
    from iqa_map.core.models.loading import load_model

    if name == "builtin":
        return load_builtin(device=dev), None, None
    if name == "bfcnn":
        net = load_bfcnn(DATA / "weights" / "bfcnn_color_bsd300_sigma0-100.safetensors", device=dev)
        return from_denoiser(net, 0, 100 / 255, residual=True), None, None
    loaded = load_model(args.model, device=dev, config=args.model_config)
    return loaded.denoiser, loaded.codec, loaded.cond


def main(argv=None) -> None:
    from benchmarks.common import add_units_option
    from iqa_map.core.map import HACK_REFERENCES, MapSettings
    from iqa_map.core.map.settings import OPTIMISERS, PRESETS

    FAST = PRESETS["fast"]  # the benchmarks' defaults are the fast preset's

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="N dev images (default all 68)")
    ap.add_argument("--start", type=int, default=0, help="index of the first dev image (a shard; the degradation "
                    "is seeded by the global index, so shards reproduce the full run)")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="summarise the rows of these result files "
                    "(shards of one setting) instead of running")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--methods", default="pixel,builtin,bfcnn",
                    help="pixel, builtin, bfcnn, and model (the --model below)")
    ap.add_argument("--model", default=None, metavar="SPEC",
                    help="for the method 'model': anything the CLI's --model takes, e.g. a Stable Diffusion "
                         "checkpoint (with --model-config) or diffusers folder")
    ap.add_argument("--model-config", default=None, metavar="DIR", help="as the CLI's --model-config")
    ap.add_argument("--prior", default="builtin")
    ap.add_argument("--held-out", default="cnniqa,piqe")
    ap.add_argument("--steps", type=int, default=FAST["steps"], help="default: the fast preset's")
    ap.add_argument("--strength", type=float, default=FAST["strength"])
    ap.add_argument("--iterations", type=int, default=FAST["iterations"])
    ap.add_argument("--optimizer", default=FAST["optimizer"], choices=list(OPTIMISERS),
                    help="the README figures were measured with adam (lr 0.003)")
    ap.add_argument("--lr", type=float, default=None,
                    help="learning rate of every method (default: the optimiser's)")
    add_units_option(ap)
    ap.add_argument("--latent-lr", type=float, default=None,
                    help="learning rate of the latent methods only (default: --lr), to compare at matched change")
    ap.add_argument("--pixel-lr", type=float, default=None,
                    help="learning rate of pixel ascent only (default: --lr)")
    ap.add_argument("--curve", action="store_true",
                    help="also score the held-out metrics at every iteration (as never-firing monitors) and report "
                         "the win shares against pixel ascent per iteration budget: does pixel ascent start to hack?")
    ap.add_argument("--monitor", default=None, metavar="NAMES",
                    help="hack-guard monitors for every method (comma-separated; stop mode): a guarded comparison. "
                         "Keep them out of --held-out")
    ap.add_argument("--hack-reference", default=HACK_REFERENCES[0], choices=HACK_REFERENCES)
    ap.add_argument("--hack-margin", type=float, default=MapSettings.hack_margin)
    ap.add_argument("--figure", default=None, metavar="PNG",
                    help="with --curve: plot each held-out judge's mean score against the iteration, per method")
    ap.add_argument("--save-images", default=None, metavar="DIR",
                    help="write one labelled sheet per photo (clean, input, each method) to DIR")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu (the README's tables) or cuda")
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "map.json"),
                    help="result JSON; rewritten after every image (marked partial until the run ends)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the images already in --out (same settings) and run only the others")
    args = ap.parse_args(argv)
    if args.figure and not (args.curve or args.merge):
        ap.error("--figure plots the per-iteration curves: add --curve")
    if args.monitor and args.curve:
        ap.error("--curve records the held-out judges as never-firing monitors; it cannot run with --monitor")
    if args.monitor and set(args.monitor.split(",")) & set(args.held_out.split(",")):
        ap.error("a --monitor steers the run (it stops it), so it cannot also be a --held-out judge")
    unknown = set(args.methods.split(",")) - {"pixel", *LATENT_METHODS}
    if unknown:
        ap.error(f"unknown method(s) {', '.join(sorted(unknown))}: choose from pixel, {', '.join(LATENT_METHODS)}")
    if "model" in args.methods.split(",") and not args.model:
        ap.error("the method 'model' needs --model SPEC")
    if args.merge:
        from benchmarks.common import load_shards

        rows, settings, seconds = load_shards(args.merge, "bench_map", ignore=_OUTPUT_ONLY)
        return finish(summarise(rows, settings, seconds), rows, args.out, args.figure)
    torch.set_num_threads(args.threads)

    from benchmarks.common import centre_crop, checkpoint, dev_files, resume_rows
    from iqa_map.core import map as M
    from iqa_map.core import priors
    from iqa_map.core.io.imageio import load_image

    files = dev_files()[args.start:]
    files = files[:args.limit] if args.limit is not None else files
    dev = torch.device(args.device)
    prior = priors.load(args.prior, device=dev)
    cnniqa_path = DATA / "weights" / "cnniqa_live_gray.safetensors"
    held = [priors.load(f"cnniqa:{cnniqa_path}" if n == "cnniqa" else n, device=dev)
            for n in args.held_out.split(",")]
    methods = args.methods.split(",")
    dens = {m: _latent_model(m, args, dev) for m in methods if m != "pixel"}
    settings = M.MapSettings(steps=args.steps, strength=args.strength, iterations=args.iterations, fidelity="nlpd",
                             optimizer=args.optimizer, lr=args.lr, units=args.units)
    if args.curve:  # monitors that only record: the guard never fires and never stops a run
        settings = dataclasses.replace(settings, on_hack="warn", hack_margin=float("inf"))
    monitors = held if args.curve else ()
    if args.monitor:
        settings = dataclasses.replace(settings, hack_reference=args.hack_reference, hack_margin=args.hack_margin)
        monitors = [priors.load(n, device=dev) for n in args.monitor.split(",")]
    latent_settings = settings if args.latent_lr is None else dataclasses.replace(settings, lr=args.latent_lr)
    pixel_settings = settings if args.pixel_lr is None else dataclasses.replace(settings, lr=args.pixel_lr)
    rows, seconds0 = resume_rows(args.out, vars(args), "bench_map", ignore=_OUTPUT_ONLY) if args.resume else ([], 0.0)
    done = {r["index"] for r in rows}
    t0 = time.perf_counter() - seconds0
    for i, f in enumerate(files, start=args.start):
        if i in done:
            continue
        clean = centre_crop(load_image(f), args.crop)
        noisy = degrade(clean, seed=i)  # on the CPU, so every device sees the same input
        clean, noisy = clean.to(dev), noisy.to(dev)
        outs, curves, best_it, prior_curve = {"input": noisy}, {}, {}, {}
        for m in methods:
            if m == "pixel":
                res = M.ascend_pixels(noisy, prior, pixel_settings, monitors=monitors)
            else:
                den, codec, cond = dens[m]
                res = M.ascend(den, noisy, prior, latent_settings, codec=codec, cond=cond, monitors=monitors)
            outs[m] = res.image
            curves[m] = [e["monitors"] for e in res.report["history"] if "monitors" in e]
            prior_curve[m] = [e["score"] for e in res.report["history"]]
            best_it[m] = res.report["best_iteration"]
        row = {"index": i, "image": f.name, "prior": prior.name, "best_iteration": best_it,
               "lower_better": {h_.name.split(":")[0]: h_.lower_better for h_ in held}}
        with torch.no_grad():
            for name, img in outs.items():
                row[name] = {"prior": float(prior.native(img)[0]),
                             **{h_.name.split(":")[0]: float(h_.native(img)[0]) for h_ in held},
                             "psnr": M.psnr(img, clean), "ssim": M.ssim(img, clean)}
        if args.curve:
            row["curves"], row["prior_curve"] = curves, prior_curve
        if args.save_images:
            save_sheet(Path(args.save_images) / f"{f.stem}.png", {"clean": clean, **outs}, row)
        rows.append(row)
        checkpoint(args.out, rows, vars(args), time.perf_counter() - t0)
        print(f"[{i + 1 - args.start}/{len(files)}] {f.name} " + " ".join(
            f"{k}: psnr {row[k]['psnr']:.2f}" for k in outs), file=sys.stderr, flush=True)
    rows.sort(key=lambda r: r["index"])
    finish(summarise(rows, vars(args), time.perf_counter() - t0), rows, args.out, args.figure)


def save_sheet(path: Path, images: dict, row: dict) -> None:
    """Clean, input and each method side by side (2x, nearest), captioned with PSNR and the first held-out judge."""
    from iqa_map.core.io.drawing import contact_sheet

    judge = next(iter(row["lower_better"]))
    labels = [name if name == "clean" else f"{name}\n{row[name]['psnr']:.2f} dB, {judge} {row[name][judge]:.1f}"
              for name in images]
    tiles = [torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest") for t in images.values()]
    path.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(tiles, labels).save(path)


def summarise(rows: list, settings: dict, seconds: float) -> dict:
    """Mean scores per method, win shares against pixel ascent and the input, and (with --curve) per budget."""
    lower = rows[0]["lower_better"]
    held_names = list(lower)
    methods = [m for m in rows[0] if isinstance(rows[0][m], dict) and "psnr" in rows[0][m] and m != "input"]

    def better(a, b, key):  # is a better than b on key
        if key in ("psnr", "ssim"):
            return a[key] > b[key]
        return a[key] < b[key] if lower[key] else a[key] > b[key]

    summary = {"images": len(rows), "prior": rows[0]["prior"], "held_out": held_names, "settings": settings,
               "seconds": seconds, "mean": {}, "wins": {}}
    for name in ["input", *methods]:
        summary["mean"][name] = {k: float(np.mean([r[name][k] for r in rows]))
                                 for k in ["prior", *held_names, "psnr", "ssim"]}
    for m in [x for x in methods if x != "pixel"]:
        if "pixel" in methods:
            summary["wins"][f"{m} beats pixel"] = {k: float(np.mean([better(r[m], r["pixel"], k) for r in rows]))
                                                   for k in [*held_names, "psnr"]}
        summary["wins"][f"{m} improves on input"] = {k: float(np.mean([better(r[m], r["input"], k) for r in rows]))
                                                     for k in [*held_names, "psnr"]}
    if "curves" in rows[0] and "pixel" in methods:
        # Monitor scores are comparable (calibrated or oriented): higher is better for every judge.
        summary["curve"] = {}
        n_it = min(len(r["curves"][m]) for r in rows for m in methods)  # a run may stop early (NaN guard)
        for m in [x for x in methods if x != "pixel"]:
            summary["curve"][f"{m} beats pixel"] = [
                {h: float(np.mean([r["curves"][m][it][h] > r["curves"]["pixel"][it][h] for r in rows]))
                 for h in rows[0]["curves"][m][0]} for it in range(n_it)]
        # Each method's best iterate as the judge itself would pick it: an upper bound on what any stopping
        # rule or iterate selection could return, so a target missed here cannot be met by stopping earlier.
        best = lambda r, m, h: max(e[h] for e in r["curves"][m])  # noqa: E731
        judges = list(rows[0]["curves"]["pixel"][0])
        summary["oracle"] = {f"{m} beats pixel": {h: float(np.mean([best(r, m, h) > best(r, "pixel", h) for r in rows]))
                                                  for h in judges} for m in methods if m != "pixel"}
        summary["mean_oracle"] = {m: {h: float(np.mean([best(r, m, h) for r in rows])) for h in judges}
                                  for m in methods}
        summary["mean_curve"] = {
            m: {h: np.mean([[e[h] for e in r["curves"][m][:n_it]] for r in rows], axis=0).tolist()
                for h in rows[0]["curves"][m][0]} for m in methods}
        if "prior_curve" in rows[0]:  # the optimised prior's own (comparable) score, for the figure
            for m in methods:
                summary["mean_curve"][m] = {f"{rows[0]['prior']} (optimised)": np.mean(
                    [r["prior_curve"][m][:n_it] for r in rows], axis=0).tolist(), **summary["mean_curve"][m]}
    if "best_iteration" in rows[0]:
        summary["mean_best_iteration"] = {m: float(np.mean([r["best_iteration"][m] for r in rows])) for m in methods}
    return summary


def plot_curves(summary: dict, path: str) -> None:
    """One panel per held-out judge: mean comparable score (higher = better) against the iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = summary["mean_curve"]
    judges = list(next(iter(curves.values())))
    fig, axes = plt.subplots(1, len(judges), figsize=(4 * len(judges), 3.2), squeeze=False)
    for ax, h in zip(axes[0], judges):
        for m, per in curves.items():
            ax.plot(per[h], label="pixel ascent" if m == "pixel" else f"latent MAP ({m})")
        ax.set_title(h if "(optimised)" in h else f"{h.split(':')[0]} (held out)")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean score (calibrated, higher = better)")
    axes[0][0].legend()
    st = summary["settings"]
    fig.suptitle(f"{summary['images']} photos, {summary['prior']} optimised, {st['steps']} steps / strength "
                 f"{st['strength']} / {st['optimizer']}", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def finish(summary: dict, rows: list, out: str, figure: str | None = None) -> None:
    """Write the JSON, print the markdown tables, plot the curves if asked."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    held_names = summary["held_out"]
    cols = ["prior", *held_names, "psnr", "ssim"]
    print(f"| method | {summary['prior']} (native) | " + " | ".join(f"{h} (held out)" for h in held_names)
          + " | PSNR vs clean | SSIM vs clean |")
    print("|---" * (len(cols) + 1) + "|")
    for name, v in summary["mean"].items():
        print(f"| {name} | " + " | ".join(f"{v[k]:.3f}" for k in cols) + " |")
    print()
    print("| comparison | " + " | ".join(f"{k}" for k in [*held_names, "psnr"]) + " |")
    print("|---" * (len(held_names) + 2) + "|")
    for name, v in summary["wins"].items():
        print(f"| {name} | " + " | ".join(f"{100 * v[k]:.0f} %" for k in [*held_names, "psnr"]) + " |")
    for name, v in summary.get("oracle", {}).items():
        print(f"\n{name} at each method's best iterate per judge (oracle selection; an upper bound for any stopping "
              "rule): " + "  ".join(f"{h.split(':')[0]} {100 * w:.0f} %" for h, w in v.items()))
    for name, per_it in summary.get("curve", {}).items():
        print(f"\n{name}, per iteration budget (share of images, held-out judges):")
        for it, v in enumerate(per_it):
            print(f"  {it:3d}: " + "  ".join(f"{h.split(':')[0]} {100 * w:.0f} %" for h, w in v.items()))
    if figure:
        if "mean_curve" not in summary:
            sys.exit(f"bench_map --figure: {out} has no per-iteration curves (run with --curve and the pixel method)")
        plot_curves(summary, figure)


if __name__ == "__main__":
    main()
