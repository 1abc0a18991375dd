"""Stable Diffusion pipelines with random weights: the SD path built and measured without any checkpoint.

``sd15`` is Stable Diffusion 1.5's exact architecture (UNet 860M parameters,
VAE 84M, CLIP ViT-L text encoder 123M); ``tiny`` keeps the same layout at toy
width for CPU tests. Random weights give the real cost (time, memory,
evaluations) and exercise every code path; they say nothing about image quality.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

SCALES = ("sd15", "tiny")


def sd_scheduler(prediction_type: str = "epsilon"):
    """The scheduler config SD 1.5 checkpoints ship (PNDM, scaled-linear betas, leading spacing)."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True,
                         steps_offset=1, prediction_type=prediction_type)


def sd_unet(scale: str = "sd15", seed: int = 0, cross_attention_dim: int | None = None):
    """A text-conditioned latent UNet of SD 1.x's layout (4 channels, cross-attention)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    if scale == "sd15":
        return UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=cross_attention_dim or 768, attention_head_dim=8,
        ).eval().requires_grad_(False)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim or 32, attention_head_dim=4,
    ).eval().requires_grad_(False)


def sd_vae(scale: str = "sd15", seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    if scale == "sd15":
        return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                             down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                             norm_num_groups=32, layers_per_block=2, sample_size=512, scaling_factor=0.18215)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16, 16),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         norm_num_groups=8, layers_per_block=1)


def save_random_pipeline(folder, scale: str = "tiny") -> Path:
    """A random-weight Stable Diffusion pipeline folder (UNet, VAE, CLIP text encoder, tokenizer); returns it.

    The tokenizer has a six-token vocabulary (enough for the empty prompt the
    product encodes); everything else has the architecture of ``scale``.
    """
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    full = scale == "sd15"
    length = 77 if full else 8
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=length)
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=6, hidden_size=768 if full else 32, intermediate_size=3072 if full else 37,
        num_hidden_layers=12 if full else 1, num_attention_heads=12 if full else 4,
        max_position_embeddings=length, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipe = StableDiffusionPipeline(vae=sd_vae(scale), text_encoder=text, tokenizer=tok, unet=sd_unet(scale),
                                   scheduler=sd_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder / "pipe")
    return folder / "pipe"
