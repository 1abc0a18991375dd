"""IQA-augmented super-resolution: NR-IQA-selected targets and IQA-regularised LoRA fine-tuning of any
upscaler spandrel (and so ComfyUI's Load Upscale Model) reads.

    from iqa_map.core import sr, priors
    base = sr.load_upscaler("swift_srgan_x4.pth")
    samples = sr.load_samples("hr_photos/")
    sampler = sr.PairSampler(samples, base.scale, crop=64, batch=4, seed=0)
    res = sr.finetune(base, sampler, priors.load("niqe"), sr.SRSettings(steps=150))  # the guard's defaults
    sr.save_upscaler(res.merged_state_dict(), "tuned_x4.safetensors", res.record)
"""
from .data import DEGRADATIONS, SELECTIONS, PairSampler, Sample, downscale, load_lr, load_samples, target_probabilities
from .export import apply_lora, read_metadata, save_lora, save_upscaler
from .lora import TARGET_KINDS, LoraSpec, add_lora, lora_state_dict, merged_state_dict, target_layers
from .pipeline import FinetuneOutput, finetune_upscaler, output_paths
from .model import UpscalerError, describe, load_upscaler, state_sha256, upscale
from .guard import JudgeGuard, balanced_gradient, flat_texture, grid_share, periodic_energy
from .settings import TRAIN_MODES, SRSettings
from ..runtime import Interrupted
from .train import SRResult, finetune

__all__ = ["DEGRADATIONS", "FinetuneOutput", "Interrupted", "JudgeGuard", "LoraSpec", "PairSampler", "SELECTIONS",
           "SRResult", "SRSettings", "Sample", "TARGET_KINDS", "TRAIN_MODES", "UpscalerError", "add_lora",
           "apply_lora", "balanced_gradient", "describe", "downscale", "finetune",
           "finetune_upscaler", "flat_texture", "grid_share", "load_lr", "load_samples", "load_upscaler",
           "lora_state_dict", "merged_state_dict", "output_paths", "periodic_energy", "read_metadata",
           "save_lora", "save_upscaler", "state_sha256", "target_layers", "target_probabilities", "upscale"]
