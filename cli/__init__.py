"""Command line: ``iqa-map`` / ``python -m iqa_map``.

    iqa-map enhance photo.jpg old_photos/ -o out/ --prior builtin --report out/report.json
    iqa-map score photo.jpg --prior niqe --prior brisque
    iqa-map calibrate my_photos/ --prior musiq --weights-dir ~/iqa-weights
    iqa-map compare photo.jpg -o out/cmp --prior niqe --prior brisque --prior piqe
    iqa-map rank seed_*.png --prior builtin -o best.png       (or --mode softmax / tiles)
    iqa-map qmap photo.jpg -o out/maps --prior piqe   # default: cnniqa-builtin
    iqa-map enhance photo.jpg -o out/ --adaptive-fidelity cnniqa-builtin
    iqa-map sr-finetune --model 4x.pth -o 4x_iqa.safetensors --data hr_photos/ --prior niqe --steps 150
    iqa-map upscale photo.jpg --model 4x_iqa.safetensors -o out/ --prior niqe
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

from . import options

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
FUSION_HELP = ("how several --prior scores combine (calibrated 0-100): mean (default), geometric (one low score "
               "drags the result down) or softmin (close to the worst member)")


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


def build_prior(specs, weights_dir=None, device=None, fusion="mean"):
    """One prior from ``--prior name[:weight]`` options (several are fused on calibrated scores)."""
    from ..core.map.pipeline import load_prior

    return load_prior(specs, fusion=fusion, weights_dir=weights_dir, device=device)


def _output_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create output folder {out}: {e.strerror}") from None
    probe = out / ".iqa-map-write-test"
    try:  # os.access lies for root and on some network filesystems: try it
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise CliError(f"output folder {out} is not writable: {e.strerror}") from None
    return out


def _inputs(items) -> list[Path]:
    from ..core.io.imageio import find_images

    files = find_images(items)
    if not files:
        raise CliError("no input images found")
    return files


def _read(path, note=True):
    """The photo at ``path`` (:func:`read_photo`); what the reader warns of (an animation's unused frames)
    is printed as a note, or with ``note=False`` left unsaid, having been said when the inputs were checked."""
    import warnings

    from ..core.io.imageio import ImageWarning, read_photo

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImageWarning)
        photo = read_photo(path)
    for w in caught:
        if not issubclass(w.category, ImageWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        elif note:  # on stderr, as errors are: stdout may be JSON
            print(f"note: {w.message}", file=sys.stderr)
    return photo


def cmd_enhance(args) -> int:
    from tqdm import tqdm

    settings, tiles = options.map_settings(args), options.tile_settings(args)
    files = _inputs(args.inputs)
    out = _output_dir(args.output)
    todo = [f for f in files if args.force or not (out / f"{f.stem}_enhanced.png").exists()]
    if len(todo) < len(files):
        print(f"skipping {len(files) - len(todo)} image(s) already enhanced in {out} (use --force to redo)")
    if not todo:
        return 0
    valid, failed = _readable(todo)
    from ..core.map import batch
    from .workers import EnhanceWorker, settings_dicts

    settings_d, tiles_d = settings_dicts(settings, tiles)
    kwargs = dict(model=args.model, dtype=args.dtype, cuda_graphs=args.cuda_graphs, compile=args.compile,
                  prompt=args.prompt,
                  model_config=args.model_config,
                  prior=args.prior or ["builtin"], fusion=args.fusion, monitors=args.monitor,
                  weights_dir=args.weights_dir, device=args.device, settings=settings_d, tiles=tiles_d, out=str(out),
                  protect=[str(f) for f in files], threads=args.threads_per_worker if args.ray else None,
                  progress=not args.ray)
    reports = {}
    args.enhance_batch = (files, valid, out, reports)  # what main() reports and keeps when the batch stops part way
    results = batch.run(EnhanceWorker, kwargs, [str(f) for f in valid], **_ray_options(args))
    for f, r in tqdm(results, desc="images", unit="img", total=len(valid), disable=len(valid) < 2):
        f = Path(f)
        name = r["settings"]["prior"]
        reports[str(f)] = {**r, "preset": args.preset}
        print(f"{f.name}: {name} {r['input_scores'][name]:.3f} -> {r['output_scores'][name]:.3f}, "
              f"PSNR vs input {r['psnr_vs_input']:.2f} dB, {r['wall_seconds']:.1f} s -> {r['output']}")
        for ev in r["events"]:
            print(f"  note: {ev}")
    _write_report(args.report, reports, files)
    return 1 if failed else 0


def _ray_options(args) -> dict:
    """How ``core.map.batch.run`` spreads the work: here, or on the Ray cluster ``--ray`` names."""
    if not getattr(args, "ray", None):
        return {}
    if args.workers < 1 or args.gpus_per_worker < 0:
        raise CliError("--workers must be at least 1 and --gpus-per-worker at least 0")
    return dict(ray_address=args.ray, workers=args.workers, gpus_per_worker=args.gpus_per_worker)


def _load_model(args):
    from ..core.models.loading import DTYPES, load_model

    return load_model(args.model, device=args.device, dtype=DTYPES[args.dtype], config=args.model_config,
                      prompt=args.prompt, cuda_graphs=args.cuda_graphs, compile=args.compile)


def _readable(files) -> tuple[list, int]:
    """(the inputs that can be read, how many cannot): every input is checked before the slow part, so a bad
    file is reported at once; none readable is an error."""
    valid, failed = [], 0
    for f in files:
        try:
            _read(f)
            valid.append(f)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    if not valid:
        raise CliError("none of the inputs can be used")
    return valid, failed


def _write_report(path, reports: dict, files) -> None:
    """The JSON report of the images done (one image: its report; several: keyed by input), atomically.

    Entries of an earlier report at ``path`` are kept for this run's inputs that were skipped because their
    output exists, so a batch resumed after Ctrl-C or a full disk ends with the report of every image."""
    if not path or not reports:
        return
    path = Path(path)
    entries = {k: {**v, "input": k} for k, v in reports.items()}
    try:
        old = json.loads(path.read_text())
        old = [old] if "output" in old else list(old.values())
    except (OSError, ValueError, TypeError, AttributeError):  # none yet, or not one of ours
        old = []
    wanted = {str(f) for f in files}
    for entry in old:
        k = entry.get("input") if isinstance(entry, dict) else None
        if k in wanted and k not in entries and Path(str(entry.get("output", ""))).is_file():
            entries[k] = entry
    ordered = {str(f): entries[str(f)] for f in files if str(f) in entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_text(json.dumps(ordered if len(ordered) != 1 else next(iter(ordered.values())), indent=2,
                                  default=str))
        os.replace(tmp, path)  # a full disk or Ctrl-C never leaves a half-written report
    finally:
        tmp.unlink(missing_ok=True)


def _stopped(args) -> list[str]:
    """After an enhance batch stopped part way (Ctrl-C, a full disk, out of memory): what was kept,
    the report of the finished images written; lines to print."""
    files, todo, out, reports = getattr(args, "enhance_batch", (None, None, None, None))
    if not reports:
        return []
    done = f"note: {len(reports)} of {len(todo)} image(s) finished before it stopped"
    lines = [f"{done}; their outputs in {out} are complete"]
    if args.report:
        try:
            _write_report(args.report, reports, files)
            lines.append(f"note: the report of the finished image(s) is in {args.report}")
        except OSError as err:
            lines.append(f"note: the report could not be written ({err.strerror or err})")
    return lines


def _enhance_one(model, img, prior, settings, tiles, monitors=(), name="", bar=False):
    """:func:`~iqa_map.core.map.pipeline.enhance` on one photo, saying first when it is split into tiles;
    ``bar``: a progress bar over every tile's iterations."""
    from tqdm import tqdm

    from ..core.map.pipeline import enhance
    from ..core.map.tiling import tile_grid

    h, w = img.shape[-2:]
    grid = tile_grid(model.denoiser, model.codec, h, w, tiles.tile, tiles.tile_overlap) if tiles.tile else None
    if grid is not None:
        print(f"{name}: {w}x{h} is larger than --tile {tiles.tile}: {len(grid)} tiles of {grid.tile} pixels, "
              f"{grid.overlap} shared between neighbours")
    per_tile = settings.iterations + 1
    progress = tqdm(total=per_tile * (len(grid) if grid else 1), desc=name, unit="it", leave=False, disable=not bar)

    def callback(info):
        # Tiles may stop early (target, patience, guard): the bar counts each tile's full budget.
        progress.n = info.get("tile", 0) * per_tile + info["iteration"] + 1
        progress.set_postfix(score=f"{info['score']:.2f}", fid=f"{info['fidelity']:.4f}",
                             **({"tile": f"{info['tile'] + 1}/{info['tiles']}"} if grid else {}))

    try:
        return enhance(img, model=model, prior=prior, monitors=monitors, settings=settings, tiles=tiles,
                       callback=callback)
    finally:
        progress.close()


def cmd_sr_finetune(args) -> int:
    from tqdm import tqdm

    from ..core import sr

    settings = options.sr_settings(args, bool(args.prior))
    if settings.selection in ("sma", "smp", "amo") and not args.prior:
        raise CliError(f"--select {settings.selection} scores the candidates: give --prior")
    if settings.selection != "orig" and not (args.candidates or args.generate):
        print(f"note: --select {settings.selection} without --candidates or --generate: only the candidates beside "
              "each photo (<stem>_*.png) are used", file=sys.stderr)
    sr.output_paths(args.output)  # a bad -o is known before anything slow
    prior = build_prior(args.prior, args.weights_dir, args.device, args.fusion) if args.prior else None
    bar = None

    def progress(info):
        nonlocal bar
        bar = bar or tqdm(total=settings.steps, initial=info["step"] - 1, desc="sr-finetune", unit="step")
        bar.n = info["step"]
        bar.set_postfix(l1=f"{info['l1']:.4f}", **({"q": f"{info['q']:.2f}"} if info["q"] is not None else {}))
        e = info.get("eval")
        if e:  # the held-out judges (the hack guard): above the bar, not across it
            tqdm.write(f"held-out at step {e['step']}: judges {e['judge']:.2f}, grid share {e['grid']:.3f}, "
                       f"PSNR-Y {-e['psnr_drop']:+.2f} dB, flat texture {e['texture']:.2f} (HR {e['texture_hr']:.2f})"
                       + ("" if e["admissible"] else " - not kept"))

    try:
        res = sr.finetune_upscaler(args.model, args.data, args.output, prior, settings,
                                   candidates_dir=args.candidates, generate=args.generate or (), lr_dir=args.lr_data,
                                   resume=args.resume, force=args.force, callback=progress, device=args.device,
                                   prior_spec=",".join(args.prior) or None,
                                   log=lambda m: print(m, file=sys.stderr))
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(f"note: the checkpoint {sr.output_paths(args.output)[2]} holds the finished steps; run the same "
              "command with --resume to continue", file=sys.stderr)
        raise
    if bar is not None:
        bar.close()
    h = res.result.history
    qs = [x["q"] for x in h if x["q"] is not None]
    print(f"wrote {res.model_path}" + (f" and {res.lora_path}" if res.lora_path else "")
          + (f"; Q on the training crops {qs[0]:.2f} -> {sum(qs[-10:]) / len(qs[-10:]):.2f} (last 10 steps)"
             if qs else ""))
    g = res.result.record.get("guard")
    if g:
        stop = f", stopped at step {g['stopped']['step']} ({g['stopped']['reason']})" if g["stopped"] else ""
        print(f"hack guard: kept step {g['best_step']} by the held-out judges{stop}"
              + ("; the base was kept: no step improved them without a grid or a PSNR cost over the limits"
                 if g["best_step"] == 0 else ""))
    if args.report:
        _write_json(args.report, {"model": str(res.model_path), "lora": str(res.lora_path or ""),
                                  "metadata": res.metadata, "history": h})
    return 0


def _write_json(path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_text(json.dumps(obj, indent=2, default=str))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cmd_upscale(args) -> int:
    from tqdm import tqdm

    from ..core import sr

    if args.tile < 0 or 0 < args.tile < 32:
        raise CliError(f"--tile must be 0 (never tile) or at least 32 pixels; got {args.tile}")
    model = sr.load_upscaler(args.model, device=args.device)
    if args.lora:
        model = sr.apply_lora(model, args.lora)
    files = _inputs(args.inputs)
    out = _output_dir(args.output)
    name = lambda f: out / f"{f.stem}_x{model.scale}.png"  # noqa: E731
    todo = [f for f in files if args.force or not name(f).exists()]
    if len(todo) < len(files):
        print(f"skipping {len(files) - len(todo)} image(s) already upscaled in {out} (use --force to redo)")
    if not todo:
        return 0
    valid, failed = _readable(todo)
    from ..core.map import batch
    from .workers import UpscaleWorker

    kwargs = dict(model=str(args.model), lora=args.lora, prior=args.prior, weights_dir=args.weights_dir,
                  device=args.device, tile=args.tile, overlap=args.tile_overlap, out=str(out),
                  protect=[str(f) for f in files], threads=args.threads_per_worker if args.ray else None)
    reports = {}
    local = (lambda: UpscaleWorker(**kwargs, loaded=model)) if not args.ray else None  # noqa: E731
    for f, entry in tqdm(batch.run(UpscaleWorker, kwargs, [str(f) for f in valid], local_worker=local,
                                   **_ray_options(args)), desc="upscale", unit="img", total=len(valid),
                         disable=len(valid) < 2):
        f = Path(f)
        reports[str(f)] = entry
        score = "".join(f", {k} {v:.2f}" for k, v in entry.get("scores", {}).items())
        tqdm.write(f"{f.name}: {entry['input_size'][0]}x{entry['input_size'][1]} -> {entry['size'][0]}x"
                   f"{entry['size'][1]}{score}{entry.get('scale_note', '')} -> {entry['output']}")
    if args.report:
        _write_report(args.report, reports, files)
    return 1 if failed else 0


def _scale_of(prior) -> str:
    """'/100' after a comparable score that is calibrated, '' after a native one."""
    from ..core.priors.base import is_calibrated
    return "/100" if is_calibrated(prior) else " (native)"


def _cal_or_native(prior, img):
    import torch

    from ..core.map import comparable_score

    with torch.no_grad():
        return float(comparable_score(prior, img)[0])


def cmd_compare(args) -> int:
    """One photo enhanced under each prior; contact sheet + cross-score matrix (optimised for A, scored by B)."""
    from tqdm import tqdm

    from ..core import priors as P
    from ..core.io.drawing import contact_sheet, same_size
    from ..core.io.imageio import write_photo

    if len(args.prior) < 2:
        raise CliError("compare needs at least two --prior options")
    settings, tiles = options.map_settings(args), options.tile_settings(args)
    if args.input.is_dir():
        return _compare_dataset(args, settings, tiles)
    if args.ray:
        raise CliError("--ray spreads the photos of a folder: give compare a folder")
    photo = _read(args.input)
    img = photo.image
    out = _output_dir(args.output)
    loaded = [P.load(n, weights_dir=args.weights_dir, device=args.device) for n in args.prior]
    model = _load_model(args)
    results = {}
    for prior in tqdm(loaded, desc="priors", unit="prior"):
        res = _enhance_one(model, img, prior, settings, tiles, name=f"{args.input.name} ({prior.name})")
        results[prior.name] = res.image
        write_photo(res.image, out / f"{args.input.stem}_{prior.name}.png", like=photo, protect=[args.input])
    names = [p.name for p in loaded]
    matrix = {a: {b.name: _cal_or_native(b, results[a].to(b.device)) for b in loaded} for a in names}
    matrix["input"] = {b.name: _cal_or_native(b, img.to(b.device)) for b in loaded}
    tiles = same_size([img] + [results[n] for n in names])
    labels = ["input\n" + " ".join(f"{b}={matrix['input'][b]:.1f}" for b in names)] + \
             [f"optimised for {a}\n" + " ".join(f"{b}={matrix[a][b]:.1f}" for b in names) for a in names]
    contact_sheet(tiles, labels, columns=min(len(tiles), 4)).save(out / f"{args.input.stem}_compare.png")
    (out / f"{args.input.stem}_compare.json").write_text(json.dumps(
        {"rows": "optimised for", "columns": "scored by", "scale": "calibrated 0-100 where available",
         "matrix": matrix}, indent=2))
    width = max(len(n) for n in names + ["optimised for"]) + 2
    print("optimised for \\ scored by".ljust(width) + "".join(n[:12].rjust(13) for n in names))
    for a in ["input"] + names:
        print(a.ljust(width) + "".join(f"{matrix[a][b]:13.2f}" for b in names))
    print(f"contact sheet: {out / (args.input.stem + '_compare.png')}")
    return 0


def _compare_dataset(args, settings, tiles) -> int:
    """Every photo of a folder under every prior, each output scored by every prior: the dataset-level report
    (core/map/comparison.py). Each finished (photo, prior) is kept as a row file, so a stopped run resumes."""
    from tqdm import tqdm

    from ..core.map import batch, comparison
    from .workers import CompareWorker, settings_dicts

    files = _inputs([args.input])
    out = _output_dir(args.output)
    rows_dir = out / "rows"
    rows_dir.mkdir(exist_ok=True)
    row_path = lambda f, a: rows_dir / f"{f.stem}__{a}.json"  # noqa: E731
    done = {}
    for f in files:
        for a in args.prior:
            try:
                row = json.loads(row_path(f, a).read_text())
                if Path(row["output"]).is_file() and not args.force:
                    done[(f.name, a)] = row
            except (OSError, ValueError, KeyError):
                pass
    tasks = [(str(f), a) for f in files for a in args.prior if (f.name, a) not in done]
    if done:
        print(f"{len(done)} of {len(files) * len(args.prior)} (photo, prior) results already in {out}"
              + ("" if tasks else ": nothing to do"))
    if tasks:
        valid, failed = _readable(sorted({Path(t[0]) for t in tasks}))
        if failed:
            raise CliError("some inputs cannot be read (see above): remove them from the folder and run again")
        settings_d, tiles_d = settings_dicts(settings, tiles)
        kwargs = dict(priors=list(args.prior), weights_dir=args.weights_dir, device=args.device,
                      threads=args.threads_per_worker, model=args.model, dtype=args.dtype,
                      cuda_graphs=args.cuda_graphs, compile=args.compile, prompt=args.prompt,
                      model_config=args.model_config, settings=settings_d, tiles=tiles_d, out=str(out),
                      protect=[str(f) for f in files])
        for (path, a), row in tqdm(batch.run(CompareWorker, kwargs, tasks, **_ray_options(args)), total=len(tasks),
                                   desc="photo x prior", unit="run"):
            path = Path(path)
            tmp = row_path(path, a).with_suffix(".part")
            tmp.write_text(json.dumps(row, indent=1))
            tmp.replace(row_path(path, a))  # a row exists only complete
            done[(path.name, a)] = row
    rows = [done[(f.name, a)] for f in files for a in args.prior]
    report = comparison.summarise(rows, list(args.prior), seed=settings.seed)
    paths = comparison.write(report, out, outputs={(r["photo"], r["optimised_for"]): r["output"] for r in rows},
                             inputs={r["photo"]: r["input"] for r in rows})
    names = list(args.prior)
    width = max(len(n) for n in names + ["optimised for"]) + 2
    print(f"{report['photos']} photos; mean score [{int(report['bootstrap']['level'] * 100)} % bootstrap interval]")
    print("optimised for \\ scored by".ljust(width) + "".join(n[:22].rjust(24) for n in names))
    for a, cells in report["matrix"].items():
        print(a.ljust(width) + "".join(f"{c['mean']:8.2f} [{c['ci'][0]:6.2f},{c['ci'][1]:6.2f}]".rjust(24)
                                       for c in cells.values()))
    print(f"report: {paths['html']} ({paths['json'].name}, {paths['csv'].name})")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.output), iterations=args.iterations, seed=args.seed)
    return 0


