"""Training loop of the built-in denoiser: EDM loss, Adam, EMA, resumable checkpoints, export.

Recipe (Karras et al. 2022, "Elucidating the Design Space...", section 5):
``x = x0 + sigma * n`` with ``ln sigma ~ N(P_mean, P_std^2)``, loss
``lambda(sigma) ||D(x, sigma) - x0||^2`` with ``lambda = 1 / c_out^2``, i.e. a
unit-variance regression target for the raw network at every sigma.

Deviation from EDM, on purpose: EDM's ``P_mean = -1.2, P_std = 1.2`` spread
over sigma up to 80 for generation from pure noise. This model is used for
Gaussian denoising at std 15..50/255 (sigma 0.12..0.39 on [-1, 1]) and for
partial inversions up to sigma ~1-2, so the log-normal is *truncated* to
``[sigma_min, sigma_max] = [0.002, 2]`` (no capacity spent where it is never
used) and ``P_std`` narrowed to 1.0 around ``P_mean = -1.2`` (median sigma
0.30): about half the samples fall in the denoising range, ~11 % above
sigma 1.
"""
from __future__ import annotations

import copy
import json
import math
import os
import platform
import signal
import threading
import time
from pathlib import Path
from typing import Optional

import torch

from ..core.models.builtin import (DEFAULT_CONFIG, WEIGHTS_DIR, WEIGHTS_NAME, build_model, count_parameters,
                                   edm_coefficients, macs_per_pixel, write_weights)
from ..core.io.files import atomic_path
from .data import CropSampler, load_images

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
ARCH_KEYS = ("channels", "enc_blocks", "mid_blocks", "dec_blocks", "unshuffle", "emb_channels", "emb_dim")

# Every setting of a run; the run folder's config.json records all of them.
DEFAULTS = {
    "data": None,
    "seed": 0,
    "steps": 4500,
    "batch": 16,
    "crop": 64,
    "scale_min": 0.5,
    "lr": 7e-4,
    "lr_warmup": 250,
    "lr_final": 0.02,          # cosine decay to lr * lr_final at `steps`
    "adam_betas": [0.9, 0.999],
    "grad_clip": 1.0,          # max global gradient norm: the blocks carry no normalisation layers
    "ema": 0.999,
    "p_mean": -1.2,
    "p_std": 1.0,
    "sigma_min": DEFAULT_CONFIG["sigma_min"],
    "sigma_max": DEFAULT_CONFIG["sigma_max"],
    "sigma_data": DEFAULT_CONFIG["sigma_data"],
    "channels": DEFAULT_CONFIG["channels"],
    "enc_blocks": DEFAULT_CONFIG["enc_blocks"],
    "mid_blocks": DEFAULT_CONFIG["mid_blocks"],
    "dec_blocks": DEFAULT_CONFIG["dec_blocks"],
    "unshuffle": DEFAULT_CONFIG["unshuffle"],
    "emb_channels": DEFAULT_CONFIG["emb_channels"],
    "emb_dim": DEFAULT_CONFIG["emb_dim"],
    "device": None,            # cuda if available, else cpu
    "threads": None,           # torch CPU threads (None: torch's default)
    "ckpt_minutes": 5.0,       # checkpoint every this many minutes ...
    "ckpt_every": 0,           # ... and/or every this many steps (0: off)
    "snapshots": True,         # keep the EMA weights of every checkpoint (to choose among them)
    "max_minutes": None,       # stop gracefully (checkpoint + export) after this long
    "log_every": 50,
}
# Settings a resumed run may change; all others must match the checkpoint's run.
RESUMABLE = {"data", "steps", "device", "threads", "ckpt_minutes", "ckpt_every", "snapshots", "max_minutes",
             "log_every"}


