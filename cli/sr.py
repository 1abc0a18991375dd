"""``iqa-map sr-finetune`` and ``upscale``: an upscaler tuned with an NR-IQA prior under a hack guard, and photos
upscaled with one (tiled, resumable, here or on Ray)."""
from __future__ import annotations

import sys
from pathlib import Path

from . import options
from .common import (CliError, add_common, add_prior, add_ray_options, build_prior, inputs, output_dir, ray_kwargs,
                     readable, write_report)


def add_parsers(sub) -> None:
    from ..core.sr.settings import SRSettings, UpscaleSettings

    ft = sub.add_parser("sr-finetune", help="fine-tune an upscaler (any model ComfyUI's Load Upscale Model reads) "
                        "with LoRA, an NR-IQA prior and optionally IQA-selected targets, under a hack guard",
                        description="Fine-tune an upscaler with L1 - lQ Q(SR): LoRA adapters train and are merged "
                        "into a model of the same architecture and scale. The hack guard is on by default: the IQA "
                        "gradient is balanced against the fidelity gradient, a grid at the scale's period is "
                        "penalised, and held-out judges decide when to stop and which step to keep (docs/sr.md).")
    ft.add_argument("--model", required=True, metavar="FILE",
                    help="the base upscaler file (.pth, .safetensors, ...)")
    ft.add_argument("-o", "--output", required=True, metavar="FILE", help="the tuned model (.safetensors or .pth); "
                    "the LoRA is written beside it as <stem>_lora.safetensors, the checkpoint as <output>.ckpt")
    ft.add_argument("--data", required=True, metavar="DIR",
                    help="folder of HR photos (LR inputs are made by the model's scale)")
    ft.add_argument("--low-res-data", "--lr-data", dest="lr_data", default=None, metavar="DIR",
                    help="low-resolution photos of the same names, used as the inputs instead of bicubic "
                         "downscales (--lr-data is the old name)")
    add_prior(ft, "the Q in L1 - lQ Q; repeat to fuse several (none: L1 only)", fusion=True)
    ft.add_argument("--candidates", default=None, metavar="DIR",
                    help="folder of candidate targets <stem>_*.png (also looked for beside each photo)")
    ft.add_argument("--generate", action="append", choices=["sharpen"], default=[],
                    help="add generated candidates: sharpen = the photo unsharp-masked at three strengths")
    ft.add_argument("--resume", action="store_true", help="continue the run in <output>.ckpt exactly")
    ft.add_argument("--force", action="store_true", help="replace existing output files")
    ft.add_argument("--report", default=None, metavar="FILE", help="write a JSON report (settings, losses and Q "
                    "per step, the held-out curve of the hack guard)")
    options.add_settings(ft, SRSettings)
    add_common(ft)
    ft.set_defaults(func=cmd_sr_finetune)

    up = sub.add_parser("upscale", help="upscale photos with a model file (tiled for large inputs)",
                        description="Upscale photos with an upscaler file (any architecture spandrel reads, "
                        "optionally with an IQA-MAP LoRA applied) into <stem>_x<scale>.png; outputs that exist are "
                        "skipped, so a stopped batch resumes.")
    up.add_argument("inputs", nargs="+", help="image files or folders")
    up.add_argument("--model", required=True, metavar="FILE", help="upscaler file (any spandrel architecture)")
    up.add_argument("--lora", default=None, metavar="FILE", help="an IQA-MAP upscaler LoRA to apply to --model first")
    up.add_argument("-o", "--output", required=True, help="output folder (<stem>_x<scale>.png)")
    options.add_settings(up, UpscaleSettings)
    add_prior(up, "score the results with this prior (into the printed lines and --report); repeat to fuse")
    up.add_argument("--report", default=None, metavar="FILE", help="write the JSON report here")
    up.add_argument("--force", action="store_true", help="redo images whose output exists")
    add_ray_options(up)
    add_common(up)
    up.set_defaults(func=cmd_upscale)


