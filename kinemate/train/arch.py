"""Building the networks of a model from scratch (``model.arch`` of a training config).

``arch`` keys (all optional; defaults = the kinemate-tiny architecture):

* ``unet`` – SD ``unet/config.json``-style keys shared by the video UNet, the appearance
  encoder and the ControlNet (``block_out_channels``, ``layers_per_block``,
  ``attention_head_dim``, ``cross_attention_dim``, ``norm_num_groups``, block types...);
* ``motion`` – motion-module kwargs of the video UNet (AnimateDiff v1 keys);
* ``controlnet`` – extra ControlNet keys (``conditioning_embedding_out_channels``: its length
  sets the control-map downsampling, which must equal the VAE's);
* ``vae`` – ``AutoencoderKL`` keys (see :data:`kinemate.train.vae.DEFAULT_TINY_VAE`);
* ``text_tokens`` – length of the fixed text embedding (no CLIP: a fixed random embedding
  ``(1, text_tokens, cross_attention_dim)`` drawn from ``text_seed``).
"""

from __future__ import annotations

import copy

import torch

TINY_ARCH: dict = {
    "unet": {
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [32, 64, 64, 64],
        "layers_per_block": 1,
        "attention_head_dim": 4,  # = number of heads (diffusers naming quirk)
        "cross_attention_dim": 32,
        "norm_num_groups": 32,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "sample_size": 16,
    },
    "motion": {
        "use_motion_module": True,
        "motion_module_resolutions": [1, 2, 4, 8],
        "motion_module_mid_block": False,
        "motion_module_decoder_only": False,
        "motion_module_type": "Vanilla",
        "motion_module_kwargs": {
            "num_attention_heads": 4,
            "num_transformer_block": 1,
            "attention_block_types": ["Temporal_Self", "Temporal_Self"],
            "temporal_position_encoding": True,
            "temporal_position_encoding_max_len": 24,
            "temporal_attention_dim_div": 1,
        },
    },
    "controlnet": {"conditioning_embedding_out_channels": [16, 32, 32]},
    "vae": None,  # None: kinemate.train.vae.DEFAULT_TINY_VAE
    "text_tokens": 8,
    "text_seed": 0,
}


def resolve_arch(arch: dict | None) -> dict:
    """``TINY_ARCH`` updated (one level deep) by ``arch``."""
    out = copy.deepcopy(TINY_ARCH)
    for k, v in (arch or {}).items():
        if k not in out:
            raise KeyError(f"unknown model.arch key {k!r}; valid keys: {sorted(out)}")
        if isinstance(v, dict) and isinstance(out[k], dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def build_unet(arch: dict, *, motion: bool = True):
    from kinemate.models import VideoUNet

    m = dict(arch["motion"])
    if not motion:
        m["use_motion_module"] = False
    return VideoUNet.from_2d_config(arch["unet"], m)


def build_unet_from_config(config: dict, *, motion: bool):
    """A VideoUNet from a saved config, with or without its temporal modules."""
    from kinemate.models import VideoUNet

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    cfg["use_motion_module"] = bool(motion) and bool(config.get("use_motion_module", True))
    return VideoUNet.from_config(cfg)


def build_appearance_encoder(arch: dict):
    from kinemate.models import AppearanceEncoder

    return AppearanceEncoder.from_unet_config(arch["unet"])


def build_controlnet(arch: dict):
    from diffusers import ControlNetModel

    keys = {k: v for k, v in arch["unet"].items() if k not in ("up_block_types", "out_channels", "sample_size",
                                                         "reference_concat", "reference_residual")}
    return ControlNetModel.from_config({**keys, **arch["controlnet"]})


def fixed_text_embedding(arch: dict) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(arch["text_seed"]))
    return torch.randn(1, int(arch["text_tokens"]), int(arch["unet"]["cross_attention_dim"]), generator=gen)


def copy_matching(dst: torch.nn.Module, src: torch.nn.Module) -> int:
    """Copy every tensor of ``src`` whose name and shape exist in ``dst`` (ControlNet and
    appearance encoder start as copies of the UNet, as in MagicAnimate); returns the count."""
    src_sd = src.state_dict()
    dst_sd = dst.state_dict()
    take = {k: v for k, v in src_sd.items() if k in dst_sd and dst_sd[k].shape == v.shape}
    dst.load_state_dict(take, strict=False)
    return len(take)
