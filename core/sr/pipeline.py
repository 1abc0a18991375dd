"""One call from files to files: fine-tune an upscaler on a folder of HR photos and write the results.

The command line (``iqa-map sr-finetune``) is argument parsing over :func:`finetune_upscaler`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import PairSampler, load_samples, load_lr
from .export import MODEL_SUFFIXES, save_lora, save_upscaler
from ..io.files import sha256_file
from .model import describe, load_upscaler, upscale
from .train import SRResult, SRSettings, finetune


@dataclass
class FinetuneOutput:
    model_path: Path
    lora_path: Path | None
    checkpoint: Path
    result: SRResult
    metadata: dict


def output_paths(out) -> tuple[Path, Path, Path]:
    """(model, LoRA, checkpoint) for ``-o OUT``: ``OUT`` itself, ``<stem>_lora.safetensors`` and
    ``<OUT>.ckpt`` beside it."""
    out = Path(out)
    if out.suffix not in MODEL_SUFFIXES:
        raise ValueError(f"the output model must end in {' or '.join(MODEL_SUFFIXES)} (the formats spandrel and "
                         f"ComfyUI's Load Upscale Model read); got {out.name}")
    return out, out.with_name(out.stem + "_lora.safetensors"), out.with_name(out.name + ".ckpt")


def finetune_upscaler(base_path, hr_dir, out, prior=None, settings: SRSettings | None = None, *,
                      candidates_dir=None, generate=(), lr_dir=None, resume: bool = False, force: bool = False,
                      callback=None, device=None, prior_spec: str | None = None, log=print) -> FinetuneOutput:
    """Fine-tune the upscaler file ``base_path`` on the photos of ``hr_dir`` (or LR/HR pairs with ``lr_dir``)
    and write the merged model to ``out``, the LoRA beside it; a checkpoint ``<out>.ckpt`` is kept until the
    run ends (``resume`` continues it exactly). Existing outputs are never overwritten unless ``force``."""
    s = settings or SRSettings()
    s.validate()
    model_path, lora_path, ckpt = output_paths(out)
    if not force:
        taken = [p for p in (model_path, lora_path) if p.exists()]
        if taken:
            raise FileExistsError(f"{taken[0]} exists; choose another output or use --force to replace it")
    if Path(base_path).resolve() == model_path.resolve():
        raise ValueError("the output would replace the base model; choose another output file")
    if ckpt.exists() and not resume:
        raise FileExistsError(f"{ckpt} holds an unfinished run: add --resume to continue it, or delete it to "
                              "start again")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    base = load_upscaler(base_path, device=device)
    base_hash = sha256_file(base_path)
    samples = load_samples(hr_dir, candidates_dir=candidates_dir, generate=generate)
    if lr_dir is not None:
        load_lr(samples, lr_dir, hr_dir, base.scale)
    weight_prior = None
    if s.quality_weight_prior:
        from ..priors import load as load_prior
        weight_prior = load_prior(s.quality_weight_prior, device=device)
    sampler = PairSampler(samples, base.scale, s.crop, s.batch, selection=s.selection, temperature=s.temperature,
                          degradation=s.degradation, prior=prior, seed=s.seed, weight_prior=weight_prior,
                          weight_floor=s.quality_floor, holdout=s.holdout if s.judge_names() else 0)
    if sampler.skipped:
        log(f"note: {len(sampler.skipped)} photo(s) smaller than one {s.crop * base.scale}-pixel crop are not used: "
            f"{', '.join(sampler.skipped[:5])}{' ...' if len(sampler.skipped) > 5 else ''}")
    log(f"fine-tuning {describe(base)} ({'LoRA rank %d' % s.rank if s.train == 'lora' else 'all weights'}) on "
        f"{len(sampler.samples)} photo(s), {s.steps} steps of {s.batch} x {s.crop}-pixel LR crops"
        + (f", prior {prior.name} ({_iqa(s)})" if prior is not None and s.iqa_on else "")
        + (f"; {len(sampler.held)} photo(s) held out for the judges" if sampler.held else ""))
    res = finetune(base, sampler, prior, s, checkpoint=ckpt, resume=resume, callback=callback, device=device,
                   base_hash=base_hash)
    meta = {**res.record, "tool": "iqa-map sr-finetune", "base_file": Path(base_path).name, "base_sha256": base_hash,
            "data": str(hr_dir), "prior_spec": prior_spec or getattr(prior, "name", None),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    merged = res.merged_state_dict()
    save_upscaler(merged, model_path, meta, overwrite=force)
    check = load_upscaler(model_path)
    if type(check.architecture) is not type(base.architecture) or check.scale != base.scale:
        raise RuntimeError(f"the written model loads as {describe(check)}, not {describe(base)}")
    lp = None
    if res.lora is not None:
        lp = save_lora(res.lora_state_dict(), s.lora_spec(), lora_path,
                       meta, overwrite=force)
    ckpt.unlink(missing_ok=True)
    return FinetuneOutput(model_path, lp, ckpt, res, meta)


def _iqa(s: SRSettings) -> str:
    return f"balanced, ratio {s.iqa_ratio:g}" if s.balance else f"weight {s.iqa_weight:g}"


__all__ = ["FinetuneOutput", "finetune_upscaler", "output_paths", "upscale"]
