"""``iqa-map enhance``: photos and folders enhanced by latent MAP ascent, resumable, here or on Ray."""
from __future__ import annotations

from pathlib import Path

from . import options
from .common import (add_common, add_model_options, add_note, add_prior, add_ray_options, inputs, model_kwargs,
                     output_dir, ray_kwargs, readable, write_report)


def add_parser(sub) -> None:
    e = sub.add_parser("enhance", help="enhance photos by latent MAP ascent",
                       description="Enhance photos by latent MAP ascent: each is inverted into the diffusion model's "
                       "latents, the latents climb the NR-IQA prior under a fidelity penalty, and the result is "
                       "written as <stem>_enhanced.png. Outputs that exist are skipped, so a stopped batch resumes.")
    e.add_argument("inputs", nargs="+", help="image files or folders")
    e.add_argument("-o", "--output", required=True, help="output folder (<stem>_enhanced.png)")
    add_prior(e, "NR-IQA prior; repeat to fuse several (default: builtin)", fusion=True)
    e.add_argument("--monitor", action="append", default=[], metavar="NAME",
                   help="held-out prior for the hack guard (scored, never optimised); repeat for several")
    add_model_options(e)
    e.add_argument("--report", default=None, metavar="FILE", help="write the JSON report here")
    e.add_argument("--force", action="store_true", help="redo images whose output already exists")
    add_ray_options(e)
    add_common(e)
    e.set_defaults(func=cmd_enhance)


def cmd_enhance(args) -> int:
    import dataclasses

    from tqdm import tqdm

    from ..core.map import batch
    from .workers import EnhanceWorker

    settings, tiles = options.map_settings(args), options.tile_settings(args)
    files = inputs(args.inputs)
    out = output_dir(args.output)
    todo = [f for f in files if args.force or not (out / f"{f.stem}_enhanced.png").exists()]
    if len(todo) < len(files):
        print(f"skipping {len(files) - len(todo)} image(s) already enhanced in {out} (use --force to redo)")
    if not todo:
        return 0
    valid, failed = readable(todo)
    kwargs = dict(**model_kwargs(args), prior=args.prior or ["builtin"], fusion=args.fusion, monitors=args.monitor,
                  weights_dir=args.weights_dir, device=args.device, settings=dataclasses.asdict(settings),
                  tiles=dataclasses.asdict(tiles), out=str(out), protect=[str(f) for f in files],
                  threads=args.threads_per_worker if args.ray else None, progress=not args.ray)
    reports = {}
    try:
        results = batch.run(EnhanceWorker, kwargs, [str(f) for f in valid], **ray_kwargs(args))
        for f, r in tqdm(results, desc="images", unit="img", total=len(valid), disable=len(valid) < 2):
            f = Path(f)
            name = r["settings"]["prior"]
            reports[str(f)] = {**r, "preset": args.preset}
            print(f"{f.name}: {name} {r['input_scores'][name]:.3f} -> {r['output_scores'][name]:.3f}, "
                  f"PSNR vs input {r['psnr_vs_input']:.2f} dB, {r['wall_seconds']:.1f} s -> {r['output']}")
            for ev in r["events"]:
                print(f"  note: {ev}")
    except BaseException as e:  # Ctrl-C, a full disk, out of memory: keep and say what finished
        for line in _stopped(args.report, reports, files, len(valid), out):
            add_note(e, line)
        raise
    write_report(args.report, reports, files)
    return 1 if failed else 0


def _stopped(report, reports: dict, files, todo: int, out) -> list[str]:
    """After a batch stopped part way: the report of the finished images written; the lines that say so."""
    if not reports:
        return []
    lines = [f"note: {len(reports)} of {todo} image(s) finished before it stopped; their outputs in {out} are "
             "complete"]
    if report:
        try:
            write_report(report, reports, files)
            lines.append(f"note: the report of the finished image(s) is in {report}")
        except OSError as err:
            lines.append(f"note: the report could not be written ({err.strerror or err})")
    return lines
