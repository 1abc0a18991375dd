"""IQA-regularised fine-tuning of a ComfyUI upscaler (UPSCALE_MODEL in, UPSCALE_MODEL out)."""
from __future__ import annotations

import json
import logging
import os

import torch

from ..core.sr import SRSettings
from ..core.sr.settings import NODE
from . import memory
from .schema import Input, Node, Output, Schema
from .settings_inputs import settings_from_inputs, settings_inputs
from .types import CATEGORY, IQA_PRIOR, to_bchw

log = logging.getLogger("iqa_map")
# The settings on the node, generated from SRSettings' metadata; saved workflows store widgets by position, so the
# first ones keep the places they had before the guard's settings (appended after save_name).
_REQUIRED, _OPTIONAL = settings_inputs(NODE, required=("steps", "rank", "iqa_weight", "selection", "seed"),
                                       optional=("crop", "batch", "learning_rate"), cls=SRSettings)


class IQAFineTuneUpscaler(Node):
    SCHEMA = Schema(
        node_id="IQAMAP_IQAFineTuneUpscaler", display_name="IQA Fine-tune Upscaler", category=CATEGORY,
        description=("Fine-tunes an upscaler (from Load Upscale Model) on your HR photos with L1 minus an NR-IQA "
                     "prior's score: LoRA adapters train (which limits metric hacking) and are merged, so the "
                     "output is the same architecture and scale, ready for Upscale Image (using Model). Inputs are "
                     "the photos downscaled by the model's scale; the target is the photo itself or, with a "
                     "selection other than 'orig', one of its candidates (sharpened versions and/or the "
                     "'candidates' batch) chosen by the prior. The base model is never changed. Optionally saved "
                     "into models/upscale_models. Costs PSNR for perceived sharpness: compare with IQA Score, and "
                     "look at the output. A hack guard is on by default: the IQA gradient balanced against L1's, a "
                     "penalty on a grid at the scale's period, and held-out judges that stop the run and keep the "
                     "best step (docs/sr.md)."),
        inputs=[
            Input("upscale_model", "UPSCALE_MODEL", "The base upscaler (Load Upscale Model)."),
            Input("images", "IMAGE", "HR training photos (a batch; at least one LR crop times the scale a side). "
                  "Load Image, or a batch of them."),
            Input("prior", IQA_PRIOR, "The Q in L1 - weight x Q (Load IQA Prior or Fuse Priors)."),
            *_REQUIRED,
            Input("candidates", "IMAGE", "Candidate targets: renderings of the photos (same sizes), in the photos' "
                  "order, repeated (candidate i belongs to photo i mod N).", optional=True),
            Input("sharpened_candidates", "BOOLEAN", "Add the photos unsharp-masked at three strengths as "
                  "candidates (used when selection is not orig).", optional=True, default=True),
            *_OPTIONAL[:3],
            Input("save_name", "STRING", "If set, save the tuned model as models/upscale_models/<name>.safetensors "
                  "(and its LoRA beside it); never overwrites.", optional=True, default=""),
            *_OPTIONAL[3:],
        ],
        outputs=[Output("UPSCALE_MODEL", "upscale_model", "The fine-tuned upscaler (LoRA merged): the base's "
                        "architecture and scale."),
                 Output("STRING", "report", "JSON: settings, losses and Q per step, where it was saved.")],
        is_output_node=True,
    )

    @classmethod
    def execute(cls, upscale_model, images, prior, candidates=None, sharpened_candidates=True, save_name="",
                **settings):
        from ..core import sr
        from ..core.sr.data import Sample, add_sharpened
        from . import comfy

        try:
            s = settings_from_inputs(NODE, settings, cls=SRSettings)
        except ValueError as e:
            raise ValueError(f"IQA Fine-tune Upscaler: {e}") from None
        selection, steps = s.selection, s.steps
        save_to = _save_path(save_name.strip()) if save_name.strip() else None
        with torch.inference_mode(False):
            base = sr.load_upscaler(_usable_descriptor(upscale_model))
            photos = to_bchw(images).clone().cpu()
            samples = []
            for i, hr in enumerate(photos):
                cands, labels = [hr], ["orig"]
                if candidates is not None:
                    c = to_bchw(candidates).clone().cpu()
                    if c.shape[-2:] != hr.shape[-2:]:
                        raise ValueError(f"IQA Fine-tune Upscaler: candidates are {c.shape[-1]}x{c.shape[-2]} but "
                                         f"the photos {hr.shape[-1]}x{hr.shape[-2]}; candidates must be pixel-"
                                         "aligned renderings of the photos")
                    for j in range(i, len(c), len(photos)):
                        cands.append(c[j])
                        labels.append(f"candidate{j}")
                if sharpened_candidates and selection != "orig":
                    add_sharpened(hr, cands, labels)
                samples.append(Sample(f"image{i}", cands, labels))
            try:
                sampler = sr.PairSampler(samples, base.scale, s.crop, s.batch, selection=selection,
                                         temperature=s.temperature, degradation=s.degradation, prior=prior,
                                         seed=s.seed, holdout=s.holdout if s.judge_names() else 0)
            except ValueError as e:
                raise ValueError(f"IQA Fine-tune Upscaler: {e}") from None
            bar = comfy.Progress(steps, "fine-tune upscaler")

            def progress(info):
                log.info("IQA-MAP fine-tune upscaler: step %d/%d l1 %.4f q %s", info["step"], steps, info["l1"],
                         "-" if info["q"] is None else f"{info['q']:.2f}")
                if info.get("eval"):
                    e = info["eval"]
                    log.info("IQA-MAP fine-tune upscaler: held-out at step %d: judges %.2f, grid share %.3f, PSNR-Y "
                             "%+.2f dB%s", e["step"], e["judge"], e["grid"], -e["psnr_drop"],
                             "" if e["admissible"] else " (not kept)")
                if bar.bar is not None:
                    every = info["step"] % 10 == 0 or info["step"] == steps
                    bar.bar.update_absolute(info["step"], steps, comfy.preview(info["preview"] if every else None))
                bar.check_interrupt()

            # The network under training is ComfyUI's to know about: room made for it first (the prior kept),
            # the cache emptied after, so the models ComfyUI unloaded for it can come back.
            dev = comfy.default_device()
            memory.ready(prior)
            memory.free_for(memory.training_bytes(base.model, s.batch, s.crop * base.scale), dev, keep=[prior])
            try:
                res = sr.finetune(base, sampler, prior, s, callback=progress, device=dev,
                                  base_hash=sr.state_sha256(base.model.state_dict()))
            finally:
                memory.empty_cache()
            merged = res.merged_state_dict()
            tuned = sr.load_upscaler(merged)
            info = {"record": res.record, "history": res.history}
            if save_to:
                info["saved"] = _save(save_to, merged, res, s)
        return (tuned, json.dumps(info, indent=1, default=str))


