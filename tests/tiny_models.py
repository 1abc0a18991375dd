"""Random-weight diffusers models of the real architectures, small enough for CPU tests."""
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel, UNet2DModel

from benchmarks import random_sd


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
    return random_sd.sd_unet("tiny", seed, cross_attention_dim)


def ddpm_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                         prediction_type=prediction_type)


sd_scheduler = random_sd.sd_scheduler
sd_vae = random_sd.sd_vae


def save_tiny_sd_pipeline(folder):
    """A random-weight Stable Diffusion pipeline folder (UNet, VAE, CLIP text encoder, tokenizer)."""
    return random_sd.save_random_pipeline(folder, "tiny")
