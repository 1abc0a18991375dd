"""Command line: score images with a prior, or fit and save its calibration.

    python -m iqa_map.core.priors score NAME IMAGE [IMAGE ...] [--weights-dir DIR]
    python -m iqa_map.core.priors calibrate NAME FOLDER [--weights-dir DIR] [--save-to FILE_OR_DIR]
    python -m iqa_map.core.priors list

``--weights-dir`` defaults to ``$IQA_MAP_WEIGHTS``; fitted constants are saved
into the weights folder (``iqa_map_calibration.json``) unless ``--save-to`` is given.
"""
from __future__ import annotations

import argparse
import sys

import torch

from . import ENV_VAR, available, fit_calibration, load, resolve_weights_dir
from .calibration import read_image


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m iqa_map.core.priors", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd in ("score", "calibrate"):
        p = sub.add_parser(cmd)
        p.add_argument("name")
        p.add_argument("paths", nargs="+" if cmd == "score" else 1)
        p.add_argument("--weights-dir", default=None, help=f"weights folder (default: ${ENV_VAR})")
        p.add_argument("--device", default=None)
        if cmd == "calibrate":
            p.add_argument("--save-to", default=None, help="JSON file or folder (default: the weights folder)")
    sub.add_parser("list")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        print("\n".join(available()))
        return 0
    prior = load(args.name, weights_dir=args.weights_dir, device=args.device)
    if args.cmd == "score":
        with torch.no_grad():
            for path in args.paths:
                img = read_image(path).to(prior.device)
                cal = f"{float(prior.calibrated(img)):.2f}" if prior.calibration is not None else "n/a"
                print(f"{path}\tnative={float(prior.native(img)):.4f}\tcalibrated={cal}")
        return 0
    save_to = args.save_to or resolve_weights_dir(args.weights_dir)
    if save_to is None:
        ap.error(f"give --save-to or --weights-dir (or set ${ENV_VAR}) so the constants can be reused")
    cal = fit_calibration(prior, args.paths[0], save_to=save_to)
    print(f"{prior.name}: C={cal.C:.6g} S={cal.S:.6g} saved to {save_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
