"""DreamPose's networks: Stable Diffusion's 2D UNet with a 14-channel input, the CLIP-image
+ VAE adapter that replaces the text encoder, CLIP ViT-B/32's vision tower and the VAE.

Only the adapter is DreamPose's own module; the rest is diffusers/transformers unchanged,
built from config dicts (SPEC §2). The adapter (the official ``Embedding_Adapter``):

    v = MaxPool2d(2)(vae_latent)            (B, 4, 80, 64) -> (B, 4, 40, 32)
    v = vae2clip(flatten(v, 2))              (B, 4, 1280)   -> (B, 4, 768)
    c = cat([clip_tokens, v], 1)             (B, 54, 768)
    out = linear1(c^T)^T                     (B, 50, 768)   the UNet's cross-attention context

The 1280 and 54 -> 50 are fixed by CLIP ViT-B/32 at 224 px (50 tokens) and 640x512 images.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

# Stable Diffusion 1.4's UNet (CompVis/stable-diffusion-v1-4 @ ebb811dd, unet/config.json) with
# DreamPose's 14-channel conv_in: a release without checkpoint-*/unet/config.json gets this.
SD14_UNET_CONFIG = {
    "sample_size": 64, "in_channels": 14, "out_channels": 4, "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                       "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
    "downsample_padding": 1, "mid_block_scale_factor": 1, "act_fn": "silu",
    "norm_num_groups": 32, "norm_eps": 1e-05, "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SD14_VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512], "act_fn": "silu", "norm_num_groups": 32,
    "sample_size": 512,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# openai/clip-vit-base-patch32's vision tower (the hub model the official pipeline loads)
CLIP_B32_VISION_CONFIG = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "image_size": 224, "patch_size": 32, "projection_dim": 512,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05, "num_channels": 3,
}
N_POSES = 5  # frames n-2 .. n+2, two UV channels each
CLIP_TOKENS = 50
VAE_TOKENS = 4


class EmbeddingAdapter(nn.Module):
    """CLIP image tokens ``(B, 50, D)`` + VAE latent ``(B, 4, h, w)`` -> ``(B, 50, D)`` (see
    the module docstring). ``vae_features`` = ``(h/2)*(w/2)`` (1280 at 640x512)."""

    def __init__(self, clip_dim: int = 768, vae_features: int = 1280,
                 clip_tokens: int = CLIP_TOKENS, vae_tokens: int = VAE_TOKENS):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.vae2clip = nn.Linear(vae_features, clip_dim)
        self.linear1 = nn.Linear(clip_tokens + vae_tokens, clip_tokens)
        with torch.no_grad():  # the official init: output = the CLIP tokens
            self.linear1.weight.copy_(torch.eye(clip_tokens, clip_tokens + vae_tokens))

    @property
    def vae_features(self) -> int:
        return self.vae2clip.in_features

    def forward(self, clip: torch.Tensor, vae: torch.Tensor) -> torch.Tensor:
        v = rearrange(self.pool(vae), "b c h w -> b c (h w)")
        if v.shape[-1] != self.vae_features:
            raise ValueError(f"the adapter takes VAE latents whose 2x2-pooled size is "
                             f"{self.vae_features} values per channel (640x512 images); got "
                             f"{tuple(vae.shape[-2:])}")
        tokens = torch.cat([clip, self.vae2clip(v)], dim=1)
        return rearrange(self.linear1(rearrange(tokens, "b n d -> b d n")), "b d n -> b n d")


def unet(config: dict) -> nn.Module:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_config(config)


def vae(config: dict) -> nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(config)


def clip_vision(config: dict) -> nn.Module:
    """transformers' ``CLIPVisionModel`` (``last_hidden_state`` is what DreamPose reads)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    keys = {k: v for k, v in config.items() if not k.startswith("_")}
    return CLIPVisionModel(CLIPVisionConfig(**keys))


__all__ = ["CLIP_B32_VISION_CONFIG", "EmbeddingAdapter", "N_POSES", "SD14_UNET_CONFIG",
           "SD14_VAE_CONFIG", "clip_vision", "unet", "vae"]
