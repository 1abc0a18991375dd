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
