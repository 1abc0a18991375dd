"""``iqa-map score``, ``priors`` and ``calibrate``: the NR-IQA priors on their own."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import CliError, add_common, add_prior, inputs

DEFAULT_SCORE_PRIORS = ("niqe", "brisque", "piqe")


def add_parsers(sub) -> None:
    s = sub.add_parser("score", help="score images with NR-IQA priors",
                       description="Score images with NR-IQA priors: each prior's native score (its own scale and "
                       "direction) and, where it has constants, the calibrated 0-100 score (100 = best).")
    s.add_argument("inputs", nargs="+", help="image files or folders")
    add_prior(s, "a prior to score with; repeat for several (default: " + ", ".join(DEFAULT_SCORE_PRIORS) + ")",
              metavar="NAME")
    s.add_argument("--json", action="store_true", help="print JSON (native and calibrated scores per image and "
                   "prior) instead of a table of native scores")
    add_common(s)
    s.set_defaults(func=cmd_score)

    sub.add_parser("priors", help="list the prior names",
                   description="List the names --prior takes (the built-in priors and pyiqa's metrics).").set_defaults(
        func=cmd_priors)

    c = sub.add_parser("calibrate", help="fit a prior's 0-100 calibration on a folder of photos",
                       description="Fit a prior's 0-100 calibration (the logistic constants C and S) on a folder of "
                       "photos, and save them where the prior is loaded from next time.")
    c.add_argument("folder", help="folder of photos the prior's scores are calibrated on")
    add_prior(c, "the prior to calibrate", repeat=False, required=True, metavar="NAME")
    c.add_argument("--save", default=None, metavar="FILE",
                   help="JSON file for the constants (default: the weights folder)")
    add_common(c)
    c.set_defaults(func=cmd_calibrate)


def cmd_score(args) -> int:
    import json

    import torch

    from ..core import priors
    from ..core.io.imageio import load_image

    files = inputs(args.inputs)
    names = args.prior or list(DEFAULT_SCORE_PRIORS)
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


def cmd_priors(args) -> int:
    from ..core import priors

    print("\n".join(priors.available()))
    print("also: ms-<name> (multi-scale), <arch>:<file.safetensors> with arch in "
          + ", ".join(sorted(priors.local.ARCHS)))
    return 0


def cmd_calibrate(args) -> int:
    import os

    from ..core import priors

    prior = priors.load(args.prior, weights_dir=args.weights_dir, device=args.device)
    save_to = args.save or args.weights_dir or os.environ.get(priors.ENV_VAR)
    if not save_to:
        raise CliError("say where to save the constants: --save FILE.json or --weights-dir DIR (or $IQA_MAP_WEIGHTS)")
    cal = priors.fit_calibration(prior, args.folder, save_to=save_to)
    print(f"{prior.name}: C={cal.C:.6g} S={cal.S:.6g} (saved to {save_to})")
    return 0