def merge_settings(out: Path, given: dict, resume: bool) -> dict:
    """Defaults <- the run's saved config (when resuming) <- explicitly given settings."""
    settings = dict(DEFAULTS)
    if resume:
        cfg_path = out / CONFIG
        if not cfg_path.is_file():
            raise FileNotFoundError(f"--resume: no {CONFIG} in {out}")
        saved = json.loads(cfg_path.read_text())["settings"]
        settings.update(saved)
        changed = sorted(k for k, v in given.items() if k not in RESUMABLE and v != saved.get(k))
        if changed:
            raise ValueError(f"--resume cannot change {', '.join(changed)} (they define the run); "
                             f"only {', '.join(sorted(RESUMABLE))} may change")
    settings.update(given)
    if settings["data"] is None:
        raise ValueError("--data DIR (a folder of clean photos) is required")
    return settings


def lr_at(step: int, s: dict) -> float:
    """Linear warmup, then cosine decay to ``lr * lr_final`` at ``steps`` (constant after)."""
    if step < s["lr_warmup"]:
        return s["lr"] * (step + 1) / s["lr_warmup"]
    span = max(1, s["steps"] - s["lr_warmup"])
    t = min(1.0, (step - s["lr_warmup"]) / span)
    return s["lr"] * (s["lr_final"] + (1 - s["lr_final"]) * 0.5 * (1 + math.cos(math.pi * t)))


def sample_sigmas(n: int, s: dict, gen: torch.Generator) -> torch.Tensor:
    """Log-normal sigmas truncated to ``[sigma_min, sigma_max]`` (inverse-CDF sampling, no clipping mass)."""
    normal = torch.distributions.Normal(0.0, 1.0)
    lo = normal.cdf(torch.tensor((math.log(s["sigma_min"]) - s["p_mean"]) / s["p_std"]))
    hi = normal.cdf(torch.tensor((math.log(s["sigma_max"]) - s["p_mean"]) / s["p_std"]))
    u = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64).float()
    return (s["p_mean"] + s["p_std"] * normal.icdf(u.clamp(1e-7, 1 - 1e-7))).exp()


def model_config(s: dict) -> dict:
    cfg = dict(DEFAULT_CONFIG)
    cfg.update({k: s[k] for k in ARCH_KEYS})
    cfg.update({k: s[k] for k in ("sigma_min", "sigma_max", "sigma_data")})
    return cfg


