"""IQA-regularised SR fine-tuning with its hack guard against its controls (issues 24 and 39).

    python -m benchmarks.bench_sr [--base dctlsa_x4 ...] [--rows base,guard,...] [--steps 150]
                                  [--train-limit N] [--dev-limit N] [--out out/bench/sr39.json]

Bases are the real pretrained upscalers in ../shared/data/weights/sr/. Training: random
LR crops (bicubic by the scale) of ../shared/data/images/train (the guard holds 8 of them
out for its judges); evaluation: every dev photo (cropped to a multiple of the scale),
bicubic /scale input, the SR output against the HR photo. Every trained row uses
``SRSettings()``'s defaults (one setting for every base) except what the row changes:

* ``base``: the pretrained model;
* ``guard``: the product's default (LoRA, balanced IQA term, periodic penalty, held-out judges with
  early stop and the best step kept);
* ``no_judge`` / ``no_grid`` / ``no_balance``: the default without one guard part (``no_balance``:
  the raw ``-lQ Q`` with lQ = 0.0005, the previous default);
* ``trust``: the default plus the trust region to the base's output (trust_weight 0.01);
* ``unguarded``: no guard part at all (the previous default, issue 24's ``lora_iqa``);
* ``l1``: LoRA, L1 only (the control);
* ``all_guard``: every weight trains, guard on (does LoRA limit hacking?).

Columns: PSNR-Y (BT.601 Y, ``scale`` border pixels cropped) and SSIM-Y against the HR photo, the
optimised prior's native score, held-out NR judges (native), the share of dev photos on which each
improved over the base, the grid share of the change against the base (energy of its mean
scale x scale tile over its total, ``core.sr.grid_share``), the flat-region texture of the output
and the HR photo (``core.sr.flat_texture``, grey levels), the step the guard kept and training time.
Each row is written to the JSON file as it finishes; a rerun skips the rows already there.
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
SCNN = DATA / "weights" / "dbcnn_scnn_synthetic.safetensors"
#: name: SRSettings overrides of the default (None = no training)
ROWS = {
    "base": None,
    "guard": {},
    "no_judge": {"judges": ""},
    "no_grid": {"grid_weight": 0.0},
    "no_balance": {"balance": False},
    "trust": {"trust_weight": 0.01},
    "unguarded": {"judges": "", "grid_weight": 0.0, "balance": False},
    "l1": {"iqa_ratio": 0.0, "balance": True},
    "all_guard": {"train": "all"},
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
def evaluate(model, files, metrics: dict, scale: int, base_outs: dict, device=None) -> list[dict]:
    """Per dev photo: PSNR/SSIM-Y, each metric (native), the grid share of the change against the base output
    (``base_outs``: image name -> the base's output, filled by the base row) and the flat-region texture."""
    from iqa_map.core.io.imageio import load_image
    from iqa_map.core.sr import downscale, flat_texture, grid_share, upscale

    rows = []
    for f in files:
        hr = load_image(f).to(device or "cpu")
        h, w = (hr.shape[-2] // scale) * scale, (hr.shape[-1] // scale) * scale
        hr = hr[..., :h, :w]
        out = upscale(model, downscale(hr, scale), tile=0)
        base_out = base_outs.setdefault(f.name, out)
        p, s = psnr_ssim_y(out, hr, scale)
        tex = flat_texture({"out": out}, hr)
        rows.append({"image": f.name, "psnr_y": p, "ssim_y": s,
                     **{n: float(m.native(out)[0]) for n, m in metrics.items()},
                     "grid": float(grid_share(out - base_out, scale)[0]) if out is not base_out else 0.0,
                     "texture": float(tex["out"][0]), "texture_hr": float(tex["hr"][0])})
    return rows


def load_metric(name: str, device=None):
    from iqa_map.core import priors

    return priors.load_local(SCNN, arch="scnn", device=device) if name == "scnn" else priors.load(name, device=device)


def base_path(base_name: str) -> Path:
    folder = DATA / "weights" / "sr"
    found = [p for p in folder.iterdir() if p.stem == base_name] if folder.is_dir() else []
    if not found:
        sys.exit(f"no upscaler {base_name} in {folder}")
    return found[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", action="append", default=[], help="file stem in weights/sr (default: all four)")
    ap.add_argument("--rows", default="base,guard")
    ap.add_argument("--prior", default="niqe", help="the optimised prior")
    ap.add_argument("--held-out", default="cnniqa-builtin,scnn,brisque,piqe", help="NR metrics scored on the dev "
                    "photos besides the prior (scnn: S-CNN's P(clean), from ../shared/data/weights)")
    ap.add_argument("--steps", type=int, default=None, help="default: SRSettings'")
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--dev-limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None, help="default: cuda if available")
    ap.add_argument("--out", default="out/bench/sr39.json")
    ap.add_argument("--save-models", default="out/bench/sr39_models")
    ap.add_argument("--figure", default=None, metavar="JPG", help="only draw 200 %% crops (base, tuned, HR) of "
                    "the saved models on dev photos into this file, bicubic and degraded (blur/noise/JPEG) inputs")
    ap.add_argument("--figure-rows", default="base,guard", help="rows in the figure")
    args = ap.parse_args(argv)
    if args.figure:
        return figure(args)

    from benchmarks.common import dev_files
    from iqa_map.core import priors, sr
    from iqa_map.core.io.files import sha256_file

    if args.threads:
        torch.set_num_threads(args.threads)
    bases = args.base or ["dctlsa_x4", "swift_srgan_x4", "dctlsa_x2", "swift_srgan_x2"]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"unknown rows {unknown}; choose from {list(ROWS)}")
    files = dev_files(args.dev_limit)
    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    prior = priors.load(args.prior, device=dev)
    metrics = {args.prior: prior, **{n: load_metric(n, dev) for n in args.held_out.split(",") if n}}
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    local = ("rows", "base", "out", "threads", "save_models", "figure", "figure_rows", "device")  # where, not what
    settings = {k: v for k, v in vars(args).items() if k not in local}
    if results and results.get("settings") != settings:
        sys.exit(f"{out} holds a run with other settings ({results.get('settings')}); give another --out")
    results["settings"] = settings
    samples = None
    for base_name in bases:
        path = base_path(base_name)
        base = sr.load_upscaler(path, device=dev)
        base_outs: dict = {}
        if "base" not in rows:  # the grid share needs the base's outputs
            evaluate(base, files, {}, base.scale, base_outs, dev)
        for row in rows:
            key = f"{base_name}/{row}"
            if key in results.get("rows", {}):
                print(f"{key}: done already", flush=True)
                if row == "base":
                    evaluate(base, files, {}, base.scale, base_outs, dev)
                continue
            over = ROWS[row]
            t0 = time.perf_counter()
            record, model, lora_bytes = {}, base, None
            if over is not None:
                samples = samples or sr.load_samples(DATA / "images" / "train", limit=args.train_limit)
                s = sr.SRSettings(**{**({"steps": args.steps} if args.steps else {}), **over})
                sampler = sr.PairSampler(samples, base.scale, s.crop, s.batch, selection=s.selection,
                                         temperature=s.temperature, prior=prior, seed=s.seed,
                                         holdout=s.holdout if s.judge_names() else 0)

                def progress(info, key=key):
                    if info["eval"]:
                        e = info["eval"]
                        print(f"  {key} held-out at step {e['step']}: judge {e['judge']:.2f} grid {e['grid']:.3f} "
                              f"psnr drop {e['psnr_drop']:.2f} texture {e['texture']:.2f} "
                              f"(hr {e['texture_hr']:.2f}){'' if e['admissible'] else ' not kept'}", flush=True)
                    if info["step"] % 25 == 0 or info["step"] == info["steps"]:
                        print(f"  {key} step {info['step']}/{info['steps']} l1 {info['l1']:.4f} "
                              f"q {info['q'] if info['q'] is None else round(info['q'], 2)}", flush=True)

                judges = {n: (prior if n == "prior" else load_metric(n, dev)) for n in s.judge_names()}
                res = sr.finetune(base, sampler, prior, s, callback=progress, base_hash=sha256_file(path),
                                  judges={(args.prior if n == "prior" else n): j for n, j in judges.items()})
                record = res.record
                model = sr.load_upscaler(res.merged_state_dict(), device=dev)
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
            per = evaluate(model, files, metrics, base.scale, base_outs, dev)
            results.setdefault("rows", {})[key] = {"per_image": per, "train_seconds": train_s if over is not None
                                                   else 0.0, "record": record, "lora_bytes": lora_bytes,
                                                   "base_bytes": path.stat().st_size}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1, default=str))
            print(f"{key}: trained {train_s:.0f} s, evaluated", flush=True)
    print(table(results, prior_name=args.prior))


