"""NR-IQA models as differentiable natural-image priors.

A prior maps an RGB batch ``[B,3,H,W]`` in [0,1] to one score per image,
higher = better, differentiable w.r.t. the image and deterministic::

    from iqa_map.core import priors
    q = priors.load("niqe")                 # built-in, no download
    q(img)            # oriented native score (here -NIQE), [B]
    q.native(img)     # NIQE itself (lower = better)
    q.calibrated(img) # [0, 100], 100 = best

Names: the built-ins ``niqe``, ``brisque``, ``piqe`` (IQA-MAP's own code, parameters shipped,
never downloaded; :mod:`.builtin`), ``cnniqa-builtin`` (a CNNIQA network trained by this project,
weights shipped; ``training/nriqa.py``) and ``hybrid-builtin`` (alias ``builtin``); any pyiqa
no-reference metric by its pyiqa name (``musiq``, ``liqe``, ``topiq_nr``...; pyiqa is optional and
only these need it, :class:`PyiqaMissingError` says what to install);
``ms-<name>`` for the multi-scale version of any of them; ``<arch>:<file>``
for a local safetensors network (``cnniqa:/path/cnniqa_live_gray.safetensors``).
See ``docs/priors.md``.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import torch

from .base import Calibration, Prior, score_and_grad
from .calibration import fit_calibration, fit_constants, lookup as lookup_calibration
from .fusion import FUSION_MODES, FusedPrior, MultiScalePrior, fuse
from .local import ARCHS, LocalPrior
from .pyiqa_backend import PyiqaMissingError, pyiqa_available
from .scnn import load_scnn  # also registers the 'scnn' architecture
from .weights import ENV_VAR, WeightsMissingError, offline_weights, resolve_weights_dir

__all__ = [
    "Prior", "Calibration", "FusedPrior", "FUSION_MODES", "MultiScalePrior", "LocalPrior", "WeightsMissingError",
    "PyiqaMissingError", "pyiqa_available",
    "load", "load_local", "load_fidelity", "fuse", "fit_calibration", "fit_constants", "available",
    "score_and_grad", "offline_weights", "resolve_weights_dir", "BUILTINS", "HYBRID_BUILTIN", "ENV_VAR",
]

BUILTINS = ("niqe", "brisque", "piqe", "cnniqa-builtin")
#: The learned built-in: CNNIQA distilled from SSIM on synthetic damage of the training photos.
CNNIQA_BUILTIN_FILE = Path(__file__).with_name("data") / "cnniqa_builtin.safetensors"
#: The default prior of the demo: calibrated NIQE and BRISQUE, equal weights (see docs/priors.md for why).
HYBRID_BUILTIN = {"members": (("niqe", 1.0), ("brisque", 1.0)), "mode": "mean"}
_ALIASES = {"builtin": "hybrid-builtin"}


def available() -> list[str]:
    """Every name :func:`load` accepts (besides ``ms-<name>`` and ``<arch>:<file>``)."""
    from .pyiqa_backend import nr_metric_names
    return sorted({*BUILTINS, "hybrid-builtin", "scnn", *_ALIASES, *nr_metric_names()})


def load(name: str, weights_dir: str | os.PathLike | None = None, device: str | torch.device | None = None,
         calibration_file: str | os.PathLike | None = None, **kwargs) -> Prior:
    """Load a prior by name (see the module docstring for the names).

    ``weights_dir`` (else ``$IQA_MAP_WEIGHTS``) is where pyiqa checkpoints are
    looked up first and where a user's fitted calibration constants
    (``iqa_map_calibration.json``) live; ``calibration_file`` overrides both.
    Extra keyword arguments go to the pyiqa metric (e.g. ``num_patch=15``).
    """
    folder = resolve_weights_dir(weights_dir)
    name = _ALIASES.get(name.strip(), name.strip())
    if name == "hybrid-builtin":
        members = [(load(n, folder, device, calibration_file), w) for n, w in HYBRID_BUILTIN["members"]]
        return fuse(members, mode=HYBRID_BUILTIN["mode"], name="hybrid-builtin")
    if name == "cnniqa-builtin":
        prior = LocalPrior(CNNIQA_BUILTIN_FILE, arch="cnniqa", device=device, name=name)
        prior.calibration = lookup_calibration(name, folder, calibration_file)
        return prior
    if name == "scnn":
        prior = load_scnn(folder, device)
        prior.calibration = lookup_calibration(name, folder, calibration_file)
        return prior
    if name.startswith("ms-"):
        base = load(name[3:], folder, device, calibration_file, **kwargs)
        cal = lookup_calibration(name, folder, calibration_file)
        return MultiScalePrior(base, calibration=cal or base.calibration, name=name)
    arch, sep, file = name.partition(":")
    if sep and arch in ARCHS:
        return load_local(_find_file(file, folder), arch=arch, device=device, weights_dir=folder,
                          calibration_file=calibration_file, **kwargs)
    from .builtin import PRIOR_CLASSES
    if name in PRIOR_CLASSES:
        prior = PRIOR_CLASSES[name](name, device=device)
        prior.calibration = lookup_calibration(name, folder, calibration_file)
        return prior
    from .pyiqa_backend import PyiqaPrior, nr_metric_names
    if name not in nr_metric_names():
        raise ValueError(_unknown(name, available()))
    prior = PyiqaPrior(name, weights_dir=folder, device=device, **kwargs)
    prior.calibration = lookup_calibration(name, folder, calibration_file)
    return prior


def load_local(path: str | os.PathLike, arch: str = "cnniqa", device=None, weights_dir=None,
               calibration_file=None, **kwargs) -> LocalPrior:
    """A local safetensors NR-IQA network of a registered architecture (``ARCHS``)."""
    prior = LocalPrior(path, arch=arch, device=device, **kwargs)
    prior.calibration = lookup_calibration(prior.name, resolve_weights_dir(weights_dir), calibration_file)
    return prior


def load_fidelity(name: str, weights_dir: str | os.PathLike | None = None, device=None, **kwargs):
    """A pyiqa full-reference metric as a distance module ``f(x, ref) -> [B]`` (lower = closer)."""
    from .pyiqa_backend import PyiqaFidelity, fr_metric_names
    if name not in fr_metric_names():
        raise ValueError(_unknown(name, fr_metric_names(), kind="full-reference metric"))
    return PyiqaFidelity(name, weights_dir=resolve_weights_dir(weights_dir), device=device, **kwargs)


def _find_file(file: str, folder: Path | None) -> Path:
    path = Path(file).expanduser()
    if not path.is_file() and not path.is_absolute() and folder is not None and (folder / path).is_file():
        return folder / path
    return path


def _unknown(name: str, names: list[str], kind: str = "prior") -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (f"unknown {kind} '{name}'.{hint} Available: {', '.join(names)}"
            + ("; also ms-<name> and <arch>:<file.safetensors> with arch in "
               f"{sorted(ARCHS)}." if kind == "prior" else "."))
