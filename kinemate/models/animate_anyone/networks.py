"""Animate Anyone's networks: its own pose guider, and the shared networks configured as
Moore-AnimateAnyone builds them (SPEC §2).

* denoising UNet: :class:`~kinemate.models.VideoUNet` with the official
  ``unet_additional_kwargs`` of ``inference_v2.yaml`` (AnimateDiff-v2 motion modules with a
  32-frame positional table, one in the mid block too; GroupNorm per frame), reference
  attention in every transformer block (``reference_fusion="full"``) and the pose features
  added to ``conv_in``'s output (``conv_in_residual``);
* reference UNet: :class:`~kinemate.models.AppearanceEncoder` with every transformer block
  kept and writing (``reference_tail=False, reference_fusion="full"``): the SD1.5 UNet
  without ``conv_norm_out``/``conv_out``;
* :class:`PoseGuider`: skeleton maps in [0, 1] -> features at latent resolution;
* image encoder: transformers' ``CLIPVisionModelWithProjection`` (ViT-L/14 in the release).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# configs/inference/inference_v2.yaml ``unet_additional_kwargs`` (the release's config)
ANIMATE_ANYONE_MOTION_KWARGS: dict[str, Any] = {
    "use_inflated_groupnorm": True,
    "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False,
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": True,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 32,
        "temporal_attention_dim_div": 1,
    },
}
# PoseGuider(320, block_out_channels=(16, 32, 96, 256)), hard-coded in scripts/pose2vid.py;
# 320 is the UNet's block_out_channels[0]
POSE_GUIDER_CHANNELS = (16, 32, 96, 256)


class PoseGuider(ModelMixin, ConfigMixin):
    """Skeleton frames ``(N, 3, H, W)`` in [0, 1] -> features ``(N, C, H/8, W/8)``, per frame.

    ``conv_in`` 3x3 -> SiLU -> for each width step: 3x3 conv, SiLU, 3x3 conv stride 2, SiLU
    -> ``conv_out`` 3x3 (zero at construction, no activation). Keys ``conv_in``,
    ``blocks.0..5``, ``conv_out`` as in ``pose_guider.pth``."""

    @register_to_config
    def __init__(self, conditioning_embedding_channels: int = 320, conditioning_channels: int = 3,
                 block_out_channels: tuple[int, ...] = POSE_GUIDER_CHANNELS):
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], 3, padding=1)
        blocks = []
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            blocks.append(nn.Conv2d(c_in, c_in, 3, padding=1))
            blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(block_out_channels[-1], conditioning_embedding_channels, 3,
                                  padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv_in(frames))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)


def denoising_unet(config: dict, motion: dict | None = None):
    """The denoising video UNet from an SD ``unet/config.json`` dict and the
    ``unet_additional_kwargs`` (default: the release's)."""
    from kinemate.models.unet3d import VideoUNet

    return VideoUNet.from_2d_config(config, motion or ANIMATE_ANYONE_MOTION_KWARGS,
                                    reference_fusion="full")


def reference_unet(config: dict):
    """The reference UNet (writes the reference features of all 16 SD1.5 transformer blocks)."""
    from kinemate.models.appearance import AppearanceEncoder

    return AppearanceEncoder.from_unet_config(config, reference_tail=False,
                                              reference_fusion="full")


def pose_guider(unet_config: dict) -> PoseGuider:
    """The pose guider as the official scripts build it for a UNet of this config."""
    return PoseGuider(conditioning_embedding_channels=int(unet_config["block_out_channels"][0]),
                      block_out_channels=POSE_GUIDER_CHANNELS)


def image_encoder(config: dict) -> nn.Module:
    """transformers' ``CLIPVisionModelWithProjection`` from its ``config.json`` dict."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    keys = {k: v for k, v in config.items() if not k.startswith("_")}
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**keys))


def restore_position_ids(clip: nn.Module) -> nn.Module:
    """CLIP's ``position_ids`` is a non-persistent buffer (``arange``) in current
    transformers: not in any state dict, so a model built on the meta device and then loaded
    still lacks it. Put it back."""
    embeddings = clip.vision_model.embeddings
    device = embeddings.position_embedding.weight.device
    ids = torch.arange(embeddings.num_positions, device=device).expand((1, -1))
    embeddings.register_buffer("position_ids", ids, persistent=False)
    return clip


__all__ = ["ANIMATE_ANYONE_MOTION_KWARGS", "POSE_GUIDER_CHANNELS", "PoseGuider",
           "denoising_unet", "image_encoder", "pose_guider", "reference_unet",
           "restore_position_ids"]
