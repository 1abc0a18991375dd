"""What several commands share: the user's error, inputs and the output folder checked before anything slow, the
JSON report, and the option groups every command adds the same way (model and settings, priors, Ray, weights and
device)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import options

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
FUSION_HELP = ("how several --prior scores combine (calibrated 0-100): mean (default), geometric (one low score "
               "drags the result down) or softmin (close to the worst member)")


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


def add_note(error: BaseException, line: str) -> None:
    """A line ``main`` prints after the error's message (``BaseException.add_note``, also on Python 3.10)."""
    error.__notes__ = [*getattr(error, "__notes__", []), line]


# -- inputs and outputs ------------------------------------------------------------------------------------------

def output_dir(path: str) -> Path:
    """The output folder, created, and known to be writable before anything slow starts."""
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


def inputs(items) -> list[Path]:
    """The image files of ``items`` (files and folders); none is an error."""
    from ..core.io.imageio import find_images

    files = find_images(items)
    if not files:
        raise CliError("no input images found")
    return files


def read(path, note=True):
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


def readable(files) -> tuple[list, int]:
    """(the inputs that can be read, how many cannot): every input is checked before the slow part, so a bad
    file is reported at once; none readable is an error."""
    valid, failed = [], 0
    for f in files:
        try:
            read(f)
            valid.append(f)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    if not valid:
        raise CliError("none of the inputs can be used")
    return valid, failed


def write_report(path, reports: dict, files) -> None:
    """The JSON report of the images done (one image: its report; several: keyed by input), atomically.

    Entries of an earlier report at ``path`` are kept for this run's inputs that were skipped because their
    output exists, so a batch resumed after Ctrl-C or a full disk ends with the report of every image."""
    from ..core.io.files import write_json

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
    write_json(path, ordered if len(ordered) != 1 else next(iter(ordered.values())))


def build_prior(specs, weights_dir=None, device=None, fusion="mean"):
    """One prior from ``--prior name[:weight]`` options (several are fused on calibrated scores)."""
    from ..core.map.pipeline import load_prior

    return load_prior(specs, fusion=fusion, weights_dir=weights_dir, device=device)


def ray_kwargs(args) -> dict:
    """How ``core.map.batch.run`` spreads the work: here, or on the Ray cluster ``--ray`` names."""
    if not getattr(args, "ray", None):
        return {}
    if args.workers < 1 or args.gpus_per_worker < 0:
        raise CliError("--workers must be at least 1 and --gpus-per-worker at least 0")
    return dict(ray_address=args.ray, workers=args.workers, gpus_per_worker=args.gpus_per_worker)


# -- option groups -----------------------------------------------------------------------------------------------

def add_prior(p, help: str, *, repeat: bool = True, fusion: bool = False, metavar: str = "NAME[:WEIGHT]", **kw):
    """``--prior`` (repeated: several, fused on calibrated scores, by ``--fusion`` when ``fusion``)."""
    from ..core.priors.fusion import FUSION_MODES

    if repeat:
        kw = dict(action="append", default=[], **kw)
    p.add_argument("--prior", metavar=metavar, help=help, **kw)
    if fusion:
        p.add_argument("--fusion", default=FUSION_MODES[0], choices=list(FUSION_MODES), help=FUSION_HELP)


def add_model_options(p, groups=None) -> None:
    """The model, the preset and the enhancement settings generated from their records (core/map/settings.py)."""
    from ..core.map.settings import PRESET_HELP, PRESETS, MapSettings, TileSettings
    from ..core.models.loading import DTYPES

    p.add_argument("--model", default="builtin", help="builtin, bfcnn:FILE (a BF-CNN denoiser), a diffusers folder "
                   "of Stable Diffusion 1.x/2.x, Flux.1 or SD3, or a single-file Stable Diffusion checkpoint "
                   "(default %(default)s)")
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
    options.add_settings(p, MapSettings, groups, presets=PRESETS)
    options.add_settings(p, TileSettings)


def model_kwargs(args) -> dict:
    """What a batch worker needs to load the model as ``add_model_options`` described it."""
    return dict(model=args.model, dtype=args.dtype, cuda_graphs=args.cuda_graphs, compile=args.compile,
                prompt=args.prompt, model_config=args.model_config)


def add_ray_options(p) -> None:
    g = p.add_argument_group("Ray (optional: pip install 'iqa-map[ray]')")
    g.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="spread the photos over a Ray cluster: 'local' starts one on this machine (127.0.0.1), "
                        "else an existing cluster's address (ray://host:10001 or host:6379); inputs and the "
                        "output folder must be on storage every node sees")
    g.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes, each loading the model and "
                   "priors once (default %(default)s)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="GPUS",
                   help="GPUs reserved per worker (default %(default)s; 1 on a GPU cluster)")
    g.add_argument("--threads-per-worker", type=int, default=1, metavar="N",
                   help="torch CPU threads per worker (default %(default)s)")


def add_common(p) -> None:
    """Where weights are found and which device runs."""
    p.add_argument("--weights-dir", default=None, metavar="DIR",
                   help="folder with pyiqa weight files and calibration constants (default $IQA_MAP_WEIGHTS)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
