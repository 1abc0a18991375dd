"""IQA-regularised SR fine-tuning against its controls: the issue-24 benchmark.

    python -m benchmarks.bench_sr [--base swift_srgan_x4 --base dctlsa_x4] [--rows base,l1,lora_iqa,all_iqa]
                                  [--steps 150] [--train-limit N] [--dev-limit N] [--out out/bench/sr.json]

Bases are the real pretrained upscalers in ../shared/data/weights/sr/. Training: random
LR crops (bicubic by the scale) of ../shared/data/images/train; evaluation: every dev photo
(cropped to a multiple of the scale), bicubic /scale input, the SR output against the HR
photo. Rows:

* ``base``: the pretrained model;
* ``l1``: LoRA, L1 only (the control: same steps, no IQA term);
* ``lora_iqa``: LoRA, L1 - lQ Q (the product's default);
* ``all_iqa``: every weight, L1 - lQ Q (does LoRA limit hacking?);
* ``amo`` / ``sma``: LoRA with the IQA term, the target chosen among the HR photo and three
  sharpened versions of it (``orig`` is ``lora_iqa``).

Columns: PSNR-Y (BT.601 Y, ``scale`` border pixels cropped) and SSIM-Y against the HR photo,
the optimised prior's native score, held-out NR metrics (native), the share of dev photos
on which each NR metric improved over the base, LoRA size and training time. Each row is
written to the JSON file as it finishes; a rerun skips the rows already there.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
ROWS = {  # name: (train mode, IQA term on, selection); None = no training
    "base": None,
    "l1": ("lora", False, "orig"),
    "lora_iqa": ("lora", True, "orig"),
    "all_iqa": ("all", True, "orig"),
    "amo": ("lora", True, "amo"),
    "sma": ("lora", True, "sma"),
}


def y_channel(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma on [0,1] as the SR literature computes PSNR-Y (16-235 range)."""
    w = img.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return ((img * w).sum(1, keepdim=True) + 16.0) / 255.0


def psnr_ssim_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> tuple[float, float]:
    from iqa_map.core.map import psnr, ssim

    a, b = y_channel(sr), y_channel(hr)
    if border:
        a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    return psnr(a, b), ssim(a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1))