def cmd_score(args) -> int:
    import torch

    from ..core import priors
    from ..core.io.imageio import load_image

    files = _inputs(args.inputs)
    names = args.prior or ["niqe", "brisque", "piqe"]
    loaded = [priors.load(n, weights_dir=args.weights_dir, device=args.device) for n in names]
    rows, failed = {}, 0
    for f in files:
        try:
            img = load_image(f)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        with torch.no_grad():
            rows[str(f)] = {p.name: {"native": float(p.native(img.to(p.device))[0]),
                                     "calibrated": float(p.calibrated(img.to(p.device))[0])
                                     if p.is_calibrated else None} for p in loaded}
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("image\t" + "\t".join(f"{p.name}({'lower' if p.lower_better else 'higher'} better)" for p in loaded))
        for f, r in rows.items():
            print(Path(f).name + "\t" + "\t".join(f"{v['native']:.4f}" for v in r.values()))
    return 1 if failed else 0


def cmd_rank(args) -> int:
    """Rank candidate results of one scene by a prior; optionally write the selection."""
    from ..core.quality import select as S
    from ..core.io.imageio import write_photo

    files = _inputs(args.inputs)
    if len(files) < 2:
        raise CliError("rank needs at least two candidate images")
    photos = [_read(f) for f in files]
    imgs = [p.image for p in photos]
    prior = build_prior(args.prior, args.weights_dir, args.device, args.fusion)
    try:
        stacked = S.stack_candidates([i.to(prior.device) for i in imgs])
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.mode == "tiles":
        sel = S.select(prior, stacked)
        image, choice = S.select_tiles(prior, stacked, tile=args.tile, overlap=args.overlap)
    else:
        sel = S.select(prior, stacked, mode=args.mode, temperature=args.temperature, seed=args.seed)
        image, choice = stacked[sel.index:sel.index + 1], None
    rows = [{"rank": r + 1, "file": str(files[i]), "score": float(sel.scores[i]),
             "probability": float(sel.probabilities[i])} for r, i in enumerate(sel.order)]
    if args.json:
        print(json.dumps({"prior": prior.name, "mode": args.mode, "selected": str(files[sel.index]),
                          "ranking": rows, "tile_choice": None if choice is None else choice.tolist()}, indent=2))
    else:
        print(f"rank\t{prior.name}\tp\tfile")
        for r in rows:
            print(f"{r['rank']}\t{r['score']:.2f}\t{r['probability']:.3f}\t{Path(r['file']).name}")
        if args.mode != "tiles":
            print(f"selected ({args.mode}): {files[sel.index].name}")
    if args.output:
        # Tiles are blended from every candidate; the metadata (profile, EXIF, alpha, depth) is the best one's.
        dest = write_photo(image, Path(args.output), like=photos[sel.index], protect=files)
        print(f"wrote {dest}")
    return 0


