"""``iqa-map compare``: a photo, or every photo of a folder, enhanced under each of several priors and every output
scored by every prior: the "optimised for A, scored by B" matrix (core/map/comparison.py). One path for both: each
finished (photo, prior) is kept as a row file, so a stopped run resumes, and the pairs can run on Ray."""
from __future__ import annotations

from pathlib import Path

from . import options
from .common import (CliError, add_common, add_model_options, add_prior, add_ray_options, inputs, model_kwargs,
                     output_dir, ray_kwargs, readable)


def add_parser(sub) -> None:
    from ..core.map.settings import GROUPS

    cp = sub.add_parser("compare", help="enhance a photo (or every photo of a folder) under several priors; "
                        "cross-score matrix (optimised for A, scored by B) with bootstrap intervals and an HTML "
                        "report", description="Enhance a photo, or every photo of a folder, under each of several "
                        "priors, and score every output by every prior (calibrated 0-100 where available): the "
                        "matrix 'optimised for A, scored by B', averaged over the photos with paired bootstrap "
                        "intervals. Writes <stem>_<prior>.png per photo and prior; for one photo "
                        "<stem>_compare.png/.json/.csv/.html, for a folder comparison.json/.csv/.html.")
    cp.add_argument("input", type=Path, help="a photo, or a folder of photos (dataset-level report)")
    cp.add_argument("--force", action="store_true", help="redo (photo, prior) results that exist")
    cp.add_argument("-o", "--output", required=True, help="output folder")
    add_prior(cp, "a prior to enhance under and to score by; give at least two", required=True, metavar="NAME")
    add_model_options(cp, groups=[g for g in GROUPS if g != "guard"])  # no monitors here: no hack guard
    add_ray_options(cp)
    add_common(cp)
    cp.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    import dataclasses
    import json

    from tqdm import tqdm

    from ..core.io.files import atomic_path, write_json
    from ..core.map import batch, comparison
    from .workers import CompareWorker

    if len(args.prior) < 2:
        raise CliError("compare needs at least two --prior options")
    settings, tiles = options.map_settings(args), options.tile_settings(args)
    files = inputs([args.input])
    out = output_dir(args.output)
    rows_dir = out / "rows"
    rows_dir.mkdir(exist_ok=True)
    row_path = lambda f, a: rows_dir / f"{f.stem}__{a}.json"  # noqa: E731
    names = list(args.prior)
    done = {}
    for f in files:
        for a in names:
            try:
                row = json.loads(row_path(f, a).read_text())
                if Path(row["output"]).is_file() and not args.force:
                    done[(f.name, a)] = row
            except (OSError, ValueError, KeyError):
                pass
    tasks = [(str(f), a) for f in files for a in names if (f.name, a) not in done]
    if done:
        print(f"{len(done)} of {len(files) * len(names)} (photo, prior) results already in {out}"
              + ("" if tasks else ": nothing to do"))
    if tasks:
        valid, failed = readable(sorted({Path(t[0]) for t in tasks}))
        if failed:
            raise CliError("some inputs cannot be read (see above): remove them from the folder and run again")
        kwargs = dict(**model_kwargs(args), priors=names, weights_dir=args.weights_dir, device=args.device,
                      threads=args.threads_per_worker, settings=dataclasses.asdict(settings),
                      tiles=dataclasses.asdict(tiles), out=str(out), protect=[str(f) for f in files])
        for (path, a), row in tqdm(batch.run(CompareWorker, kwargs, tasks, **ray_kwargs(args)), total=len(tasks),
                                   desc="photo x prior", unit="run"):
            write_json(row_path(Path(path), a), row, indent=1)  # a row exists only complete
            done[(Path(path).name, a)] = row
    rows = [done[(f.name, a)] for f in files for a in names]
    report = comparison.summarise(rows, names, seed=settings.seed)
    outputs = {(r["photo"], r["optimised_for"]): r["output"] for r in rows}
    ins = {r["photo"]: r["input"] for r in rows}
    one = not args.input.is_dir()
    paths = comparison.write(report, out, outputs=outputs, inputs=ins,
                             stem=f"{args.input.stem}_compare" if one else "comparison")
    _print_matrix(report)
    if one:
        sheet = out / f"{args.input.stem}_compare.png"
        with atomic_path(sheet) as tmp:
            comparison.contact_sheet(report, files[0].name, outputs, ins).save(tmp, format="PNG")
        print(f"contact sheet: {sheet}")
    print(f"report: {paths['html']} ({paths['json'].name}, {paths['csv'].name})")
    return 0


def _print_matrix(report: dict) -> None:
    """The matrix as a table: the means with their bootstrap intervals, or the means alone where every interval
    is a point (one photo)."""
    names, matrix = report["priors"], report["matrix"]
    width = max(len(n) for n in names + ["optimised for"]) + 2
    head = "optimised for \\ scored by".ljust(width)
    if all(c["ci"][0] == c["ci"][1] for cells in matrix.values() for c in cells.values()):
        print(head + "".join(n[:12].rjust(13) for n in names))
        for a, cells in matrix.items():
            print(a.ljust(width) + "".join(f"{c['mean']:13.2f}" for c in cells.values()))
        return
    print(f"{report['photos']} photos; mean score [{int(report['bootstrap']['level'] * 100)} % bootstrap interval]")
    print(head + "".join(n[:22].rjust(24) for n in names))
    for a, cells in matrix.items():
        print(a.ljust(width) + "".join(f"{c['mean']:8.2f} [{c['ci'][0]:6.2f},{c['ci'][1]:6.2f}]".rjust(24)
                                       for c in cells.values()))
