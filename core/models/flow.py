"""Flow-matching (rectified-flow) models as denoisers: Flux, SD3, Qwen-Image, Z-Image.

A flow model is trained on the straight path ``x_t = (1 - t) x0 + t n``
(``t`` from 0, clean, to 1, pure noise) to predict the velocity
``v(x_t, t) = dx_t/dt = n - x0``. Sampling integrates ``dx/dt = v`` from 1 to 0.

Take ``sigma = t``. The clean estimate is ``D(x, t) = x - t v(x, t)`` (check:
``(1 - t) x0 + t n - t (n - x0) = x0``), so the sampler's noise estimate is
``eps = (x - D(x, t)) / t = v``. The core's sigma-form EDICT step
``x + (t' - t) eps(y, t)`` is then exactly the Euler step of the flow ODE (what
diffusers' ``FlowMatchEulerDiscreteScheduler.step`` does), and its exact
inverse replays the same velocity evaluations: inversion stays exact. Nothing
divides by ``1 - t``: ``t = 1`` (pure noise, where every flow schedule starts) is
an ordinary point, unlike the VE form ``x / (1 - t)`` with ``sigma = t/(1 - t)``,
which is infinite there. :class:`FlowDenoiser` returns ``v`` as ``eps``
directly, so even ``/ t`` never happens inside a flow sampler.

The state ``x_t`` is not VE (``x0 + sigma n``): its scale is
``sqrt((1 - t)^2 + t^2)`` for unit-scale latents, which :meth:`FlowDenoiser.unit_scale`
reports so the optimiser's "vp" steps keep their meaning (``x_vp`` is the same
point in both forms: ``x_ve / sqrt(1 + sigma_ve^2)`` with ``x_ve = x_t/(1 - t)``).

Schedules are the model's own (:class:`FlowSchedule`): a static ``shift``
(SD3: 3), or Flux's resolution-dependent shift, ``mu`` linear in the image's
token count, as diffusers' ``calculate_shift`` and
``FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)`` compute it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from .base import Denoiser, bcast, module_device_dtype, truncate_schedule

RAMPS = ("unit", "train")
TIME_SHIFTS = ("exponential", "linear")


@dataclasses.dataclass(frozen=True)
class FlowSchedule:
    """A flow model's timestep schedule, as diffusers' ``FlowMatchEulerDiscreteScheduler`` and the pipelines build it.

    ``ramp``: the unshifted ramp of ``n`` steps: ``"unit"`` is ``linspace(1, 1/n, n)``
    (what the Flux and Qwen-Image pipelines pass as ``sigmas``); ``"train"`` runs
    between the scheduler's trained extremes (the SD3 pipeline passes no sigmas).
    ``dynamic``: shift by ``mu`` from the image's token count (``seq_len``),
    else by the static ``shift``. ``default_seq_len``: the token count assumed
    when a schedule is asked for without a latent (Flux at 1024x1024: 4096).
    """
    shift: float = 1.0
    dynamic: bool = False
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_seq_len: int = 256
    max_seq_len: int = 4096
    time_shift_type: str = "exponential"
    shift_terminal: Optional[float] = None
    num_train_timesteps: int = 1000
    ramp: str = "unit"
    default_seq_len: int = 4096

    def __post_init__(self):
        if self.ramp not in RAMPS:
            raise ValueError(f"ramp must be one of {RAMPS}, got {self.ramp!r}")
        if self.time_shift_type not in TIME_SHIFTS:
            raise ValueError(f"time_shift_type must be one of {TIME_SHIFTS}, got {self.time_shift_type!r}")
        if not self.shift > 0:
            raise ValueError(f"shift must be positive, got {self.shift}")

    @classmethod
    def from_config(cls, config: Any, ramp: str = "unit", **overrides) -> "FlowSchedule":
        """From a ``FlowMatchEulerDiscreteScheduler`` (or its config dict); options it cannot honour are refused."""
        cfg = dict(getattr(config, "config", config))
        for flag in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas",
                     "stochastic_sampling"):
            if cfg.get(flag):
                raise ValueError(f"flow scheduler option {flag}=True is not supported (EDICT needs the "
                                 "deterministic Euler schedule); supported: shift, use_dynamic_shifting, "
                                 "shift_terminal")
        get = lambda k, d: d if cfg.get(k) is None else cfg[k]  # noqa: E731 - None means "default" there
        return cls(shift=float(get("shift", 1.0)), dynamic=bool(get("use_dynamic_shifting", False)),
                   base_shift=float(get("base_shift", 0.5)), max_shift=float(get("max_shift", 1.15)),
                   base_seq_len=int(get("base_image_seq_len", 256)), max_seq_len=int(get("max_image_seq_len", 4096)),
                   time_shift_type=get("time_shift_type", "exponential"), shift_terminal=cfg.get("shift_terminal"),
                   num_train_timesteps=int(get("num_train_timesteps", 1000)), ramp=ramp, **overrides)

    def mu(self, seq_len: int) -> float:
        """Flux's ``calculate_shift``: linear in the token count between (base, max) sequence lengths."""
        m = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len)
        return seq_len * m + self.base_shift - m * self.base_seq_len

    def _shifted(self, t: torch.Tensor, seq_len: Optional[int]) -> torch.Tensor:
        if self.dynamic:
            mu = self.mu(self.default_seq_len if seq_len is None else seq_len)
            e = math.exp(mu) if self.time_shift_type == "exponential" else mu
            return e / (e + (1 / t - 1))
        return self.shift * t / (1 + (self.shift - 1) * t)

    def sigmas(self, n: int, seq_len: Optional[int] = None) -> torch.Tensor:
        """``n + 1`` decreasing float64 times from (about) 1 to 0: diffusers' ``scheduler.sigmas``."""
        if n < 1:
            raise ValueError(f"a schedule needs at least one step, got {n}")
        T = self.num_train_timesteps
        if self.ramp == "unit":
            t = torch.linspace(1.0, 1.0 / n, n, dtype=torch.float64)
        else:  # between the trained sigmas' extremes, which are already shifted when the shift is static
            ends = torch.tensor([1.0, 1.0 / T], dtype=torch.float64)
            hi, lo = (ends if self.dynamic else self._shifted(ends, None)).tolist()
            t = torch.linspace(hi * T, lo * T, n, dtype=torch.float64) / T
        t = self._shifted(t, seq_len)
        if self.shift_terminal and n > 1:  # one step is t = 1 alone: nothing to stretch (diffusers divides by 0)
            one_minus = 1 - t
            t = 1 - one_minus / (one_minus[-1] / (1 - self.shift_terminal))
        return torch.cat([t, t.new_zeros(1)])