def cmd_qmap(args) -> int:
    """Quality map of each input: a mask PNG (white = worst) and a colour heatmap with legend."""
    from ..core import priors
    from ..core.io.imageio import load_image, save_image
    from ..core.io.drawing import heatmap
    from ..core.quality.qmap import quality_map

    files = _inputs(args.inputs)
    out = _output_dir(args.output)
    prior = priors.load(args.prior, weights_dir=args.weights_dir, device=args.device)
    failed = 0
    for f in files:
        try:
            img = load_image(f).to(prior.device)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        qm = quality_map(prior, img, window=args.window, stride=args.stride, normalise=args.normalise)
        mask = 1 - qm.badness if args.invert else qm.badness
        m = save_image(mask.expand(-1, 3, -1, -1), out / f"{f.stem}_qmap_{prior.name}.png", protect=files)
        hm = save_image(heatmap(qm, img, label=prior.name), out / f"{f.stem}_qmap_{prior.name}_heatmap.png",
                        protect=files)
        s, flat = qm.scores, float(qm.flat.mean())
        note = f" ({flat:.0%} flat: not judged, shown at the photo's median)" if flat > 0 else ""
        print(f"{f.name}: {prior.name} window {qm.window} stride {qm.stride}: scores {float(s.min()):.1f}.."
              f"{float(s.max()):.1f}{note} -> {m.name}, {hm.name}")
    return 1 if failed else 0