def cmd_sr_finetune(args) -> int:
    from tqdm import tqdm

    from ..core import sr
    from ..core.io.files import write_json

    settings = options.sr_settings(args, bool(args.prior))
    if settings.selection in ("sma", "smp", "amo") and not args.prior:
        raise CliError(f"--select {settings.selection} scores the candidates: give --prior")
    if settings.selection != "orig" and not (args.candidates or args.generate):
        print(f"note: --select {settings.selection} without --candidates or --generate: only the candidates beside "
              "each photo (<stem>_*.png) are used", file=sys.stderr)
    sr.output_paths(args.output)  # a bad -o is known before anything slow
    prior = build_prior(args.prior, args.weights_dir, args.device, args.fusion) if args.prior else None
    bar = None

    def progress(info):
        nonlocal bar
        bar = bar or tqdm(total=settings.steps, initial=info["step"] - 1, desc="sr-finetune", unit="step")
        bar.n = info["step"]
        bar.set_postfix(l1=f"{info['l1']:.4f}", **({"q": f"{info['q']:.2f}"} if info["q"] is not None else {}))
        e = info.get("eval")
        if e:  # the held-out judges (the hack guard): above the bar, not across it
            tqdm.write(f"held-out at step {e['step']}: judges {e['judge']:.2f}, grid share {e['grid']:.3f}, "
                       f"PSNR-Y {-e['psnr_drop']:+.2f} dB, flat texture {e['texture']:.2f} (HR {e['texture_hr']:.2f})"
                       + ("" if e["admissible"] else " - not kept"))

    try:
        res = sr.finetune_upscaler(args.model, args.data, args.output, prior, settings,
                                   candidates_dir=args.candidates, generate=args.generate or (), lr_dir=args.lr_data,
                                   resume=args.resume, force=args.force, callback=progress, device=args.device,
                                   prior_spec=",".join(args.prior) or None,
                                   log=lambda m: print(m, file=sys.stderr))
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(f"note: the checkpoint {sr.output_paths(args.output)[2]} holds the finished steps; run the same "
              "command with --resume to continue", file=sys.stderr)
        raise
    if bar is not None:
        bar.close()
    h = res.result.history
    qs = [x["q"] for x in h if x["q"] is not None]
    print(f"wrote {res.model_path}" + (f" and {res.lora_path}" if res.lora_path else "")
          + (f"; Q on the training crops {qs[0]:.2f} -> {sum(qs[-10:]) / len(qs[-10:]):.2f} (last 10 steps)"
             if qs else ""))
    g = res.result.record.get("guard")
    if g:
        stop = f", stopped at step {g['stopped']['step']} ({g['stopped']['reason']})" if g["stopped"] else ""
        print(f"hack guard: kept step {g['best_step']} by the held-out judges{stop}"
              + ("; the base was kept: no step improved them without a grid or a PSNR cost over the limits"
                 if g["best_step"] == 0 else ""))
    if args.report:
        write_json(args.report, {"model": str(res.model_path), "lora": str(res.lora_path or ""),
                                 "metadata": res.metadata, "history": h})
    return 0


def cmd_upscale(args) -> int:
    from tqdm import tqdm

    from ..core import sr
    from ..core.map import batch
    from ..core.sr.settings import UpscaleSettings
    from .workers import UpscaleWorker

    s = options.settings(args, UpscaleSettings)
    model = sr.load_upscaler(args.model, device=args.device)
    if args.lora:
        model = sr.apply_lora(model, args.lora)
    files = inputs(args.inputs)
    out = output_dir(args.output)
    name = lambda f: out / f"{f.stem}_x{model.scale}.png"  # noqa: E731
    todo = [f for f in files if args.force or not name(f).exists()]
    if len(todo) < len(files):
        print(f"skipping {len(files) - len(todo)} image(s) already upscaled in {out} (use --force to redo)")
    if not todo:
        return 0
    valid, failed = readable(todo)
    kwargs = dict(model=str(args.model), lora=args.lora, prior=args.prior, weights_dir=args.weights_dir,
                  device=args.device, tile=s.tile, overlap=s.overlap, out=str(out),
                  protect=[str(f) for f in files], threads=args.threads_per_worker if args.ray else None)
    reports = {}
    local = (lambda: UpscaleWorker(**kwargs, loaded=model)) if not args.ray else None  # noqa: E731
    for f, entry in tqdm(batch.run(UpscaleWorker, kwargs, [str(f) for f in valid], local_worker=local,
                                   **ray_kwargs(args)), desc="upscale", unit="img", total=len(valid),
                         disable=len(valid) < 2):
        f = Path(f)
        reports[str(f)] = entry
        score = "".join(f", {k} {v:.2f}" for k, v in entry.get("scores", {}).items())
        tqdm.write(f"{f.name}: {entry['input_size'][0]}x{entry['input_size'][1]} -> {entry['size'][0]}x"
                   f"{entry['size'][1]}{score}{entry.get('scale_note', '')} -> {entry['output']}")
    if args.report:
        write_report(args.report, reports, files)
    return 0 if not failed else 1
