"""Random-weight diffusers models of the real architectures, small enough for CPU tests."""
import torch
from diffusers import DDIMScheduler, PNDMScheduler, UNet2DConditionModel, UNet2DModel


def pixel_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).eval().requires_grad_(False)


def sd_unet(seed: int = 0, cross_attention_dim: int = 32) -> UNet2DConditionModel:
    """SD-1.x-shaped latent UNet (4 channels, cross-attention on text embeddings)."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=4,
    ).eval().requires_grad_(False)


def ddpm_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                         prediction_type=prediction_type)


def sd_scheduler(prediction_type: str = "epsilon") -> PNDMScheduler:
    """The scheduler config SD 1.5 checkpoints ship (PNDM, scaled-linear betas, leading spacing)."""
    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True,
                         steps_offset=1, prediction_type=prediction_type)


def save_tiny_sd_pipeline(folder):
    """A random-weight Stable Diffusion pipeline folder (UNet, VAE, CLIP text encoder, tokenizer)."""
    import json
    from pathlib import Path

    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8)
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=6, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                        num_attention_heads=4, max_position_embeddings=8, bos_token_id=0,
                                        eos_token_id=1, pad_token_id=1))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16, 16),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        norm_num_groups=8, layers_per_block=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=sd_unet(), scheduler=sd_scheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder / "pipe")
    return folder / "pipe"
