"""Train the built-in learned NR-IQA prior ``cnniqa-builtin``.

    python -m iqa_map.training.nriqa --data ../shared/data/images/train --out runs/nriqa
    python -m iqa_map.training.nriqa --out runs/nriqa --export      # ship into core/priors/data/

The CNNIQA architecture (Kang et al., CVPR 2014; :class:`~iqa_map.core.priors.local.CNNIQANet`)
trained to predict, from a 32x32 patch alone, how much a full-reference metric
says the patch was damaged: ``100 * (1 - SSIM(clean, degraded))`` over the patch.
Distilling a full-reference metric on synthetic degradations of clean photos is
the label-free way to train an NR-IQA model (as in BLISS and dipIQ); the
damage is Gaussian blur, Gaussian noise, JPEG and their chains at random levels,
the kinds real old photos show. Higher = worse (a DMOS-like 0..100), so it loads
through the same ``cnniqa`` architecture entry as CNNIQA-LIVE.

Why a learned patch model besides the handcrafted built-ins: NIQE, BRISQUE and
PIQE are image-level statistics; on the small windows of a quality map they read
flat clean regions as damaged and sensor-like noise as texture
(``benchmarks/bench_qmap.py``). A 32x32-patch regressor is local by construction.
Trains in minutes on a 2-core CPU. Never train it on ``images/dev``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..core.io.files import atomic_path, sha256_file, write_json
from ..core.priors.distortions import gaussian_blur, gaussian_noise, jpeg
from ..core.priors.local import CNNIQANet
from .data import CropSampler, load_images

DEFAULTS = {
    "seed": 0,
    "samples": 60000,        # patches generated once, before training
    "val_fraction": 0.1,
    "crop": 72,              # degraded region; the patch is cut from its middle so filters see real context
    "scale_min": 0.5,        # log-uniform rescale of the source photo (texture at several scales)
    "p_clean": 0.15,
    "p_chain": 0.3,          # blur -> noise -> JPEG chain (each stage with probability 0.6, at least one)
    "blur_sigma": [0.3, 4.0],    # log-uniform, pixels
    "noise_std": [1.0, 50.0],    # log-uniform, 0..255 scale
    "jpeg_quality": [5, 90],     # uniform integer
    "epochs": 12,
    "batch": 128,
    "lr": 1e-3,
    "lr_final": 0.02,        # cosine decay to lr * lr_final
}
EXPORT_NAME = "cnniqa_builtin.safetensors"
PATCH = CNNIQANet.patch
_GRAY = (0.299, 0.587, 0.114)


def _log_uniform(lo: float, hi: float, u: float) -> float:
    return math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)


def degrade(x: torch.Tensor, s: dict, gen: torch.Generator) -> torch.Tensor:
    """One random degradation of ``x`` [1,3,H,W] in [0,1]."""
    u = torch.rand(8, generator=gen).tolist()
    if u[0] < s["p_clean"]:
        return x
    if u[0] < s["p_clean"] + s["p_chain"]:
        stages = [v < 0.6 for v in u[1:4]]
        if not any(stages):
            stages[int(u[4] * 3)] = True
    else:
        stages = [False, False, False]
        stages[int(u[4] * 3)] = True
    y = x
    if stages[0]:
        y = gaussian_blur(y, _log_uniform(*s["blur_sigma"], u[5]))
    if stages[1]:
        y = gaussian_noise(y, _log_uniform(*s["noise_std"], u[6]), generator=gen)
    if stages[2]:
        lo, hi = s["jpeg_quality"]
        y = jpeg(y, lo + int(u[7] * (hi - lo + 1)))
    return y


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x * x.new_tensor(_GRAY).view(1, 3, 1, 1)).sum(1, keepdim=True)


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, K 0.01/0.03) of grey [B,1,H,W] in [0,1], 'valid' map."""
    r = 5
    g = torch.exp(-torch.arange(-r, r + 1, dtype=a.dtype) ** 2 / (2 * 1.5 ** 2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2).view(1, 1, 2 * r + 1, 2 * r + 1)
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    saa = F.conv2d(a * a, w) - mu_a ** 2
    sbb = F.conv2d(b * b, w) - mu_b ** 2
    sab = F.conv2d(a * b, w) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))