def cmd_priors(args) -> int:
    from ..core import priors

    print("\n".join(priors.available()))
    print("also: ms-<name> (multi-scale), <arch>:<file.safetensors> with arch in "
          + ", ".join(sorted(priors.local.ARCHS)))
    return 0


def cmd_calibrate(args) -> int:
    from ..core import priors

    prior = priors.load(args.prior, weights_dir=args.weights_dir, device=args.device)
    save_to = args.save or args.weights_dir or os.environ.get(priors.ENV_VAR)
    if not save_to:
        raise CliError("say where to save the constants: --save FILE.json or --weights-dir DIR (or $IQA_MAP_WEIGHTS)")
    cal = priors.fit_calibration(prior, args.folder, save_to=save_to)
    print(f"{prior.name}: C={cal.C:.6g} S={cal.S:.6g} (saved to {save_to})")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="iqa-map", description="NR-IQA priors for MAP photo enhancement in "
                                 "diffusion latents.", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    from ..core.models.loading import DTYPES
    from ..core.map.settings import GROUPS, PRESET_HELP, PRESETS, MapSettings, TileSettings

    def map_options(p, groups=None):
        """The model, the preset and the settings generated from their metadata (core/map/settings.py)."""
        p.add_argument("--model", default="builtin", help="builtin | bfcnn:<file> | "
                       "<diffusers SD 1.x/2.x, Flux.1 or SD3 folder> | <single-file SD checkpoint> (default builtin)")
        p.add_argument("--model-config", metavar="DIR",
                       help="for a single-file checkpoint: a local diffusers folder of the same architecture whose "
                            "configs and tokenizer it uses (default: the Hugging Face cache); nothing is downloaded")
        p.add_argument("--prompt", default="", help="text describing the photo, for Stable Diffusion, Flux and SD3 "
                       "models (default: empty, unconditional; guidance stays 1, where the inversion is exact)")
        p.add_argument("--dtype", default="fp32", choices=list(DTYPES),
                       help="precision of the diffusion model's network (the sampler's state stays float64): "
                            "fp16 halves a Stable Diffusion model's GPU memory (default %(default)s)")
        p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                       help="on a CUDA device, replay the network's evaluations from CUDA graphs: about 3x faster "
                            "for Stable Diffusion at batch 1, same results, a little more GPU memory (default on)")
        p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                       help="evaluate the diffusion network through torch.compile: minutes of compiling per photo "
                            "size, then faster evaluations (several times on a CPU); for folders of same-sized "
                            "photos; falls back to plain evaluation where compiling fails (default off)")
        p.add_argument("--preset", default="default", choices=list(PRESETS),
                       help="starting settings, which options given explicitly override: " + "; ".join(
                           f"{k} ({v})" for k, v in PRESET_HELP.items()))
        options.add_settings(p, MapSettings, groups)
        options.add_settings(p, TileSettings)

    def ray_options(p):
        g = p.add_argument_group("Ray (optional: pip install 'iqa-map[ray]')")
        g.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="spread the photos over a Ray cluster: 'local' starts one on this machine (127.0.0.1), "
                            "else an existing cluster's address (ray://host:10001 or host:6379); inputs and the "
                            "output folder must be on storage every node sees")
        g.add_argument("--workers", type=int, default=1, help="worker processes, each loading the model and "
                       "priors once (default %(default)s)")
        g.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs reserved per worker (default "
                       "%(default)s; 1 on a GPU cluster)")
        g.add_argument("--threads-per-worker", type=int, default=1, help="torch CPU threads per worker (default "
                       "%(default)s)")

    def common(p):
        p.add_argument("--weights-dir", default=None,
                       help="folder with pyiqa weight files and calibration constants (default $IQA_MAP_WEIGHTS)")
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")

    e = sub.add_parser("enhance", help="enhance photos by latent MAP ascent")
    e.add_argument("inputs", nargs="+", help="image files or folders")
    e.add_argument("-o", "--output", required=True, help="output folder (<stem>_enhanced.png)")
    e.add_argument("--prior", action="append", default=[], metavar="NAME[:WEIGHT]",
                   help="NR-IQA prior; repeat to fuse several (default: builtin)")
    e.add_argument("--fusion", default="mean", choices=["mean", "geometric", "softmin"], help=FUSION_HELP)
    e.add_argument("--monitor", action="append", default=[], metavar="NAME",
                   help="held-out prior for the hack guard (scored, never optimised)")
    map_options(e)
    e.add_argument("--report", default=None, help="write the JSON report here")
    e.add_argument("--force", action="store_true", help="redo images whose output already exists")
    ray_options(e)
    common(e)
    e.set_defaults(func=cmd_enhance)

    cp = sub.add_parser("compare", help="enhance a photo (or every photo of a folder) under several priors; "
                        "cross-score matrix (optimised for A, scored by B), for a folder with bootstrap intervals "
                        "and an HTML report")
    cp.add_argument("input", type=Path, help="a photo, or a folder of photos (dataset-level report)")
    cp.add_argument("--force", action="store_true", help="redo (photo, prior) results that exist")
    cp.add_argument("-o", "--output", required=True)
    cp.add_argument("--prior", action="append", default=[], metavar="NAME", required=True)
    map_options(cp, groups=[g for g in GROUPS if g != "guard"])  # no monitors here: no hack guard
    ray_options(cp)
    common(cp)
    cp.set_defaults(func=cmd_compare)

    dm = sub.add_parser("demo", help="degrade a bundled sample photo and enhance it with the built-in defaults")
    dm.add_argument("-o", "--output", default="out/demo")
    dm.add_argument("--iterations", type=int, default=None)
    dm.add_argument("--seed", type=int, default=0)
    dm.set_defaults(func=cmd_demo)

    s = sub.add_parser("score", help="score images with NR-IQA priors")
    s.add_argument("inputs", nargs="+")
    s.add_argument("--prior", action="append", default=[], metavar="NAME")
    s.add_argument("--json", action="store_true")
    common(s)
    s.set_defaults(func=cmd_score)

    rk = sub.add_parser("rank", help="rank candidate results of one scene by a prior; pick the best, one by "
                        "softmax, or the best per tile")
    rk.add_argument("inputs", nargs="+", help="candidate images (same scene, same size) or a folder of them")
    rk.add_argument("--prior", action="append", default=[], metavar="NAME[:WEIGHT]", help="default: builtin")
    rk.add_argument("--fusion", default="mean", choices=["mean", "geometric", "softmin"], help=FUSION_HELP)
    rk.add_argument("--mode", default="argmax", choices=["argmax", "softmax", "tiles"])
    rk.add_argument("--temperature", type=float, default=5.0, help="softmax temperature, calibrated points")
    rk.add_argument("--seed", type=int, default=0)
    rk.add_argument("--tile", type=int, default=128)
    rk.add_argument("--overlap", type=int, default=32)
    rk.add_argument("-o", "--output", default=None, help="write the selected (or tile-blended) image here")
    rk.add_argument("--json", action="store_true")
    common(rk)
    rk.set_defaults(func=cmd_rank)

    qm = sub.add_parser("qmap", help="spatial quality map of images (mask PNG + heatmap PNG)")
    qm.add_argument("inputs", nargs="+")
    qm.add_argument("-o", "--output", required=True)
    qm.add_argument("--prior", default="cnniqa-builtin")
    qm.add_argument("--window", type=int, default=48)
    qm.add_argument("--stride", type=int, default=8)
    qm.add_argument("--normalise", default="minmax", choices=["minmax", "absolute"])
    qm.add_argument("--invert", action="store_true", help="white = best instead of worst")
    common(qm)
    qm.set_defaults(func=cmd_qmap)

    from ..core.sr import settings as srs

    ft = sub.add_parser("sr-finetune", help="fine-tune an upscaler (any model ComfyUI's Load Upscale Model reads) "
                        "with LoRA, an NR-IQA prior and optionally IQA-selected targets, under a hack guard",
                        description="Fine-tune an upscaler with L1 - lQ Q(SR): LoRA adapters train and are merged "
                        "into a model of the same architecture and scale. The hack guard is on by default: the IQA "
                        "gradient is balanced against the fidelity gradient, a grid at the scale's period is "
                        "penalised, and held-out judges decide when to stop and which step to keep (docs/sr.md).")
    ft.add_argument("--model", required=True, help="the base upscaler file (.pth, .safetensors, ...)")
    ft.add_argument("-o", "--output", required=True, help="the tuned model (.safetensors or .pth); the LoRA is "
                    "written beside it as <stem>_lora.safetensors, the checkpoint as <output>.ckpt")
    ft.add_argument("--data", required=True, help="folder of HR photos (LR inputs are made by the model's scale)")
    ft.add_argument("--lr-data", default=None, metavar="DIR", help="LR photos of the same names (instead of bicubic)")
    ft.add_argument("--prior", action="append", default=[], metavar="NAME[:WEIGHT]",
                    help="the Q in L1 - lQ Q; repeat to fuse several (none: L1 only)")
    ft.add_argument("--fusion", default="mean", choices=["mean", "geometric", "softmin"], help=FUSION_HELP)
    ft.add_argument("--candidates", default=None, metavar="DIR",
                    help="folder of candidate targets <stem>_*.png (also looked for beside each photo)")
    ft.add_argument("--generate", action="append", choices=["sharpen"], default=[],
                    help="add generated candidates: sharpen = the photo unsharp-masked at three strengths")
    ft.add_argument("--resume", action="store_true", help="continue the run in <output>.ckpt exactly")
    ft.add_argument("--force", action="store_true", help="replace existing output files")
    ft.add_argument("--report", default=None, help="write a JSON report (settings, losses and Q per step, the "
                    "held-out curve of the hack guard)")
    options.add_settings(ft, srs.SRSettings, titles=srs.GROUPS, presets={})
    common(ft)
    ft.set_defaults(func=cmd_sr_finetune)

    up = sub.add_parser("upscale", help="upscale photos with a model file (tiled for large inputs)")
    up.add_argument("inputs", nargs="+", help="image files or folders")
    up.add_argument("--model", required=True, help="upscaler file (any spandrel architecture)")
    up.add_argument("--lora", default=None, help="an IQA-MAP upscaler LoRA to apply to --model first")
    up.add_argument("-o", "--output", required=True, help="output folder (<stem>_x<scale>.png)")
    up.add_argument("--tile", type=int, default=512, metavar="PIXELS",
                    help="input tile side for large photos; 0 = never tile (default %(default)s)")
    up.add_argument("--tile-overlap", type=int, default=32, metavar="PIXELS", help="default %(default)s")
    up.add_argument("--prior", action="append", default=[], metavar="NAME", help="score the results")
    up.add_argument("--report", default=None, help="write the JSON report here")
    up.add_argument("--force", action="store_true", help="redo images whose output exists")
    ray_options(up)
    common(up)
    up.set_defaults(func=cmd_upscale)

    sub.add_parser("priors", help="list the prior names").set_defaults(func=cmd_priors)

    c = sub.add_parser("calibrate", help="fit a prior's 0-100 calibration on a folder of photos")
    c.add_argument("folder")
    c.add_argument("--prior", required=True)
    c.add_argument("--save", default=None, help="JSON file (default: the weights folder)")
    common(c)
    c.set_defaults(func=cmd_calibrate)
    return ap


