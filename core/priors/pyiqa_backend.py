"""pyiqa metrics as priors (NR) and fidelity terms (FR). pyiqa is optional.

pyiqa is imported lazily: it takes seconds and pulls in timm/transformers, which a caller that only
wants a built-in should not pay for. When it is not installed, the names of its metrics still come
from a snapshot shipped with the pack (``data/pyiqa_metrics.json``), so a user can pick one and is
told exactly what to install (:class:`PyiqaMissingError`); nothing is ever installed at run time.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import torch

from .base import Calibration, Prior, _ensure_min_size, grad_enabled
from .weights import WeightsMissingError, offline_weights

DATA = Path(__file__).with_name("data")
SNAPSHOT_FILE = DATA / "pyiqa_metrics.json"
#: pyiqa's own options that point its NIQE/BRISQUE at the parameter files shipped here (tests compare).
BUILTIN_FILES = {
    "niqe": {"pretrained_model_path": str(DATA / "niqe_pris_params.mat")},
    "brisque": {"pretrained_model_path": str(DATA / "brisque_live_svr.pth")},
    "piqe": {},
}
#: The light pyiqa install (docs/install.md): pyiqa without its development and dataset dependencies, plus
#: what its learned metrics import. pyiqa itself also imports cv2: OpenCV is added only where none is importable.
LIGHT_INSTALL = ("--no-deps pyiqa", "timm openai-clip pyyaml requests huggingface_hub")
LIGHT_OPENCV = "opencv-python-headless"
#: TOPIQ's module imports facexlib (face cropping, unused by the no-reference TOPIQ), which imports these.
LIGHT_TOPIQ = ("--no-deps facexlib", "filterpy numba")


def pyiqa_available() -> bool:
    """Whether ``import pyiqa`` can work (without importing it); a ``None`` entry in sys.modules blocks it."""
    if "pyiqa" in sys.modules:
        return sys.modules["pyiqa"] is not None
    return importlib.util.find_spec("pyiqa") is not None


def light_install_commands(python: str | None = None) -> list[str]:
    """The commands of the light install for the given interpreter (default: this one)."""
    pip = f'"{python or sys.executable}" -m pip install'
    extra = "" if importlib.util.find_spec("cv2") is not None else f" {LIGHT_OPENCV}"
    return [f"{pip} {LIGHT_INSTALL[0]}", f"{pip} {LIGHT_INSTALL[1]}{extra}"]


def missing_message(name: str, host: str = "the program") -> str:
    """What to run when pyiqa metric ``name`` is chosen where pyiqa is not installed."""
    py = sys.executable
    cmds = light_install_commands()
    if name.startswith("topiq"):
        cmds.append(f'"{py}" -m pip install {LIGHT_TOPIQ[0]} && "{py}" -m pip install {LIGHT_TOPIQ[1]}')
    return (f"'{name}' is a pyiqa metric, and pyiqa is not installed in this Python ({py}). The built-in priors "
            "(builtin, niqe, brisque, piqe, cnniqa-builtin) need nothing more. To use it, install pyiqa (pyiqa 0.1.16 "
            "is licensed PolyForm Noncommercial) without its development and dataset dependencies:\n  "
            + "\n  ".join(cmds)
            + f'\n(or all of pyiqa\'s dependencies: "{py}" -m pip install pyiqa), then restart {host}.')


class PyiqaMissingError(ImportError):
    """A pyiqa metric was chosen but pyiqa is not installed: the message says what to run."""

    def __init__(self, name: str) -> None:
        super().__init__(missing_message(name), name="pyiqa")
        self.metric = name
#: pyiqa "NR" entries that are not per-image quality scores (set-level statistics, text-conditioned).
NOT_PRIORS = {"fid", "sfid", "fid_dinov2", "inception_score", "clipscore"}
#: Smallest image side each metric handles; deep models crop/resize to 224 internally.
MIN_SIZE = {"niqe": 192, "niqe_matlab": 192, "ilniqe": 168, "brisque": 64, "brisque_matlab": 64,
            "piqe": 32, "nrqm": 64, "pi": 192, "entropy": 8}
DEEP_MIN_SIZE = 224


def _configs() -> dict:
    """pyiqa's metric table; without pyiqa, the shipped snapshot of it (names, modes, score ranges)."""
    if not pyiqa_available():
        return json.loads(SNAPSHOT_FILE.read_text())["metrics"]
    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    return DEFAULT_CONFIGS


def snapshot(configs: dict | None = None) -> dict:
    """The snapshot file's content for the installed pyiqa (``tools/snapshot_pyiqa_metrics.py`` writes it)."""
    import pyiqa
    configs = configs if configs is not None else _configs()
    keep = {k: {f: v[f] for f in ("metric_mode", "score_range", "lower_better") if f in v}
            for k, v in sorted(configs.items())}
    return {"_provenance": f"metric names, modes and score ranges of pyiqa {pyiqa.__version__} "
                           "(pyiqa.default_model_configs), written by tools/snapshot_pyiqa_metrics.py; facts about "
                           "pyiqa's interface, no pyiqa code", "pyiqa_version": pyiqa.__version__, "metrics": keep}


