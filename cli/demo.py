"""``make demo``: degrade a sample photo that ships with scikit-image, enhance it on the CPU, show the effect.

Everything used is local: the photo comes from the scikit-image wheel, the
model is the built-in pixel-space denoiser, the prior the built-in fused
NIQE+BRISQUE (no download anywhere).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..core import priors
from ..core.io.files import write_json
from ..core.io.drawing import contact_sheet
from ..core.io.imageio import save_image
from ..core.quality.metrics import psnr, ssim
from ..core.map.pipeline import enhance
from ..core.priors.distortions import gaussian_blur, gaussian_noise, jpeg
from ..core.map.settings import preset

#: The demo runs the "fast" preset (partial inversion, few steps, Adam): a few minutes on a 2-core CPU; the
#: library defaults (full inversion, 20 steps, 20 momentum iterations) follow the public recipe and take longer.
DEMO_PRESET = "fast"


def add_parser(sub) -> None:
    dm = sub.add_parser("demo", help="degrade a bundled sample photo and enhance it with the built-in defaults",
                        description="Degrade a sample photo (scikit-image's cat) with blur, noise and JPEG, enhance it "
                        f"on the CPU with the built-in model and prior (the {DEMO_PRESET!r} preset), and write the "
                        "clean, degraded and enhanced photos, a side-by-side sheet and report.json. Nothing is "
                        "downloaded.")
    dm.add_argument("-o", "--output", default="out/demo", help="output folder (default %(default)s)")
    dm.add_argument("--iterations", type=int, default=None,
                    help=f"gradient steps (default: the {DEMO_PRESET!r} preset's)")
    dm.add_argument("--seed", type=int, default=0, help="seed of the degradation's noise and of the ascent "
                    "(default %(default)s)")
    dm.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    run_demo(Path(args.output), iterations=args.iterations, seed=args.seed)
    return 0


def sample_photo() -> torch.Tensor:
    """scikit-image's ``chelsea`` (a cat, 300x451), cropped to the face (192x256), in [0, 1]."""
    from skimage import data

    arr = torch.from_numpy(data.chelsea().copy()).permute(2, 0, 1)[None].float() / 255
    return arr[..., 40:232, 90:346].contiguous()


def degrade(img: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A mix of the usual real-world damage: slight blur, sensor noise, heavy JPEG."""
    return jpeg(gaussian_noise(gaussian_blur(img, 1.0), 8, seed=seed), 25)


def run_demo(out: Path, iterations: int | None = None, seed: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    clean = sample_photo()
    noisy = degrade(clean, seed)
    prior = priors.load("builtin")
    monitors = [priors.load("piqe")]
    settings = preset(DEMO_PRESET, seed=seed, iterations=iterations)
    print(f"enhancing a {noisy.shape[-1]}x{noisy.shape[-2]} photo: built-in model, prior {prior.name}, "
          f"{settings.iterations} iterations of {settings.steps} EDICT steps at strength {settings.strength}")

    def progress(info):
        print(f"  iteration {info['iteration']:2d}/{info['total']}: prior {info['score']:6.2f}  "
              f"fidelity {info['fidelity']:.4f}  ({info['seconds']:.0f} s)", flush=True)

    res = enhance(noisy, model="builtin", prior=prior, monitors=monitors, settings=settings, device="cpu",
                  callback=progress)
    save_image(clean, out / "clean.png")
    save_image(noisy, out / "input.png")
    save_image(res.image, out / "output.png")
    rows = []
    for p in [prior, *prior.priors, *monitors]:
        with torch.no_grad():
            a, b = float(p.native(noisy)[0]), float(p.native(res.image)[0])
        rows.append((p.name, "lower" if p.lower_better else "higher", a, b))
    rows.append(("PSNR vs clean (dB)", "higher", psnr(noisy, clean), psnr(res.image, clean)))
    rows.append(("SSIM vs clean", "higher", ssim(noisy, clean), ssim(res.image, clean)))
    labels = ["clean original", f"degraded input\n{prior.name} {rows[0][2]:.1f}",
              f"enhanced\n{prior.name} {rows[0][3]:.1f}"]
    contact_sheet([clean, noisy, res.image], labels).save(out / "side_by_side.png")
    table = [dict(zip(("metric", "better", "input", "output"), r)) for r in rows]
    report = {**res.report.to_dict(), "demo": {"table": table, "total_seconds": time.perf_counter() - t0}}
    write_json(out / "report.json", report)
    print(f"\n{'metric':24s} {'better':>7s} {'input':>9s} {'output':>9s}")
    for name, better, a, b in rows:
        print(f"{name:24s} {better:>7s} {a:9.3f} {b:9.3f}")
    for ev in res.report["events"]:
        print(f"note: {ev}")
    print(f"\nwrote {out}/input.png, output.png, side_by_side.png, report.json "
          f"({time.perf_counter() - t0:.0f} s)")
    return report