def _explain(e: BaseException, args=None) -> str:
    """The one-line message for an error the user can act on: out of memory and a full disk say what to change."""
    text = str(e).strip()
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or \
            (isinstance(e, RuntimeError) and "out of memory" in text.lower()):  # torch's is a RuntimeError
        first = text.splitlines()[0] if text else type(e).__name__
        return (f"out of memory ({first}); try a smaller --tile (memory follows the tile's area: 512 takes "
                "under half of 768), --dtype fp16 (halves a Stable Diffusion model's GPU memory) or --device cpu; "
                "more or fewer --steps makes no difference (the gradient's memory does not grow with them)")
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        where = getattr(args, "output", None) or e.filename or "the output folder"
        return (f"the disk is full: no space left on the disk holding {where} ({e.strerror or text}); free some "
                "space there or give -o a folder on another disk, then run the same command again "
                "(finished outputs are skipped)")
    return text or type(e).__name__


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        message, code = str(e), EXIT_USAGE
    except (ValueError, FileNotFoundError, RuntimeError, OSError, MemoryError) as e:
        message, code = _explain(e, args), EXIT_USAGE
    except KeyboardInterrupt:
        message, code = ("interrupted (Ctrl-C); finished outputs are kept (none is half-written) and are skipped "
                         "when the same command is run again"), EXIT_INTERRUPTED
    print(message if code == EXIT_INTERRUPTED else f"error: {message}", file=sys.stderr)
    for line in _stopped(args):
        print(line, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