@torch.no_grad()
def evaluate(model, files, metrics: dict, scale: int) -> list[dict]:
    from iqa_map.core.imageio import load_image
    from iqa_map.core.sr import downscale, upscale

    rows = []
    for f in files:
        hr = load_image(f)
        h, w = (hr.shape[-2] // scale) * scale, (hr.shape[-1] // scale) * scale
        hr = hr[..., :h, :w]
        out = upscale(model, downscale(hr, scale), tile=0)
        p, s = psnr_ssim_y(out, hr, scale)
        rows.append({"image": f.name, "psnr_y": p, "ssim_y": s,
                     **{n: float(m.native(out)[0]) for n, m in metrics.items()}})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", action="append", default=[], help="file stem in weights/sr (default: both x4)")
    ap.add_argument("--rows", default="base,l1,lora_iqa,all_iqa")
    ap.add_argument("--prior", default="niqe", help="the optimised prior")
    ap.add_argument("--held-out", default="brisque,piqe,cnniqa-builtin")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--rank", type=int, default=None, help="default: SRSettings'")
    ap.add_argument("--lora-exclude", default=None, metavar="REGEX", help="layers left without adapters")
    ap.add_argument("--iqa-weight", type=float, default=None, help="default: SRSettings'")
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--dev-limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="out/bench/sr.json")
    ap.add_argument("--save-models", default="out/bench/sr_models")
    ap.add_argument("--figure", default=None, metavar="PNG", help="only draw crops of the saved models (HR, "
                    "bicubic and each row) on two dev photos into this file, from --save-models and --out")
    ap.add_argument("--grid", action="store_true", help="only measure, for each saved model, the share of its change "
                    "against the base at the scale's pixel period (a pixel-shuffle grid) and NIQE on 256-pixel crops")
    args = ap.parse_args(argv)
    if args.figure:
        return figure(args)
    if args.grid:
        return grid(args)

    from benchmarks.common import dev_files
    from iqa_map.core import priors, sr

    if args.threads:
        torch.set_num_threads(args.threads)
    bases = args.base or ["swift_srgan_x4", "dctlsa_x4"]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"unknown rows {unknown}; choose from {list(ROWS)}")
    files = dev_files(args.dev_limit)
    prior = priors.load(args.prior)
    metrics = {args.prior: prior, **{n: priors.load(n) for n in args.held_out.split(",") if n}}
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    local = ("rows", "base", "out", "threads", "save_models", "figure")  # where and how, not what is measured
    settings = {k: v for k, v in vars(args).items() if k not in local}
    if results and results.get("settings") != settings:
        sys.exit(f"{out} holds a run with other settings ({results.get('settings')}); give another --out")
    results["settings"] = settings
    samples_cache = {}
    for base_name in bases:
        path = DATA / "weights" / "sr" / next(p.name for p in (DATA / "weights" / "sr").iterdir()
                                               if p.stem == base_name)
        base = sr.load_upscaler(path)
        for row in rows:
            key = f"{base_name}/{row}"
            if key in results.get("rows", {}):
                print(f"{key}: done already", flush=True)
                continue
            spec = ROWS[row]
            t0 = time.perf_counter()
            record, model, lora_bytes = {}, base, None
            if spec is not None:
                mode, iqa, selection = spec
                gen = ("sharpen",) if selection != "orig" else ()
                if gen not in samples_cache:
                    samples_cache[gen] = sr.load_samples(DATA / "images" / "train", generate=gen,
                                                         limit=args.train_limit)
                s = sr.SRSettings(steps=args.steps, crop=args.crop, batch=args.batch, lr=args.lr, rank=args.rank or sr.SRSettings.rank,
                                  exclude=args.lora_exclude,
                                  train=mode, selection=selection, seed=0,
                                  **({"iqa_weight": args.iqa_weight} if iqa and args.iqa_weight is not None
                                     else {} if iqa else {"iqa_weight": 0.0}))
                sampler = sr.PairSampler(samples_cache[gen], base.scale, s.crop, s.batch, selection=selection,
                                         temperature=s.temperature, prior=prior, seed=s.seed)

                def progress(info, key=key):
                    if info["step"] % 25 == 0 or info["step"] == info["steps"]:
                        print(f"  {key} step {info['step']}/{info['steps']} l1 {info['l1']:.4f} "
                              f"q {info['q'] if info['q'] is None else round(info['q'], 2)}", flush=True)

                res = sr.finetune(base, sampler, prior, s, callback=progress, base_hash=sr.file_sha256(path))
                record = res.record
                model = sr.load_upscaler(res.merged_state_dict())
                if args.save_models:
                    d = Path(args.save_models)
                    dest = d / f"{base_name}_{row}.safetensors"
                    dest.unlink(missing_ok=True)
                    sr.save_upscaler(res.merged_state_dict(), dest, record)
                    if res.lora is not None:
                        lp = d / f"{base_name}_{row}_lora.safetensors"
                        lp.unlink(missing_ok=True)
                        sr.save_lora(res.lora_state_dict(), s.lora_spec(), lp, record)
                        lora_bytes = lp.stat().st_size
            train_s = time.perf_counter() - t0
            per = evaluate(model, files, metrics, base.scale)
            results.setdefault("rows", {})[key] = {"per_image": per, "train_seconds": train_s if spec else 0.0,
                                                   "record": record, "lora_bytes": lora_bytes,
                                                   "base_bytes": path.stat().st_size}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1, default=str))
            print(f"{key}: trained {train_s:.0f} s, evaluated", flush=True)
    print(table(results, prior_name=args.prior))


@torch.no_grad()
def figure(args, photos=("108005.png", "253027.png"), rows=("base", "lora_iqa", "all_iqa"), crop=64) -> None:
    """One line per (photo, base): HR | bicubic | each of ``rows``, on a central crop (``crop`` LR pixels), each
    labelled with PSNR-Y and the optimised prior's native score for that crop."""
    import torch.nn.functional as F

    from benchmarks.common import centre_crop
    from iqa_map.core import priors, sr
    from iqa_map.core.drawing import contact_sheet
    from iqa_map.core.imageio import load_image

    results = json.loads(Path(args.out).read_text())
    prior = priors.load(args.prior)
    bases = list(dict.fromkeys(k.split("/")[0] for k in results["rows"]))
    tiles, labels = [], []
    for name in photos:
        hr_full = load_image(DATA / "images" / "dev" / name)
        for base_name in bases:
            path = DATA / "weights" / "sr" / next(p.name for p in (DATA / "weights" / "sr").iterdir()
                                                   if p.stem == base_name)
            models = {row: sr.load_upscaler(path) if row == "base" else
                      sr.load_upscaler(Path(args.save_models) / f"{base_name}_{row}.safetensors") for row in rows}
            s_ = next(iter(models.values())).scale
            hr = centre_crop(hr_full, crop * s_)
            lr = sr.downscale(hr, s_)
            bic = F.interpolate(lr, scale_factor=s_, mode="bicubic", align_corners=False).clamp(0, 1)
            for t, lab in ((hr, f"{name} HR"), (bic, "bicubic")):
                tiles.append(t)
                labels.append(f"{lab}\n{args.prior} {float(prior.native(t)):.2f}")
            for row, model in models.items():
                out = sr.upscale(model, lr, tile=0)
                p, _ = psnr_ssim_y(out, hr, s_)
                tiles.append(out)
                labels.append(f"{base_name} {row}\n{p:.2f} dB, {args.prior} {float(prior.native(out)):.2f}")
    sheet = contact_sheet(tiles, labels, columns=len(rows) + 2)
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.figure)
    print(f"wrote {args.figure}")


