"""Large photos in tiles: memory and time against the whole image, and what tiling does to the result.

    python -m benchmarks.bench_tiles memory [--sizes 512x512,1024x768,...] [--tile 768]
    python -m benchmarks.bench_tiles quality [--limit 8] [--tile 192 --overlap 48] [--save DIR]
    python -m benchmarks.bench_tiles figure --save DIR [--figure docs/bench_tiles_seams.png]

``memory``: each size runs once whole and once in tiles (``--tile``), each in a
fresh process on the built-in model and prior, the ``fast`` preset with one
iteration; reports the process's peak resident memory, the part above the
loaded model and priors, and the wall time. ``--tiled-only`` sizes skip the
whole-image run (it would not fit).

``quality``: full CBSD68 dev photos (481x321) with ``bench_map``'s seeded
damage, enhanced whole and in small tiles (many tile borders per photo: a
stress test), ``fast`` preset. Reports the optimised prior, PIQE (held out),
PSNR against the clean original and between the two results, and a seam
ratio: the mean step of the enhancement (output minus input) across the lines
where tiles begin over its mean step near them (1 = no seam). The same tiles
pasted without blending show that the ratio finds seams when there are some.

``figure``: from ``quality``'s saved results, the photo whose pasted tiles
step most at their borders, cropped where four tiles meet: input, whole,
blended and pasted results, and each one's enhancement (amplified).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(width: int, height: int, tile: int, overlap: int, threads: int) -> dict:
    """One enhancement in this process: peak memory above the loaded model and priors, and time."""
    torch.set_num_threads(threads)
    from benchmarks.common import dev_files
    from iqa_map.core import map as M
    from iqa_map.core import priors
    from iqa_map.core.io.imageio import load_image
    from iqa_map.core.models import load_builtin
    from iqa_map.core.map.tiling import ascend_tiled, tile_grid

    photo = load_image(dev_files(1)[0])
    img = torch.nn.functional.interpolate(photo, size=(height, width), mode="bicubic", align_corners=False)
    img = img.clamp(0, 1)
    den, prior = load_builtin(device="cpu"), priors.load("builtin")
    settings = M.MapSettings(**{**M.PRESETS["fast"], "iterations": 1})
    M.ascend(den, img[..., :64, :64], prior, settings)  # warm up: lazy imports and buffers count as "loaded"
    base = _peak_rss()
    t0 = time.perf_counter()
    res = ascend_tiled(den, img, prior, settings, tile=tile or max(width, height), overlap=overlap if tile else 0)
    grid = tile_grid(den, None, height, width, tile, overlap) if tile else None
    return {"size": f"{width}x{height}", "megapixels": width * height / 1e6, "tile": tile,
            "tiles": len(grid) if grid else 1, "seconds": time.perf_counter() - t0, "peak_bytes": _peak_rss(),
            "loaded_bytes": base, "prior_gain": res.report["output_scores"][prior.name]
            - res.report["input_scores"][prior.name]}


def memory(args) -> list:
    rows = []
    sizes = [(s, False) for s in args.sizes.split(",")] + [(s, True) for s in args.tiled_only.split(",") if s]
    for size, tiled_only in sizes:
        w, h = map(int, size.split("x"))
        for tile in ([args.tile] if tiled_only else [0, args.tile]):
            if tile and max(w, h) <= tile:
                continue  # fits in one tile: the same run as the whole image
            cmd = [sys.executable, "-m", "benchmarks.bench_tiles", "child", str(w), str(h), str(tile),
                   str(args.overlap), str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if out.returncode != 0:
                rows.append({"size": size, "tile": tile, "error": out.stderr.strip().splitlines()[-1:]})
            else:
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(json.dumps(r), file=sys.stderr, flush=True)
    print("| size | megapixels | run | tiles | peak memory | above the loaded model | seconds | seconds / MP |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        run = f"tiles of {r['tile']}" if r["tile"] else "whole"
        if "error" in r:
            print(f"| {r['size']} | | {run} | | failed: {r['error']} | | | |")
            continue
        print(f"| {r['size']} | {r['megapixels']:.2f} | {run} | {r['tiles']} | {r['peak_bytes'] / 2**30:.2f} GiB | "
              f"{(r['peak_bytes'] - r['loaded_bytes']) / 2**30:.2f} GiB | {r['seconds']:.0f} | "
              f"{r['seconds'] / r['megapixels']:.0f} |")
    return rows


def seam_ratio(out: torch.Tensor, inp: torch.Tensor, grid, near: int = 8) -> float:
    """Mean step of the enhancement ``out - inp`` across the lines where a pasted tile begins, over its mean step
    between the neighbouring pixels within ``near`` of those lines (1 = no seam). Local, so a region where two
    tiles are averaged (a smoother enhancement) does not count as a seam."""
    d = (out - inp).double().mean(1)[0]
    dx, dy = (d[:, 1:] - d[:, :-1]).abs(), (d[1:] - d[:-1]).abs()  # dx[:, j]: the step from column j to j + 1
    on, off = [], []
    for steps, starts, size in ((dx, grid.cols, grid.width), (dy.T, grid.rows, grid.height)):
        for s in (s for s in starts if s > 0):
            on.append(steps[:, s - 1])
            off += [steps[:, j - 1] for j in range(max(s - near, 1), min(s + near, size - 1) + 1) if j != s]
    return float(torch.cat(on).mean() / torch.cat(off).mean())


def paste(grid, patches) -> torch.Tensor:
    """The tiles without blending: each one pasted over those before it (hard cuts at tile starts)."""
    out = torch.zeros(patches[0].shape[0], 3, grid.height, grid.width)
    for (y, x, th, tw), p in zip(grid.boxes(), patches):
        out[..., y:y + th, x:x + tw] = p
    return out


def quality(args) -> dict:
    torch.set_num_threads(args.threads)
    from benchmarks.bench_map import degrade
    from benchmarks.common import dev_files
    from iqa_map.core import map as M
    from iqa_map.core import priors
    from iqa_map.core.io.imageio import load_image
    from iqa_map.core.models import load_builtin
    from iqa_map.core.map.tiling import tile_grid

    den, prior, piqe = load_builtin(device="cpu"), priors.load("builtin"), priors.load("piqe")
    settings = M.MapSettings(**M.PRESETS["fast"])
    rows, t0 = [], time.perf_counter()
    for i, f in enumerate(dev_files(args.limit)):
        clean = load_image(f)
        noisy = degrade(clean, seed=i)
        grid = tile_grid(den, None, *noisy.shape[-2:], args.tile, args.overlap)
        saved = Path(args.save) / f"{f.stem}.pt" if args.save else None
        if saved and saved.exists():  # an interrupted run resumes: the results are deterministic, only re-measure
            done = torch.load(saved)
            if done["boxes"] != grid.boxes() or not torch.equal(done["input"], noisy):
                raise SystemExit(f"{saved} was made with other settings; remove it or choose another --save")
            whole, tiled, pasted = done["whole"], done["tiled"], done["pasted"]
        else:
            whole = M.ascend(den, noisy, prior, settings).image
            # ascend_tiled's own steps (tests/test_tiling.py checks they are its result), kept apart to paste them
            patches = [M.ascend(den, noisy[..., y:y + h, x:x + w], prior, settings).image
                       for y, x, h, w in grid.boxes()]
            tiled, pasted = grid.blend(patches).clamp(0, 1), paste(grid, patches)
        row = {"image": f.name, "tiles": len(grid)}
        with torch.no_grad():
            for name, img in (("input", noisy), ("whole", whole), ("tiled", tiled), ("pasted", pasted)):
                row[name] = {"prior": float(prior.calibrated(img)[0]), "piqe": float(piqe.native(img)[0]),
                             "psnr": M.psnr(img, clean)}
                if name != "input":  # the input has no enhancement to step
                    row[name]["seam"] = seam_ratio(img, noisy, grid)
        row["psnr_tiled_vs_whole"] = M.psnr(tiled, whole)
        if saved and not saved.exists():  # the results themselves, to measure them again without rerunning
            saved.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"clean": clean, "input": noisy, "whole": whole, "tiled": tiled, "pasted": pasted,
                        "boxes": grid.boxes()}, Path(args.save) / f"{f.stem}.pt")
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    mean = {k: {m: float(np.mean([r[k][m] for r in rows])) for m in rows[0][k]}
            for k in ("input", "whole", "tiled", "pasted")}
    summary = {"images": len(rows), "tile": args.tile, "overlap": args.overlap, "seconds": time.perf_counter() - t0,
               "mean": mean, "psnr_tiled_vs_whole": float(np.mean([r["psnr_tiled_vs_whole"] for r in rows])),
               "tiled_prior_within_1_of_whole": float(np.mean([abs(r["tiled"]["prior"] - r["whole"]["prior"]) <= 1
                                                               for r in rows])),
               "max_seam": {k: float(max(r[k]["seam"] for r in rows)) for k in ("whole", "tiled", "pasted")}}
    print(f"{len(rows)} photos, tiles of {args.tile} (overlap {args.overlap}), {rows[0]['tiles']} tiles each\n")
    print("| result | prior (calibrated) | PIQE (held out) | PSNR vs clean | seam ratio (mean / max) |")
    print("|---|---|---|---|---|")
    for k in ("input", "whole", "tiled", "pasted"):
        m = mean[k]
        seam = f"{m['seam']:.3f} / {summary['max_seam'][k]:.3f}" if k in summary["max_seam"] else "-"
        print(f"| {k} | {m['prior']:.2f} | {m['piqe']:.2f} | {m['psnr']:.2f} | {seam} |")
    print(f"\nPSNR between tiled and whole: {summary['psnr_tiled_vs_whole']:.2f} dB; tiled prior within 1 point of "
          f"whole on {100 * summary['tiled_prior_within_1_of_whole']:.0f} % of photos; {summary['seconds']:.0f} s")
    return {"summary": summary, "rows": rows}


def figure(args) -> dict:
    from iqa_map.core.map.tiling import Grid
    from iqa_map.core.io.drawing import contact_sheet

    runs = sorted(Path(args.save).glob("*.pt")) if args.save else []
    if not runs:
        raise SystemExit("figure needs quality's saved results: run `quality --save DIR` first, then `figure --save DIR`")
    best = None
    for f in runs:  # the photo where pasting shows most: there blending has most to hide
        r = torch.load(f)
        h, w = r["input"].shape[-2:]
        grid = Grid(h, w, args.tile, args.overlap, align=8)
        if sorted({b[:2] for b in map(tuple, r["boxes"])}) != sorted({b[:2] for b in grid.boxes()}):
            raise SystemExit(f"{f} was made with other tiles than --tile {args.tile} --overlap {args.overlap}")
        ratio = seam_ratio(r["pasted"], r["input"], grid)
        if best is None or ratio > best[0]:
            best = (ratio, f, r, grid)
    ratio, f, r, grid = best
    y, x, half = grid.rows[1], grid.cols[1], 48  # where the first interior row and column of tiles begin
    crop = (slice(None), slice(None), slice(max(y - half, 0), y + half), slice(max(x - half, 0), x + half))
    names = ("input", "whole", "tiled", "pasted")
    imgs = [r[k][crop] for k in names]
    gain = 8  # the enhancement is a few grey levels: amplified about mid-grey to be seen
    diffs = [(0.5 + gain * (r[k] - r["input"]).mean(1, keepdim=True).expand(-1, 3, -1, -1))[crop] for k in names[1:]]
    up = [torch.nn.functional.interpolate(t, scale_factor=3, mode="nearest") for t in imgs + diffs]
    labels = list(names) + [f"{k} - input, x{gain}" for k in names[1:]]
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(up[:4] + [torch.full_like(up[0], 1.0)] + up[4:], labels[:4] + [""] + labels[4:],
                  columns=4).save(args.figure)
    print(f"{f.stem}: pasted seam ratio {ratio:.3f}; tiles begin at row {y}, column {x} -> {args.figure}")
    return {"image": f.stem, "pasted_seam": ratio, "corner": [y, x], "figure": str(args.figure)}


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "child":
        w, h, tile, overlap, threads = map(int, sys.argv[2:7])
        print(json.dumps(child(w, h, tile, overlap, threads)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["memory", "quality", "figure"])
    ap.add_argument("--sizes", default="512x512,1024x768,1536x1152,2048x1536")
    ap.add_argument("--tiled-only", default="4032x3024", help="sizes run in tiles only (too large whole)")
    ap.add_argument("--tile", type=int, default=None, help="tile size (memory: 768, quality: 192)")
    ap.add_argument("--overlap", type=int, default=None, help="tile overlap (memory: 64, quality: 48)")
    ap.add_argument("--limit", type=int, default=8, help="quality: the first N dev photos")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", default=None, metavar="DIR", help="quality: save each photo's results (torch) here; a rerun reuses them")
    ap.add_argument("--figure", default=str(REPO / "docs" / "bench_tiles_seams.png"), help="figure: PNG to write")
    ap.add_argument("--out", default=None, help="result JSON (default out/bench/tiles_<part>.json)")
    args = ap.parse_args(argv)
    from iqa_map.core.map.tiling import DEFAULT_OVERLAP, DEFAULT_TILE

    small = args.part != "memory"
    args.tile = args.tile or (192 if small else DEFAULT_TILE)
    args.overlap = args.overlap if args.overlap is not None else (48 if small else DEFAULT_OVERLAP)
    result = {"memory": memory, "quality": quality, "figure": figure}[args.part](args)
    out = Path(args.out or REPO / "out" / "bench" / f"tiles_{args.part}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "result": result}, indent=2))


if __name__ == "__main__":
    main()