def degrade(lr: torch.Tensor) -> torch.Tensor:
    """The figure's "real photo" input: a mild blur, noise and JPEG on the LR (the mix's middle values)."""
    from iqa_map.core.priors.distortions import gaussian_blur, gaussian_noise, jpeg

    return jpeg(gaussian_noise(gaussian_blur(lr, 0.8), 4.0, seed=0), 75)


@torch.no_grad()
def figure(args, photos=("108005.png", "253027.png", "106024.png"), hr_crop=128, keep=96) -> None:
    """For each base and photo, two lines (bicubic input, degraded input): each of ``--figure-rows`` and the HR
    photo at 200 % (nearest) on a ``keep``-pixel centre crop, labelled with PSNR-Y and the prior's score."""
    import torch.nn.functional as F

    from benchmarks.common import centre_crop
    from iqa_map.core import priors, sr
    from iqa_map.core.io.drawing import contact_sheet
    from iqa_map.core.io.imageio import load_image

    results = json.loads(Path(args.out).read_text())
    prior = priors.load(args.prior)
    rows = [r for r in args.figure_rows.split(",") if r]
    bases = args.base or list(dict.fromkeys(k.split("/")[0] for k in results["rows"]))
    zoom = lambda t: F.interpolate(centre_crop(t, keep), scale_factor=2, mode="nearest")  # noqa: E731
    tiles, labels = [], []
    for base_name in bases:
        models = {row: sr.load_upscaler(base_path(base_name)) if row == "base" else
                  sr.load_upscaler(Path(args.save_models) / f"{base_name}_{row}.safetensors") for row in rows}
        s_ = next(iter(models.values())).scale
        for name in photos:
            hr = centre_crop(load_image(DATA / "images" / "dev" / name), hr_crop)
            for kind, lr in (("bicubic", sr.downscale(hr, s_)), ("degraded", degrade(sr.downscale(hr, s_)))):
                for row, model in models.items():
                    out = sr.upscale(model, lr, tile=0)
                    p, _ = psnr_ssim_y(out, hr, s_)
                    tiles.append(zoom(out))
                    q = float(prior.native(out))
                    labels.append(f"{base_name} {row}, {kind} in\n{p:.2f} dB, {args.prior} {q:.2f}")
                tiles.append(zoom(hr))
                labels.append(f"{name} HR\n{args.prior} {float(prior.native(hr)):.2f}")
    sheet = contact_sheet(tiles, labels, columns=len(rows) + 1)
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.figure, quality=92)
    print(f"wrote {args.figure}")


