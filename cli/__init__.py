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
import sys

from . import compare, demo, enhance, score, select, sr
from .common import EXIT_INTERRUPTED, EXIT_USAGE, CliError

__all__ = ["CliError", "EXIT_INTERRUPTED", "EXIT_USAGE", "main", "parser"]


def parser() -> argparse.ArgumentParser:
    """Every command, each added by the module that runs it."""
    ap = argparse.ArgumentParser(prog="iqa-map", description="NR-IQA priors for MAP photo enhancement in "
                                 "diffusion latents.", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND",
                            help="one of the commands below; 'iqa-map COMMAND --help' lists its options")
    enhance.add_parser(sub)
    compare.add_parser(sub)
    demo.add_parser(sub)
    score.add_parsers(sub)  # score, priors, calibrate
    select.add_parsers(sub)  # rank, qmap
    sr.add_parsers(sub)  # sr-finetune, upscale
    return ap


def explain(e: BaseException, args=None) -> str:
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
    """Run one command; an error the user can act on is one line (then the command's notes) and exit code 2,
    Ctrl-C exit code 130, never a traceback."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        error, message, code = e, f"error: {e}", EXIT_USAGE
    except (ValueError, FileNotFoundError, RuntimeError, OSError, MemoryError) as e:
        error, message, code = e, f"error: {explain(e, args)}", EXIT_USAGE
    except KeyboardInterrupt as e:
        error, code = e, EXIT_INTERRUPTED
        message = ("interrupted (Ctrl-C); finished outputs are kept (none is half-written) and are skipped when the "
                   "same command is run again")
    print(message, file=sys.stderr)
    for line in getattr(error, "__notes__", ()):
        print(line, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