def nr_metric_names() -> list[str]:
    return sorted(k for k, v in _configs().items() if v.get("metric_mode") == "NR" and k not in NOT_PRIORS)


def fr_metric_names() -> list[str]:
    return sorted(k for k, v in _configs().items() if v.get("metric_mode") == "FR")


def parse_range(text: str | None) -> tuple[float | None, float | None]:
    """pyiqa's 'score_range' strings ('~0, ~100', '1, 10', '0, ~') -> (low, high), None when open."""
    if not text or "," not in text:
        return (None, None)
    bounds = []
    for part in text.split(",")[:2]:
        m = re.search(r"-?\d+(\.\d+)?", part)
        bounds.append(float(m.group()) if m else None)
    return tuple(bounds)


def _create(name: str, weights_dir, device, **kwargs):
    if not pyiqa_available():
        raise PyiqaMissingError(name)
    import pyiqa
    device = torch.device(device) if device is not None else torch.device("cpu")
    if name in BUILTIN_FILES:
        return pyiqa.create_metric(name, as_loss=True, loss_reduction="none", device=device,
                                   **{**BUILTIN_FILES[name], **kwargs})
    with offline_weights(weights_dir) as resolver:
        try:
            return pyiqa.create_metric(name, as_loss=True, loss_reduction="none", device=device, **kwargs)
        except WeightsMissingError:
            raise
        except Exception as e:
            if not resolver.hf_offline:
                raise
            from huggingface_hub.constants import HF_HUB_CACHE
            raise RuntimeError(
                f"loading pyiqa metric '{name}' failed offline ({type(e).__name__}: {e}). Part of this model "
                f"(a timm/transformers backbone) comes from the Hugging Face Hub cache {HF_HUB_CACHE}; run the "
                f"load once with network access, or copy that cache from a machine that has it.") from e


class PyiqaPrior(Prior):
    """A pyiqa no-reference metric created with ``as_loss=True`` (gradients on).

    Some models sample random crops/patches (LIQE, MANIQA, HyperIQA); each call
    runs under a forked RNG with a fixed seed, so the same image always gets the
    same score and the caller's random state is untouched.
    """

    def __init__(self, name: str, weights_dir=None, device=None, calibration: Calibration | None = None,
                 seed: int = 123, **metric_kwargs) -> None:
        super().__init__(calibration)
        cfg = _configs().get(name)
        if cfg is None or cfg.get("metric_mode") != "NR" or name in NOT_PRIORS:
            raise ValueError(f"'{name}' is not a pyiqa no-reference metric usable as a prior")
        with torch.inference_mode(False):
            self.metric = _create(name, weights_dir, device, **metric_kwargs)
        self.metric.requires_grad_(False).eval()
        self.name = name
        self.lower_better = bool(self.metric.lower_better)
        self.native_range = parse_range(cfg.get("score_range"))
        self.min_size = MIN_SIZE.get(name, 0 if name in BUILTIN_FILES else DEEP_MIN_SIZE)
        self.seed = seed

    @property
    def device(self) -> torch.device:
        return self.metric.dummy_param.device

    def _native(self, img: torch.Tensor) -> torch.Tensor:
        img = img.to(self.device)
        devices = [img.device] if img.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=img.device.type):
            torch.manual_seed(self.seed)
            out = self.metric(img)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(img.shape[0], -1)[:, 0]


class PyiqaFidelity(torch.nn.Module):
    """A pyiqa full-reference metric as a distance ``f(x, ref) -> [B]``, lower = closer.

    Lower-better metrics (NLPD, LPIPS, DISTS) are returned as they are; for
    higher-better ones the score is subtracted from the top of the metric's
    range (1 - SSIM), or negated when the range is open (-PSNR).
    """

    def __init__(self, name: str, weights_dir=None, device=None, **metric_kwargs) -> None:
        super().__init__()
        cfg = _configs().get(name)
        if cfg is None or cfg.get("metric_mode") != "FR":
            raise ValueError(f"'{name}' is not a pyiqa full-reference metric; choose from {fr_metric_names()}")
        with torch.inference_mode(False):
            self.metric = _create(name, weights_dir, device, **metric_kwargs)
        self.metric.requires_grad_(False).eval()
        self.name, self.lower_better = name, bool(self.metric.lower_better)
        self.native_range = parse_range(cfg.get("score_range"))
        self.min_size = MIN_SIZE.get(name, 0)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        with grad_enabled():
            x, ref = (t.clone() if t.is_inference() else t for t in (x, ref))
            x, ref = _ensure_min_size(x, self.min_size), _ensure_min_size(ref, self.min_size)
            dev = self.metric.dummy_param.device
            s = self.metric(x.to(dev), ref.to(dev))
            s = (s[0] if isinstance(s, (tuple, list)) else s).reshape(x.shape[0], -1)[:, 0]
            if self.lower_better:
                return s
            top = self.native_range[1]
            return top - s if top is not None else -s