def table(results: dict, prior_name: str) -> str:
    """The docs table: means over the dev photos; '% better' against the same base's ``base`` row; texture
    'ok %' = share of photos whose flat-region texture is no further from the HR photo's than the base's."""
    from iqa_map.core.priors import load

    rows = results.get("rows", {})
    skip = ("image", "psnr_y", "ssim_y", "grid", "texture", "texture_hr")
    names = [k for k in next(iter(rows.values()))["per_image"][0] if k not in skip]
    lower = {n: (False if n == "scnn" else load(n).lower_better) for n in names}
    head = ["model", "PSNR-Y", "SSIM-Y"] + [f"{n}{' (opt.)' if n == prior_name else ''} / % better" for n in names] \
        + ["grid share", "flat texture (HR) / ok %", "kept step", "LoRA / base", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, r in rows.items():
        base_key = key.split("/")[0] + "/base"
        ref = rows.get(base_key)
        per = r["per_image"]
        mean = lambda k, per=per: sum(p[k] for p in per) / len(per)  # noqa: E731
        cells = [key, f"{mean('psnr_y'):.2f}", f"{mean('ssim_y'):.4f}"]
        for n in names:
            if ref is None or key == base_key:
                cells.append(f"{mean(n):.3f}")
                continue
            better = sum((p[n] < q[n]) if lower[n] else (p[n] > q[n]) for p, q in zip(per, ref["per_image"]))
            cells.append(f"{mean(n):.3f} / {100 * better / len(per):.0f} %")
        tex = f"{mean('texture'):.2f} ({mean('texture_hr'):.2f})"
        if ref is not None and key != base_key:
            ok = sum(abs(p["texture"] - p["texture_hr"]) <= abs(q["texture"] - q["texture_hr"]) + 1e-6
                     for p, q in zip(per, ref["per_image"]))
            tex += f" / {100 * ok / len(per):.0f} %"
        g = r["record"].get("guard") or {}
        kept = f"{g.get('best_step')}" + (f" (stop {g['stopped']['step']})" if g.get("stopped") else "") if g else "-"
        size = f"{r['lora_bytes'] / r['base_bytes'] * 100:.1f} %" if r.get("lora_bytes") else "-"
        cells += [f"{mean('grid'):.3f}" if key != base_key else "-", tex, kept, size, f"{r['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve(results: dict, key: str) -> str:
    """The held-out curve of one row as a markdown table."""
    g = results["rows"][key]["record"].get("guard") or {}
    judges = " | ".join(g["curve"][0]["judges"])
    lines = ["| step | judge (mean) | " + judges + " | grid | PSNR drop | texture | kept? |",
             "|" + "---|" * (6 + len(g["curve"][0]["judges"]))]
    for e in g.get("curve", []):
        lines.append(f"| {e['step']} | {e['judge']:.2f} | " + " | ".join(f"{v:.2f}" for v in e["judges"].values())
                     + f" | {e['grid']:.3f} | {e['psnr_drop']:.2f} | {e['texture']:.2f} | "
                     + ("best" if e["step"] == g["best_step"] else "yes" if e["admissible"] else "no") + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
