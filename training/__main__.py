"""``python -m iqa_map.training --data DIR --out RUNDIR [...]``: train, resume or export the built-in denoiser.

Examples::

    python -m iqa_map.training --data photos/ --out runs/mine --threads 1 --max-minutes 80
    python -m iqa_map.training --out runs/mine --resume --steps 20000      # train longer
    python -m iqa_map.training --out runs/mine --export                     # ship into core/models/weights/
    python -m iqa_map.training --out runs/mine --export --export-dir mydir  # or anywhere (load_builtin(weights_dir=...))
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .train import DEFAULTS, export, train


def _ints(text: str) -> list:
    return [int(v) for v in text.split(",") if v.strip()]


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m iqa_map.training", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DEFAULTS
    # Every option defaults to None so that only explicitly given settings override a resumed run's.
    p.add_argument("--data", help="folder of clean photos (train split only)")
    p.add_argument("--out", required=True, help="run folder: config.json, checkpoint.pt, train.log, export/")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--export", action="store_true", help="only export the run's EMA weights, no training")
    p.add_argument("--export-dir", help="where --export writes (default: the package's core/models/weights/)")
    p.add_argument("--seed", type=int, help=f"seed of init, crops and noise ({d['seed']})")
    p.add_argument("--steps", type=int, help=f"total optimiser steps ({d['steps']})")
    p.add_argument("--batch", type=int, help=f"crops per step ({d['batch']})")
    p.add_argument("--crop", type=int, help=f"crop size in pixels ({d['crop']})")
    p.add_argument("--scale-min", type=float, help=f"smallest random rescale factor ({d['scale_min']})")
    p.add_argument("--lr", type=float, help=f"peak Adam learning rate ({d['lr']})")
    p.add_argument("--lr-warmup", type=int, help=f"linear warmup steps ({d['lr_warmup']})")
    p.add_argument("--lr-final", type=float, help=f"final lr as a fraction of --lr, cosine decay ({d['lr_final']})")
    p.add_argument("--grad-clip", type=float, help=f"max global gradient norm ({d['grad_clip']})")
    p.add_argument("--ema", type=float, help=f"EMA decay per step ({d['ema']})")
    p.add_argument("--p-mean", type=float, help=f"mean of ln(sigma) ({d['p_mean']})")
    p.add_argument("--p-std", type=float, help=f"std of ln(sigma) ({d['p_std']})")
    p.add_argument("--sigma-min", type=float, help=f"lowest training sigma on [-1,1] ({d['sigma_min']})")
    p.add_argument("--sigma-max", type=float, help=f"highest training sigma on [-1,1] ({d['sigma_max']})")
    p.add_argument("--channels", type=_ints, help="channels per level, e.g. 64,128,256")
    p.add_argument("--enc-blocks", type=_ints, help="res blocks per encoder level, e.g. 1,1")
    p.add_argument("--mid-blocks", type=int, help=f"res blocks at the bottom ({d['mid_blocks']})")
    p.add_argument("--dec-blocks", type=_ints, help="res blocks per decoder level, e.g. 1,1")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--ckpt-minutes", type=float, help=f"checkpoint interval in minutes ({d['ckpt_minutes']})")
    p.add_argument("--ckpt-every", type=int, help="also checkpoint every N steps (0: off)")
    p.add_argument("--no-snapshots", dest="snapshots", action="store_const", const=False,
                   help="do not keep the EMA weights of every checkpoint")
    p.add_argument("--max-minutes", type=float, help="stop gracefully after this many minutes (checkpoint+export)")
    p.add_argument("--log-every", type=int, help=f"log interval in steps ({d['log_every']})")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs still go to train.log)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    if a.export:
        path = export(Path(a.out), a.export_dir)
        print(f"exported {path} (+ .json, .sha256)")
        return 0
    meta = {"out", "resume", "export", "export_dir", "no_progress"}
    given = {k: v for k, v in vars(a).items() if k not in meta and v is not None}
    result = train(a.out, given, resume=a.resume, progress=not a.no_progress)
    print(f"{'stopped early' if result['stopped_early'] else 'finished'}: step {result['step']}, "
          f"{result['train_seconds'] / 60:.1f} min of training; weights in {result['export']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