class FlowDenoiser(Denoiser):
    """A velocity model ``v(x_t, t, cond)`` as a core denoiser in ``sigma = t`` (see the module docstring).

    Subclasses implement :meth:`velocity`. ``multiple``: the latent grid the
    network needs (a transformer's patch size); ``patch``: the side of one image
    token in latent pixels (the token count drives the dynamic shift).
    """

    multiple = 1
    patch = 2
    #: :func:`~iqa_map.core.sampling.inversion.invert` passes the latent's shape to :meth:`sigmas` (dynamic shift).
    shape_dependent_schedule = True

    def __init__(self, schedule: Optional[FlowSchedule] = None):
        self.schedule = schedule or FlowSchedule()
        super().__init__(1.0 / self.schedule.num_train_timesteps, 1.0)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        raise NotImplementedError

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return x - bcast(sigma, x) * self.velocity(x, sigma, cond)

    def _eps(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """The velocity itself: ``(x - D) / t`` without forming ``D`` or dividing (``eps``, its VJP and
        their CUDA graphs all run this)."""
        return self.velocity(x, sigma, cond)

    def seq_len(self, latent_shape: Optional[Sequence[int]]) -> Optional[int]:
        if latent_shape is None:
            return None
        h, w = latent_shape[-2:]
        return (int(h) // self.patch) * (int(w) // self.patch)

    def _full_sigmas(self, total: int, latent_shape=None) -> torch.Tensor:
        return self.schedule.sigmas(total, self.seq_len(latent_shape))

    def sigmas(self, steps: int, strength: float = 1.0, latent_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        """As :meth:`Denoiser.sigmas`; ``latent_shape`` sets the token count of a dynamic shift."""
        total, keep = truncate_schedule(steps, strength)
        return self._full_sigmas(total, latent_shape)[-(keep + 1):].clone()

    @staticmethod
    def unit_scale(t0: float) -> float:
        """Factor from the state at ``t0`` to unit scale: ``1 / sqrt((1 - t0)^2 + t0^2)`` (1 at pure noise)."""
        t0 = float(t0)
        return 1.0 / math.sqrt((1 - t0) ** 2 + t0 ** 2)


class VelocityDenoiser(FlowDenoiser):
    """Any velocity network ``net(x, t)`` (``t`` a ``[B]`` tensor in [0, 1]) or ``net(x, t, cond)``."""

    def __init__(self, net: Callable, schedule: Optional[FlowSchedule] = None, takes_cond: bool = False):
        super().__init__(schedule)
        self.net = net
        self.network = net if isinstance(net, torch.nn.Module) else None
        self.takes_cond = takes_cond

    def velocity(self, x, t, cond=None):
        dev, dt = module_device_dtype(self.network)
        tb = (t.expand(x.shape[0]) if t.ndim == 0 else t).to(dev, dt)
        args = (x.to(dev, dt), tb) + ((cond,) if self.takes_cond else ())
        return self.net(*args).to(x.dtype)


def from_velocity(net: Callable, schedule: Optional[FlowSchedule] = None, takes_cond: bool = False,
                  **schedule_kw) -> VelocityDenoiser:
    """A velocity network as a core denoiser; ``schedule_kw`` build a :class:`FlowSchedule` when none is given."""
    if schedule is None:
        schedule = FlowSchedule(**schedule_kw)
    elif schedule_kw:
        raise ValueError("give either schedule or schedule keywords, not both")
    return VelocityDenoiser(net, schedule, takes_cond)


def schedule_for(denoiser: Denoiser, latent: torch.Tensor, steps: int, strength: float) -> torch.Tensor:
    """The denoiser's sigmas for ``latent`` (a flow model's dynamic shift depends on its size)."""
    if getattr(denoiser, "shape_dependent_schedule", False):
        return denoiser.sigmas(steps, strength, latent_shape=tuple(latent.shape))
    return denoiser.sigmas(steps, strength)


def split_flow_cond(cond: Any) -> Mapping:
    if cond is None:
        return {}
    if isinstance(cond, Mapping):
        return cond
    raise TypeError(f"a flow model's cond is a dict of its text embeddings, got {type(cond).__name__}")