def make_dataset(images, s: dict, n: int, gen: torch.Generator, progress: bool = True):
    """``n`` degraded 32x32 patches (uint8 [n,3,32,32]) and their targets ``100 * (1 - SSIM)`` ([n])."""
    sampler = CropSampler(images, s["crop"], s["scale_min"])
    xs = torch.empty(n, 3, PATCH, PATCH, dtype=torch.uint8)
    ys = torch.empty(n)
    lo = 5 + 8                       # SSIM 'valid' map starts 5 px in; keep a margin for the JPEG grid shift
    t0 = time.perf_counter()
    for i in range(n):
        clean = sampler.sample(1, gen).add_(1).div_(2)
        clean = (clean * 255).round() / 255   # photos are 8-bit: the clean patch too
        bad = (degrade(clean, s, gen) * 255).round() / 255
        top, left = (lo + int(v) for v in torch.randint(0, s["crop"] - PATCH - 2 * lo + 1, (2,), generator=gen))
        m = ssim_map(_gray(clean), _gray(bad))[..., top - 5:top - 5 + PATCH, left - 5:left - 5 + PATCH]
        ys[i] = 100 * (1 - m.mean())
        xs[i] = (bad[0, :, top:top + PATCH, left:left + PATCH] * 255).round().to(torch.uint8)
        if progress and (i + 1) % 5000 == 0:
            print(f"  data {i + 1}/{n} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return xs, ys


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _evaluate(net, xs, ys, batch: int = 1024) -> dict:
    with torch.no_grad():  # CNNIQA has no dropout or batch norm: no train/eval switch needed
        pred = torch.cat([net(xs[i:i + batch].float() / 255) for i in range(0, len(xs), batch)])
    p, t = pred.numpy(), ys.numpy()
    return {"l1": float(np.abs(p - t).mean()), "plcc": float(np.corrcoef(p, t)[0, 1]), "srcc": _spearman(p, t)}


def train(out: Path, data: Optional[str], given: dict, progress: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    s = {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
    if data is None:
        raise SystemExit("--data is required to train (a folder of clean photos; never the dev split)")
    s["data"] = str(Path(data).resolve())
    (out / "config.json").write_text(json.dumps(s, indent=2))
    torch.manual_seed(s["seed"])
    gen = torch.Generator().manual_seed(s["seed"])
    images = load_images(data, s["crop"])
    t0 = time.perf_counter()
    xs, ys = make_dataset(images, s, s["samples"], gen, progress)
    n_val = int(len(xs) * s["val_fraction"])
    (xv, yv), (xt, yt) = (xs[:n_val], ys[:n_val]), (xs[n_val:], ys[n_val:])
    print(f"{len(xt)} train / {n_val} val patches in {time.perf_counter() - t0:.0f} s; "
          f"target mean {float(ys.mean()):.1f}, std {float(ys.std()):.1f}", file=sys.stderr, flush=True)
    net = CNNIQANet()
    opt = torch.optim.Adam(net.parameters(), lr=s["lr"])
    steps_per_epoch = len(xt) // s["batch"]
    total = steps_per_epoch * s["epochs"]
    log = []
    step = 0
    for epoch in range(s["epochs"]):
        perm = torch.randperm(len(xt), generator=gen)
        for k in range(steps_per_epoch):
            idx = perm[k * s["batch"]:(k + 1) * s["batch"]]
            x = xt[idx].float() / 255
            x = torch.rot90(x, int(torch.randint(4, (1,), generator=gen)), dims=(2, 3))  # quality is orientation-free
            lr = s["lr"] * (s["lr_final"] + (1 - s["lr_final"]) * 0.5 * (1 + math.cos(math.pi * step / total)))
            for group in opt.param_groups:
                group["lr"] = lr
            loss = (net(x) - yt[idx]).abs().mean()   # L1, as CNNIQA
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        ev = _evaluate(net, xv, yv)
        log.append({"epoch": epoch + 1, "train_l1_last": float(loss.detach()), **{f"val_{k}": v for k, v in ev.items()},
                    "seconds": time.perf_counter() - t0})
        if progress:
            print(f"epoch {epoch + 1}/{s['epochs']}: val L1 {ev['l1']:.2f}, PLCC {ev['plcc']:.3f}, "
                  f"SRCC {ev['srcc']:.3f} ({log[-1]['seconds']:.0f} s)", file=sys.stderr, flush=True)
        with atomic_path(out / "checkpoint.pt") as tmp:  # a stopped run keeps its last whole epoch
            torch.save({"net": net.state_dict(), "settings": s, "log": log}, tmp)
    write_json(out / "train_log.json", log)
    return {"settings": s, "log": log}


def export(out: Path, dest: Optional[str] = None) -> Path:
    """The run's weights as fp16 safetensors (1.4 MB) plus a model card line with the SHA-256."""
    from safetensors.torch import save_file

    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    folder = Path(dest) if dest else Path(__file__).resolve().parents[1] / "core" / "priors" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / EXPORT_NAME
    save_file({k: v.half().contiguous() for k, v in ckpt["net"].items()}, str(path),
              metadata={"arch": "cnniqa", "target": "100*(1-SSIM) of synthetic blur/noise/JPEG, higher = worse",
                        "settings": json.dumps(ckpt["settings"]), "val": json.dumps(ckpt["log"][-1])})
    path.chmod(0o644)  # safetensors writes 0600; the package file must be readable by everyone
    digest = sha256_file(path)
    path.with_suffix(".sha256").write_text(f"{digest}  {path.name}\n")
    print(f"exported {path} (sha256 {digest})", file=sys.stderr)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m iqa_map.training.nriqa", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder of clean photos (train split only)")
    p.add_argument("--out", required=True, help="run folder: config.json, checkpoint.pt, train_log.json")
    p.add_argument("--export", action="store_true", help="only export the run's weights, no training")
    p.add_argument("--export-dir", help="where --export writes (default: the package's core/priors/data/)")
    for key in ("seed", "samples", "epochs", "batch"):
        p.add_argument(f"--{key}", type=int, help=f"default {DEFAULTS[key]}")
    p.add_argument("--lr", type=float, help=f"default {DEFAULTS['lr']}")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    if a.export:
        export(out, a.export_dir)
        return
    train(out, a.data, {k: getattr(a, k) for k in ("seed", "samples", "epochs", "batch", "lr")})


if __name__ == "__main__":
    main()
