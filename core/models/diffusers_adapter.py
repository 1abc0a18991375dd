"""diffusers UNets (``UNet2DModel``, ``UNet2DConditionModel``) as VE denoisers.

A VP model at timestep t sees ``x_t = sqrt(ab) x0 + sqrt(1 - ab) n``; in VE
coordinates ``x = x_t / sqrt(ab)`` with ``sigma = sqrt((1 - ab) / ab)``. The DDIM
(eta = 0) step is then exactly the Euler step in sigma, so sampling through this
adapter reproduces diffusers' ``DDIMScheduler`` step for step for the
"leading" and "trailing" spacings. (With "linspace", diffusers' DDIM steps to
``t - T/N`` instead of the next listed timestep; the core walks the listed
timesteps, which is the consistent ODE discretisation.)
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

from .base import Denoiser, bcast, module_device_dtype

_PREDICTIONS = ("epsilon", "v_prediction", "sample")


class DiffusersDenoiser(Denoiser):
    def __init__(self, unet: torch.nn.Module, scheduler: Any, guidance: float = 1.0):
        try:
            from diffusers import DDIMScheduler
        except ImportError as e:  # pragma: no cover - diffusers is a hard dependency
            raise ImportError("from_diffusers needs the 'diffusers' package: pip install diffusers") from e
        config = getattr(scheduler, "config", scheduler)
        # Timestep spacing, offsets and the final alpha as the user's scheduler config defines them.
        self.scheduler = DDIMScheduler.from_config(dict(config))
        self.prediction_type = self.scheduler.config.prediction_type
        if self.prediction_type not in _PREDICTIONS:
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r}; supported: {_PREDICTIONS}")
        ac = self.scheduler.alphas_cumprod.to(torch.float64)
        self.train_sigmas = ((1 - ac) / ac).sqrt()
        self.log_sigmas = self.train_sigmas.log()
        final_ac = self.scheduler.final_alpha_cumprod.to(torch.float64)
        self.final_sigma = float(((1 - final_ac) / final_ac).sqrt())
        super().__init__(float(self.train_sigmas[0]), float(self.train_sigmas[-1]))
        self.unet = self.network = unet
        self.guidance = float(guidance)
        self.conditional = hasattr(getattr(unet, "config", None), "cross_attention_dim") and \
            getattr(unet.config, "cross_attention_dim", None) is not None

    # -- schedule -----------------------------------------------------------
    def _full_sigmas(self, total: int) -> torch.Tensor:
        self.scheduler.set_timesteps(total)
        ts = self.scheduler.timesteps.to(torch.long)
        s = self.train_sigmas[ts]
        return torch.cat([s, s.new_tensor([self.final_sigma])])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous timestep for sigma by log-sigma interpolation (exact on training sigmas).

        Computed on sigma's device, without a host round trip, so a CUDA graph can record it
        (MPS has no float64: there it runs on the CPU).
        """
        dev = sigma.device if sigma.device.type != "mps" else torch.device("cpu")
        log_sigma = sigma.detach().to(dev, torch.float64).reshape(-1).log()
        if self.log_sigmas.device != dev:
            self.log_sigmas = self.log_sigmas.to(dev)
        ls = self.log_sigmas
        dists = log_sigma[None, :] - ls[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=ls.shape[0] - 2)
        high = low + 1
        w = ((ls[low] - log_sigma) / (ls[low] - ls[high])).clamp(0, 1)
        t = (1 - w) * low + w * high
        rounded = t.round()
        return torch.where((t - rounded).abs() < 1e-6, rounded, t)

    # -- model call ---------------------------------------------------------
    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None) -> torch.Tensor:
        dev, dt = module_device_dtype(self.unet)
        b = x.shape[0]
        s = sigma.expand(b) if sigma.ndim == 0 else sigma
        t = self.sigma_to_t(s).to(dev)
        c_in = 1.0 / (s ** 2 + 1).sqrt()
        x_in = (x * bcast(c_in, x)).to(dt)

        positive, negative, extra = _split_cond(cond)
        if self.conditional and positive is None:
            raise ValueError("this UNet is text-conditioned: pass cond (encoder_hidden_states or "
                             "{'positive': ..., 'negative': ...})")
        if self.guidance != 1.0 and self.conditional:
            if negative is None:
                raise ValueError(f"guidance {self.guidance} needs a negative (unconditional) embedding in cond")
            out = self._run(torch.cat([x_in, x_in]), torch.cat([t, t]),
                            torch.cat([_expand(negative, b), _expand(positive, b)]), extra, 2)
            out_u, out_c = out.chunk(2)
            out = out_u + self.guidance * (out_c - out_u)
        else:
            out = self._run(x_in, t, _expand(positive, b) if positive is not None else None, extra, 1)
        out = out[:, : x.shape[1]].to(x.dtype)  # drop learned-variance channels if any

        s_b = bcast(s, x)
        if self.prediction_type == "epsilon":
            return x - s_b * out
        c = bcast(c_in, x)
        if self.prediction_type == "v_prediction":
            return c * c * x - s_b * c * out
        return out

    def _run(self, x, t, context, extra, reps):
        if self.conditional:
            kw = {k: torch.cat([v] * reps) if torch.is_tensor(v) else v for k, v in extra.items()}
            if "added_cond_kwargs" in extra:
                kw["added_cond_kwargs"] = {k: torch.cat([v] * reps) for k, v in extra["added_cond_kwargs"].items()}
            return self.unet(x, t, encoder_hidden_states=context.to(x.dtype), **kw).sample
        # Unconditional UNet2DModel; a class-conditional one takes its labels as cond.
        kw = {"class_labels": context} if context is not None else {}
        return self.unet(x, t, **kw).sample


def _split_cond(cond) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], dict]:
    if cond is None:
        return None, None, {}
    if torch.is_tensor(cond):
        return cond, None, {}
    if isinstance(cond, Mapping):
        extra = {k: v for k, v in cond.items() if k not in ("positive", "negative")}
        return cond.get("positive"), cond.get("negative"), extra
    raise TypeError(f"cond must be a tensor or a dict with 'positive'/'negative', got {type(cond).__name__}")


def _expand(c: torch.Tensor, b: int) -> torch.Tensor:
    return c.expand(b, *c.shape[1:]) if c.shape[0] == 1 and b > 1 else c


def from_diffusers(unet: torch.nn.Module, scheduler: Any, guidance: float = 1.0) -> DiffusersDenoiser:
    """A diffusers UNet plus its scheduler (or scheduler config) as a core denoiser.

    epsilon, v-prediction and sample prediction; classifier-free guidance scale
    ``guidance`` (1.0 = conditional model only); the timestep spacing is the one
    the scheduler config defines.
    """
    return DiffusersDenoiser(unet, scheduler, guidance)
