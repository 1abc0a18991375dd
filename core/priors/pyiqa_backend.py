"""pyiqa metrics as priors (NR) and fidelity terms (FR), plus the offline built-ins.

pyiqa is imported lazily: it takes seconds and pulls in timm/transformers,
which a caller that only wants CNNIQA or a fused built-in should not pay for.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .base import Calibration, Prior, _ensure_min_size, grad_enabled
from .weights import WeightsMissingError, offline_weights

DATA = Path(__file__).with_name("data")
#: Metrics whose parameters ship with IQA-MAP: no download, ever.
BUILTIN_FILES = {
    "niqe": {"pretrained_model_path": str(DATA / "niqe_pris_params.mat")},
    "brisque": {"pretrained_model_path": str(DATA / "brisque_live_svr.pth")},
    "piqe": {},
}
#: pyiqa "NR" entries that are not per-image quality scores (set-level statistics, text-conditioned).
NOT_PRIORS = {"fid", "sfid", "fid_dinov2", "inception_score", "clipscore"}
#: Smallest image side each metric handles; deep models crop/resize to 224 internally.
MIN_SIZE = {"niqe": 192, "niqe_matlab": 192, "ilniqe": 168, "brisque": 64, "brisque_matlab": 64,
            "piqe": 32, "nrqm": 64, "pi": 192, "entropy": 8}
DEEP_MIN_SIZE = 224


def _configs() -> dict:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    return DEFAULT_CONFIGS


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


def piqe_differentiable(img: torch.Tensor, block_size: int = 16, activity_threshold: float = 0.1,
                        block_impaired_threshold: float = 0.1, window_size: int = 6) -> torch.Tensor:
    """PIQE score [B] with a gradient: pyiqa's ``piqe_arch.piqe`` with a straight-through rounding.

    pyiqa quantises the grey image with ``torch.round``, whose gradient is zero
    everywhere, so its PIQE gives no gradient at all. Same steps and pyiqa
    helpers as ``piqe_arch.piqe``; the block masks (activity, noise, artefact)
    stay hard thresholds, the gradient flows through the block variances.
    """
    from pyiqa.archs.func_util import diff_round, normalize_img_with_gauss
    from pyiqa.archs.piqe_arch import noise_criterion, notice_dist_criterion
    from pyiqa.matlab_utils import symm_pad
    from pyiqa.utils.color_util import to_y_channel

    y = to_y_channel(img, out_data_range=1, color_space="yiq")
    # clamp: an all-black image has maximum 0 (pyiqa divides by it)
    y = diff_round(255 * y / y.flatten(1).amax(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1))
    b, _, h, w = y.shape
    y = symm_pad(y, (0, w % block_size, 0, h % block_size))
    y = normalize_img_with_gauss(y, padding="replicate")
    blocks = y.unfold(2, block_size, block_size).unfold(3, block_size, block_size)
    blocks = blocks.contiguous().view(b, -1, block_size, block_size)
    var = torch.var(blocks, dim=[2, 3], unbiased=True)
    active = (var > activity_threshold).float()
    sigma, beta = noise_criterion(blocks, block_size - 1, var)
    noisy = (sigma > 2 * beta).float()
    impaired = notice_dist_criterion(blocks, window_size, block_impaired_threshold, block_size).float()
    dist = (active * impaired * (1 - var) + active * noisy * var).sum(dim=1)
    return (dist + 1) / (active.sum(dim=1) + 1) * 100


class PiqePrior(PyiqaPrior):
    """PIQE with a usable gradient (see :func:`piqe_differentiable`)."""

    def __init__(self, name: str = "piqe", **kwargs) -> None:
        super().__init__("piqe", **kwargs)

    def _native(self, img: torch.Tensor) -> torch.Tensor:
        return piqe_differentiable(img.to(self.device))


def flat_score(name: str) -> float:
    """What a textureless image scores: the centre of the shipped calibration (calibrated 50, a typical
    photo), so that "no texture to judge" reads as neither good nor bad."""
    from .calibration import lookup
    return lookup(name).C


class NiqePrior(PyiqaPrior):
    """NIQE that is total on flat images (see :mod:`.nss`); pyiqa's value wherever pyiqa's is finite."""

    def __init__(self, name: str = "niqe", **kwargs) -> None:
        super().__init__("niqe", **kwargs)
        self.flat_score = flat_score("niqe")

    def _native(self, img: torch.Tensor) -> torch.Tensor:
        from . import nss
        net = self.metric.net
        return nss.niqe(img.to(self.device), net.mu_pris_param, net.cov_pris_param, self.flat_score)


class BrisquePrior(PyiqaPrior):
    """BRISQUE that is total on flat images (see :mod:`.nss`); pyiqa's value wherever pyiqa's is finite."""

    def __init__(self, name: str = "brisque", **kwargs) -> None:
        super().__init__("brisque", **kwargs)
        self.flat_score = flat_score("brisque")

    def _native(self, img: torch.Tensor) -> torch.Tensor:
        from . import nss
        net = self.metric.net
        return nss.brisque(img.to(self.device), net.sv_coef, net.sv, net.gamma, net.rho, self.flat_score)


#: Built-ins with their own implementation of pyiqa's metric (gradient or totality fixed).
PRIOR_CLASSES = {"piqe": PiqePrior, "niqe": NiqePrior, "brisque": BrisquePrior}
