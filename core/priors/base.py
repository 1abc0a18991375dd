"""The prior interface: image batch [B,3,H,W] in [0,1] -> one differentiable score per image."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Calibration:
    """Logistic map of a native score to [0, 100]: ``100 / (1 + exp(-(s - C) / S))``.

    ``C`` and ``S`` are in the metric's native units; for a lower-better metric
    the sign is flipped, so 100 always means "best" whatever the direction.
    """

    C: float
    S: float

    def __call__(self, native: torch.Tensor, lower_better: bool = False) -> torch.Tensor:
        z = (native - self.C) / self.S
        return 100.0 * torch.sigmoid(-z if lower_better else z)


class Prior(torch.nn.Module):
    """Base class of every NR-IQA prior.

    Subclasses implement :meth:`_native` (the metric's own score, with its own
    direction). ``forward`` returns the *oriented* native score (higher = better,
    the sign flipped for lower-better metrics) and :meth:`calibrated` the score in
    [0, 100]. All three are differentiable w.r.t. the image and build their
    graph even when the caller runs under ``torch.inference_mode()`` (ComfyUI
    executes nodes that way), so a sampler can backpropagate through them;
    under a plain ``torch.no_grad()`` they only score.
    """

    name: str = "prior"
    #: The native score is already the calibrated 0-100 one (a fusion of calibrated scores).
    native_is_calibrated: bool = False
    lower_better: bool = False
    native_range: tuple[float | None, float | None] = (None, None)
    #: Smallest side the metric accepts; smaller inputs are upsampled (differentiably).
    min_size: int = 0

    def __init__(self, calibration: Calibration | None = None) -> None:
        super().__init__()
        self.calibration = calibration

    def _native(self, img: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        for t in (*self.parameters(), *self.buffers()):
            return t.device
        return torch.device("cpu")

    def native(self, img: torch.Tensor) -> torch.Tensor:
        """The metric's own score per image ([B]), in its own direction and range."""
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"{self.name}: expected an RGB batch [B,3,H,W] in [0,1], got shape {tuple(img.shape)}")
        with grad_enabled():
            if img.is_inference():
                img = img.clone()
            # The prior may live on another device than the image (a CPU metric beside a GPU model).
            home, dev = img.device, self.device
            img = _ensure_min_size(img.to(dev) if dev != home else img, self.min_size)
            return self._native(img).reshape(img.shape[0]).to(home)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Oriented native score per image ([B]): higher = better."""
        with grad_enabled():
            s = self.native(img)
            return -s if self.lower_better else s

    @property
    def is_calibrated(self) -> bool:
        """Whether :meth:`calibrated` gives a 0-100 score: the one answer every caller uses."""
        return self.calibration is not None or self.native_is_calibrated

    def calibrated(self, img: torch.Tensor) -> torch.Tensor:
        """Score per image in [0, 100], 100 = best (see :class:`Calibration`)."""
        if self.calibration is None and self.native_is_calibrated:
            return self.native(img)
        if self.calibration is None:
            raise RuntimeError(
                f"prior '{self.name}' has no calibration constants: fit them with "
                f"iqa_map.core.priors.fit_calibration(prior, images_or_folder, save_to=...)")
        with grad_enabled():
            return self.calibration(self.native(img), self.lower_better)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, lower_better={self.lower_better}, native_range={self.native_range}"


def grad_enabled(force: bool = False):
    """Leave inference mode so the graph is built whatever mode the caller is in.

    Under ``torch.inference_mode()`` (ComfyUI runs nodes that way) autograd is
    switched on; an explicit ``torch.no_grad()`` outside inference mode is
    respected, so pure scoring stays cheap. ``force`` turns autograd on anyway.
    """
    stack = contextlib.ExitStack()
    if force or torch.is_inference_mode_enabled():
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
    return stack


#: Luma range (grey levels of 255) under which an image or window carries no texture to judge.
FLAT_RANGE = 1.0


def is_calibrated(prior) -> bool:
    """:attr:`Prior.is_calibrated`, also for prior-like objects without it (their ``calibration``)."""
    flag = getattr(prior, "is_calibrated", None)
    return bool(flag) if flag is not None else getattr(prior, "calibration", None) is not None


def comparable_score(prior, img: torch.Tensor) -> torch.Tensor:
    """Calibrated 0-100 score when the prior has one (so lambda, margins and cross-prior tables mean
    the same for every prior), else its oriented native score."""
    return prior.calibrated(img) if is_calibrated(prior) else prior(img)


def comparable_float(prior, img: torch.Tensor) -> float:
    """:func:`comparable_score` of a single image as a number, without a graph (for tables and reports)."""
    with torch.no_grad():
        return float(comparable_score(prior, img)[0])


def scale_note(prior) -> str:
    """What follows a comparable score in text: '/100' when it is calibrated, ' (native)' when it is not."""
    return "/100" if is_calibrated(prior) else " (native)"


def textureless(img: torch.Tensor, grey_levels: float = FLAT_RANGE) -> torch.Tensor:
    """[B] bool: the luma (BT.601) of each image varies by less than ``grey_levels`` of 255 over the image:
    a flat colour (clear sky in an 8-bit file, a backdrop, a letterbox bar) that no NR-IQA model can judge."""
    y = (img.detach()[:, :3] * img.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1).flatten(1) * 255
    return (y.amax(1) - y.amin(1)) < grey_levels


def _ensure_min_size(img: torch.Tensor, min_size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    if min(h, w) >= min_size:
        return img
    scale = min_size / min(h, w)
    size = (max(min_size, math.ceil(h * scale)), max(min_size, math.ceil(w * scale)))
    return F.interpolate(img, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def score_and_grad(prior: Prior, img: torch.Tensor, calibrated: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(score [B], d score.sum() / d img) in one call; works under ``torch.inference_mode()``.

    Convenience for callers (ComfyUI nodes, samplers) that only need the pixel
    gradient and would otherwise have to leave inference mode themselves.
    """
    with grad_enabled(force=True):
        x = img.detach().clone().requires_grad_(True)
        s = prior.calibrated(x) if calibrated else prior(x)
        (g,) = torch.autograd.grad(s.sum(), x)
    return s.detach(), g
