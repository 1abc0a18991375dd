"""``iqa-map rank`` and ``qmap``: a prior choosing among candidate results, and a prior's map of where a photo is
damaged. Their settings are the records the IQA Select and IQA Quality Map nodes show (core/quality/settings.py)."""
from __future__ import annotations

import sys
from pathlib import Path

from . import options
from .common import CliError, add_common, add_prior, build_prior, inputs, output_dir, read


def add_parsers(sub) -> None:
    from ..core.quality.settings import QualityMapSettings, SelectSettings

    rk = sub.add_parser("rank", help="rank candidate results of one scene by a prior; pick the best, one by "
                        "softmax, or the best per tile", description="Rank candidate results of one scene (several "
                        "seeds, upscalers or restorers of the same photo, at the same size) by a prior's comparable "
                        "score, and pick the best, a seeded softmax draw, or the best candidate per tile blended "
                        "without seams.")
    rk.add_argument("inputs", nargs="+", help="candidate images (same scene, same size) or a folder of them")
    add_prior(rk, "the prior that ranks; repeat to fuse several (default: builtin)", fusion=True)
    options.add_settings(rk, SelectSettings)
    rk.add_argument("-o", "--output", default=None, metavar="FILE",
                    help="write the selected (or tile-blended) image here")
    rk.add_argument("--json", action="store_true", help="print the ranking as JSON (scores, probabilities, the "
                    "selected file, each tile's choice) instead of a table")
    add_common(rk)
    rk.set_defaults(func=cmd_rank)

    qm = sub.add_parser("qmap", help="spatial quality map of images (mask PNG + heatmap PNG)",
                        description="Score a prior over sliding windows of each image and average the overlaps to "
                        "full resolution: <stem>_qmap_<prior>.png (white = worst, or best with --invert) and "
                        "<stem>_qmap_<prior>_heatmap.png (colours over the photo, with a legend).")
    qm.add_argument("inputs", nargs="+", help="image files or folders")
    qm.add_argument("-o", "--output", required=True, help="output folder")
    add_prior(qm, "the prior mapped (default %(default)s; piqe separates damaged regions best)", repeat=False,
              default="cnniqa-builtin", metavar="NAME")
    options.add_settings(qm, QualityMapSettings)
    add_common(qm)
    qm.set_defaults(func=cmd_qmap)


def cmd_rank(args) -> int:
    """Rank candidate results of one scene by a prior; optionally write the selection."""
    import json

    from ..core.io.imageio import write_photo
    from ..core.quality.select import choose, stack_candidates
    from ..core.quality.settings import SelectSettings

    settings = options.settings(args, SelectSettings)
    files = inputs(args.inputs)
    if len(files) < 2:
        raise CliError("rank needs at least two candidate images")
    photos = [read(f) for f in files]
    prior = build_prior(args.prior, args.weights_dir, args.device, args.fusion)
    try:
        stacked = stack_candidates([p.image.to(prior.device) for p in photos])
    except ValueError as e:
        raise CliError(str(e)) from None
    c = choose(prior, stacked, settings)
    sel = c.selection  # in tiles mode argmax's ranking: the metadata is the best candidate's
    rows = [{"rank": r["rank"], "file": r["candidate"], "score": r["score"], "probability": r["probability"]}
            for r in c.ranking([str(f) for f in files])]
    if args.json:
        print(json.dumps({"prior": prior.name, "mode": settings.mode, "selected": str(files[sel.index]),
                          "ranking": rows, "tile_choice": None if c.tile_choice is None else c.tile_choice.tolist()},
                         indent=2))
    else:
        print(f"rank\t{prior.name}\tp\tfile")
        for r in rows:
            print(f"{r['rank']}\t{r['score']:.2f}\t{r['probability']:.3f}\t{Path(r['file']).name}")
        if settings.mode != "tiles":
            print(f"selected ({settings.mode}): {files[sel.index].name}")
    if args.output:
        # Tiles are blended from every candidate; the metadata (profile, EXIF, alpha, depth) is the best one's.
        dest = write_photo(c.image, Path(args.output), like=photos[sel.index], protect=files)
        print(f"wrote {dest}")
    return 0


def cmd_qmap(args) -> int:
    """Quality map of each input: a mask PNG (white = worst) and a colour heatmap with legend."""
    from ..core import priors
    from ..core.io.drawing import heatmap
    from ..core.io.imageio import load_image, save_image
    from ..core.quality.qmap import quality_map
    from ..core.quality.settings import QualityMapSettings

    s = options.settings(args, QualityMapSettings)
    files = inputs(args.inputs)
    out = output_dir(args.output)
    prior = priors.load(args.prior, weights_dir=args.weights_dir, device=args.device)
    failed = 0
    for f in files:
        try:
            img = load_image(f).to(prior.device)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        qm = quality_map(prior, img, window=s.window, stride=s.stride, normalise=s.normalise)
        m = save_image(qm.mask(s.invert).expand(-1, 3, -1, -1), out / f"{f.stem}_qmap_{prior.name}.png",
                       protect=files)
        hm = save_image(heatmap(qm, img, label=prior.name), out / f"{f.stem}_qmap_{prior.name}_heatmap.png",
                        protect=files)
        sc, flat = qm.scores, float(qm.flat.mean())
        note = f" ({flat:.0%} flat: not judged, shown at the photo's median)" if flat > 0 else ""
        print(f"{f.name}: {prior.name} window {qm.window} stride {qm.stride}: scores {float(sc.min()):.1f}.."
              f"{float(sc.max()):.1f}{note} -> {m.name}, {hm.name}")
    return 1 if failed else 0