def edm_loss(net, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM loss: ``||F(c_in x, c_noise) - (x0 - c_skip x) / c_out||^2`` equals ``lambda ||D - x0||^2``."""
    c_skip, c_out, c_in, c_noise = (c[:, None, None, None] for c in edm_coefficients(sigma, sigma_data))
    x = x0 + sigma[:, None, None, None] * noise
    target = (x0 - c_skip * x) / c_out
    return (net(c_in * x, c_noise.flatten()) - target).pow(2).mean()


def _atomic_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def export(out: Path, dest: Optional[os.PathLike] = None) -> Path:
    """Write the checkpoint's EMA weights as shipped files (safetensors + JSON + sha256) into ``dest``."""
    ckpt_path = out / CHECKPOINT
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {out}; train first")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    s = ckpt["settings"]
    cfg = model_config(s)
    cfg["training"] = {
        "step": ckpt["step"],
        "images": ckpt["n_images"],
        "batch": s["batch"], "crop": s["crop"], "seed": s["seed"],
        "p_mean": s["p_mean"], "p_std": s["p_std"], "lr": s["lr"], "ema": s["ema"],
        "train_seconds": round(ckpt["train_seconds"], 1),
        "weights": "EMA",
    }
    dest = Path(WEIGHTS_DIR if dest is None else dest)
    return write_weights(ckpt["ema"], cfg, dest, WEIGHTS_NAME)


def train(out: os.PathLike, given: dict, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) the run in ``out``; returns the final checkpoint summary."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = merge_settings(out, given, resume)
    if s["threads"]:
        torch.set_num_threads(int(s["threads"]))
    device = torch.device(s["device"] or ("cuda" if torch.cuda.is_available() else "cpu"))

    torch.manual_seed(s["seed"])
    net = build_model(model_config(s)).to(device)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=s["lr"], betas=tuple(s["adam_betas"]))
    gen = torch.Generator().manual_seed(s["seed"])
    step, train_seconds = 0, 0.0
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise FileNotFoundError(f"--resume: no {CHECKPOINT} in {out}")
        ckpt = torch.load(out / CHECKPOINT, map_location=device, weights_only=False)
        net.load_state_dict(ckpt["net"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["opt"])
        gen.set_state(ckpt["gen"].cpu())
        step, train_seconds = ckpt["step"], ckpt["train_seconds"]

    images = load_images(s["data"], min_side=s["crop"])
    sampler = CropSampler(images, s["crop"], s["scale_min"])
    info = {
        "settings": s,
        "model_config": model_config(s),
        "parameters": count_parameters(net),
        "macs_per_pixel": macs_per_pixel(copy.deepcopy(net).cpu().float()),
        "n_images": len(images),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    (out / CONFIG).write_text(json.dumps(info, indent=2) + "\n")
    log = open(out / "train.log", "a")

    def checkpoint() -> None:
        state = {"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                 "step": step, "train_seconds": train_seconds, "settings": s, "n_images": len(images)}
        _atomic_save(state, out / CHECKPOINT)
        if s["snapshots"]:
            from safetensors.torch import save_file
            (out / "snapshots").mkdir(exist_ok=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()},
                      str(out / "snapshots" / f"ema_{step:07d}.safetensors"))
        log.write(f"checkpoint step {step} train_seconds {train_seconds:.0f}\n")
        log.flush()

    t_start = time.time()
    last_ckpt, last_step_ckpt = t_start, step
    run_loss, run_gnorm, n_loss = 0.0, 0.0, 0
    bar = tqdm(total=s["steps"], initial=step, disable=not progress, dynamic_ncols=True, mininterval=2.0)
    stopped_early = False
    # SIGTERM / Ctrl-C end a background run like --max-minutes: checkpoint, export, exit cleanly.
    stop_request = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            handlers[sig] = signal.signal(sig, lambda signum, frame: stop_request.append(signum))
    net.train()
    while step < s["steps"]:
        over_time = s["max_minutes"] is not None and time.time() - t_start >= 60 * float(s["max_minutes"])
        if over_time or stop_request:
            stopped_early = True
            break
        t0 = time.time()
        x0 = sampler.sample(s["batch"], gen).to(device)
        sigma = sample_sigmas(s["batch"], s, gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        lr = lr_at(step, s)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = edm_loss(net, x0, sigma, noise, s["sigma_data"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(net.parameters(), s["grad_clip"]).item()
        opt.step()
        decay = min(s["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - decay)
        step += 1
        train_seconds += time.time() - t0
        run_loss, run_gnorm, n_loss = run_loss + loss.item(), run_gnorm + gnorm, n_loss + 1
        bar.update(1)
        if step % s["log_every"] == 0 or step == s["steps"]:
            bar.set_postfix(loss=f"{run_loss / n_loss:.4f}", lr=f"{lr:.2e}")
            log.write(f"step {step} loss {run_loss / n_loss:.5f} grad_norm {run_gnorm / n_loss:.3f} lr {lr:.3e} "
                      f"s/it {train_seconds / max(step, 1):.3f} elapsed {time.time() - t_start:.0f}\n")
            log.flush()
            run_loss, run_gnorm, n_loss = 0.0, 0.0, 0
        due_time = time.time() - last_ckpt >= 60 * float(s["ckpt_minutes"])
        due_step = s["ckpt_every"] and step - last_step_ckpt >= s["ckpt_every"]
        if due_time or due_step:
            checkpoint()
            last_ckpt, last_step_ckpt = time.time(), step
    bar.close()
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    if step != last_step_ckpt or not (out / CHECKPOINT).exists():
        checkpoint()
    exported = export(out, out / "export")
    log.write(f"{'stopped early' if stopped_early else 'finished'}: step {step}, exported {exported}\n")
    log.close()
    return {"step": step, "train_seconds": train_seconds, "stopped_early": stopped_early, "export": str(exported)}