@torch.no_grad()
def grid(args, limit: int = 20, size: int = 256) -> None:
    """Why an IQA-tuned model scores as it does: on centre crops of the first ``limit`` dev photos, the share
    of the energy of (tuned - base) at the frequencies of the scale's pixel period (the grid a pixel-shuffle
    upsampler draws), and the prior (calibrated) of base and tuned on the crop."""
    from benchmarks.common import dev_files
    from iqa_map.core import priors, sr
    from iqa_map.core.imageio import load_image
    from iqa_map.core.priors.base import comparable_score

    results = json.loads(Path(args.out).read_text())
    prior = priors.load(args.prior)
    files = dev_files(limit)
    for key in results["rows"]:
        base_name, row = key.split("/")
        tuned_path = Path(args.save_models) / f"{base_name}_{row}.safetensors"
        if row == "base" or not tuned_path.is_file():
            continue
        path = DATA / "weights" / "sr" / next(p.name for p in (DATA / "weights" / "sr").iterdir()
                                               if p.stem == base_name)
        base, tuned = sr.load_upscaler(path), sr.load_upscaler(tuned_path)
        s_ = base.scale
        shares, q0, q1 = [], [], []
        for f in files:
            hr = load_image(f)
            h, w = hr.shape[-2:]
            y, x = (h - size) // 2 // s_ * s_, (w - size) // 2 // s_ * s_
            lr = sr.downscale(hr[..., y:y + size, x:x + size], s_)
            a, b = sr.upscale(base, lr, tile=0), sr.upscale(tuned, lr, tile=0)
            spec = torch.fft.fft2((b - a)[0].mean(0)).abs().pow(2)
            dc = spec[0, 0]
            shares.append(float((spec[::size // s_, ::size // s_].sum() - dc) / (spec.sum() - dc).clamp_min(1e-20)))
            q0.append(float(comparable_score(prior, a)))
            q1.append(float(comparable_score(prior, b)))
        better = sum(t > u for t, u in zip(q1, q0))
        print(f"{key}: {100 * sum(shares) / len(shares):.0f} % of the change at the {s_}-pixel period; "
              f"{args.prior} on {size}-pixel crops {sum(q0) / len(q0):.1f} -> {sum(q1) / len(q1):.1f} "
              f"(better on {better} of {len(files)})")


def table(results: dict, prior_name: str) -> str:
    """The README table: means over the dev photos; '% better' against the same base's ``base`` row."""
    from iqa_map.core.priors import load

    lower = {}
    lines = []
    rows = results.get("rows", {})
    names = [k for k in next(iter(rows.values()))["per_image"][0] if k not in ("image", "psnr_y", "ssim_y")]
    for n in names:
        lower[n] = load(n).lower_better
    head = ["model", "PSNR-Y", "SSIM-Y"] + [f"{n}{' (opt.)' if n == prior_name else ''} / % better" for n in names] \
        + ["LoRA / base size", "train s"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for key, r in rows.items():
        base_key = key.split("/")[0] + "/base"
        ref = rows.get(base_key)
        per = r["per_image"]
        mean = lambda k: sum(p[k] for p in per) / len(per)  # noqa: E731
        cells = [key, f"{mean('psnr_y'):.2f}", f"{mean('ssim_y'):.4f}"]
        for n in names:
            if ref is None or key == base_key:
                cells.append(f"{mean(n):.3f}")
                continue
            better = sum((p[n] < q[n]) if lower[n] else (p[n] > q[n]) for p, q in zip(per, ref["per_image"]))
            cells.append(f"{mean(n):.3f} / {100 * better / len(per):.0f} %")
        size = f"{r['lora_bytes'] / r['base_bytes'] * 100:.1f} %" if r.get("lora_bytes") else "-"
        cells += [size, f"{r['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