def _usable_descriptor(desc):
    """ComfyUI loads the model under inference mode: a descriptor over plain tensors (a copy; the original
    stays as ComfyUI cached it)."""
    from ..core import sr
    if not (hasattr(desc, "model") and hasattr(desc, "scale")):
        raise ValueError("IQA Fine-tune Upscaler: 'upscale_model' must come from Load Upscale Model")
    state = {k: v.detach().clone() for k, v in desc.model.state_dict().items()}
    try:
        return sr.load_upscaler(state)
    except sr.UpscalerError as e:
        raise ValueError(f"IQA Fine-tune Upscaler: {e}") from None


def _save_path(name: str) -> str:
    """``models/upscale_models/<name>.safetensors``; checked before training so a bad name costs nothing."""
    try:
        import folder_paths
        folder = folder_paths.get_folder_paths("upscale_models")[0]
    except (ImportError, KeyError, IndexError):
        raise ValueError("IQA Fine-tune Upscaler: save_name needs ComfyUI's models/upscale_models folder") from None
    if os.sep in name or (os.altsep and os.altsep in name) or name.startswith("."):
        raise ValueError(f"IQA Fine-tune Upscaler: save_name {name!r} must be a plain file name")
    stem = name[:-len(".safetensors")] if name.endswith(".safetensors") else name
    path = os.path.join(folder, stem + ".safetensors")
    for p in (path, path[:-len(".safetensors")] + "_lora.safetensors"):
        if os.path.exists(p):
            raise ValueError(f"IQA Fine-tune Upscaler: {p} exists; choose another save_name")
    return path


def _save(path: str, merged: dict, res, settings) -> dict:
    from ..core import sr

    sr.save_upscaler(merged, path, res.record)
    lora = None
    if res.lora is not None:
        lora = str(sr.save_lora(res.lora_state_dict(), settings.lora_spec(),
                                path[:-len(".safetensors")] + "_lora.safetensors", res.record))
    return {"model": path, "lora": lora}
