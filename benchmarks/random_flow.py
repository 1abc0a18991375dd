"""Flow-matching pipelines (Flux, SD3) with random weights, built offline: the flow path tested without checkpoints.

``tiny`` keeps each family's layout (Flux: double and single blocks, 2x2
latent packing, rotary ids, pooled CLIP and T5 sequence conditioning, guidance
embedding for dev; SD3: joint blocks, two CLIP encoders and T5; a 16-channel
VAE with the family's scaling and shift) at toy width for CPU tests. The
tokenizers are built from a few-token vocabulary (CLIP: vocab and merges
files, as :mod:`benchmarks.random_sd`; T5: a unigram vocabulary list), so
nothing is downloaded. Random weights exercise every code path; they say
nothing about image quality.

``FULL`` holds the real transformers' configs (Flux.1 dev, SD3.5 medium) for
parameter counts on the meta device (:mod:`benchmarks.estimate_dit`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

FAMILIES = ("flux-dev", "flux-schnell", "sd3")

# The transformers' published configs (diffusers' config.json of each model).
FULL = {
    "flux-dev": dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                     num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                     guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
    "sd35-medium": dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                        num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                        pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
                        dual_attention_layers=tuple(range(13)), qk_norm="rms_norm"),
}

# The schedulers the released pipelines ship.
SCHEDULERS = {
    "flux-dev": dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                     max_image_seq_len=4096),
    "flux-schnell": dict(shift=1.0, use_dynamic_shifting=False),
    "sd3": dict(shift=3.0),
}
VAE_SCALE = {"flux": (0.3611, 0.1159), "sd3": (1.5305, 0.0609)}
TEXT = 32  # tiny text width (CLIP hidden, T5 d_model / 2)


def flux_transformer(guidance: bool = True, seed: int = 0, layers: int = 1, single_layers: int = 1):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=layers, num_single_layers=single_layers,
                                  attention_head_dim=16, num_attention_heads=2, joint_attention_dim=2 * TEXT,
                                  pooled_projection_dim=TEXT, guidance_embeds=guidance,
                                  axes_dims_rope=(4, 6, 6)).eval().requires_grad_(False)


def sd3_transformer(seed: int = 0, layers: int = 2):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, num_layers=layers, attention_head_dim=8,
                                 num_attention_heads=4, joint_attention_dim=2 * TEXT, caption_projection_dim=32,
                                 pooled_projection_dim=2 * TEXT, out_channels=16, pos_embed_max_size=32,
                                 ).eval().requires_grad_(False)


def vae16(family: str = "flux", seed: int = 0):
    """A 16-channel KL VAE (8x down) with the family's latent scaling and shift."""
    from diffusers import AutoencoderKL

    scale, shift = VAE_SCALE[family]
    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 16, 16, 16),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         norm_num_groups=8, layers_per_block=1, scaling_factor=scale, shift_factor=shift,
                         use_quant_conv=False, use_post_quant_conv=False).eval().requires_grad_(False)


def scheduler(family: str):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULERS[family])


def _clip(folder: Path, projection: bool = False, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8)
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=6, hidden_size=TEXT, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1, projection_dim=TEXT)
    return tok, (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def _t5(seed: int = 0):
    """A T5 encoder and a unigram T5 tokenizer from a seven-piece vocabulary (no sentencepiece model file)."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0), ("\u2581a", -2.0), ("\u2581b", -2.0),
             ("a", -3.0)]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    torch.manual_seed(seed)
    enc = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=2 * TEXT, d_ff=37, d_kv=8, num_layers=1,
                                  num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)).eval()
    return tok, enc


def save_random_pipeline(folder, family: str = "flux-dev") -> Path:
    """A random-weight diffusers pipeline folder of ``family`` (see :data:`FAMILIES`); returns it."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok2, t5 = _t5()
    if family.startswith("flux"):
        from diffusers import FluxPipeline

        tok, clip = _clip(folder)
        pipe = FluxPipeline(scheduler=scheduler(family), vae=vae16("flux"), text_encoder=clip, tokenizer=tok,
                            text_encoder_2=t5, tokenizer_2=tok2,
                            transformer=flux_transformer(guidance=family == "flux-dev"))
    else:
        from diffusers import StableDiffusion3Pipeline

        tok, clip = _clip(folder, projection=True, seed=0)
        _, clip_g = _clip(folder, projection=True, seed=1)
        pipe = StableDiffusion3Pipeline(scheduler=scheduler("sd3"), vae=vae16("sd3"), text_encoder=clip, tokenizer=tok,
                                        text_encoder_2=clip_g, tokenizer_2=tok, text_encoder_3=t5, tokenizer_3=tok2,
                                        transformer=sd3_transformer())
    out = folder / family
    pipe.save_pretrained(out)
    return out
