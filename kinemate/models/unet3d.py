"""The video UNet: SD1.5 spatial layers + AnimateDiff motion modules + ControlNet residuals.

Parameter names equal the official ``UNet3DConditionModel``'s (= the diffusers 2D UNet's
names plus ``motion_modules``), so the SD1.5 ``unet`` file and ``temporal_attention.ckpt``
load without renaming. Built from diffusers parts (``Transformer2DModel``, ``ResnetBlock2D``'s
parameters, ``Downsample2D``, ``Upsample2D``, ``Timesteps``/``TimestepEmbedding``); what the
official code does differently is written here:

* :class:`ResnetBlock3D` applies its GroupNorms to the 5-D tensor ``(B, C, F, H, W)``, so the
  statistics are shared by all frames of the window (MagicAnimate SPEC §2). So does
  ``conv_norm_out``. With ``use_inflated_groupnorm`` (Animate Anyone) they normalise each
  frame on its own instead.
* spatial layers fold frames into the batch ``(B*F, C, H, W)``; text states repeat per frame.
* a motion module follows every resnet(+transformer) of the down and up blocks (and, with
  ``motion_module_mid_block``, the mid block's transformer: AnimateDiff v2).
* ``reference_fusion``: which transformer blocks exchange reference features ("midup":
  MagicAnimate; "full": every block, Animate Anyone).
* ``conv_in_residual`` (forward): features added to ``conv_in``'s output (Animate Anyone's
  pose guider).

Layouts: ``sample`` ``(B, C_in, F, H, W)``; ``timestep`` scalar or ``(B,)``;
``encoder_hidden_states`` ``(B, 77, D)``; ControlNet residuals ``(B, C, F, h, w)``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.upsampling import Upsample2D
from einops import rearrange, repeat
from torch import nn

from kinemate.models.motion import MotionModule
from kinemate.models.reference import install_reference_processors

# The official inference.yaml ``unet_additional_kwargs`` (MagicAnimate = AnimateDiff v1).
MAGICANIMATE_MOTION_KWARGS: dict[str, Any] = {
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": False,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 24,
        "temporal_attention_dim_div": 1,
    },
}


def frames_to_batch(video: torch.Tensor) -> torch.Tensor:
    return rearrange(video, "b c f h w -> (b f) c h w")


def batch_to_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    return rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)


def video_group_norm(norm: nn.GroupNorm, video: torch.Tensor, per_frame: bool) -> torch.Tensor:
    """GroupNorm of a video ``(B, C, F, H, W)``: statistics over the whole window, or over
    each frame alone (``per_frame``, the official "inflated" GroupNorm)."""
    if not per_frame:
        return norm(video)
    return batch_to_frames(norm(frames_to_batch(video)), video.shape[2])


class ResnetBlock3D(ResnetBlock2D):
    """ResnetBlock2D parameters; forward on video ``(B, C, F, H, W)`` with convolutions per
    frame and GroupNorm statistics over the whole window (channels-in-group x F x H x W), or
    per frame with ``inflated_groupnorm``."""

    def __init__(self, *args, inflated_groupnorm: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.inflated_groupnorm = inflated_groupnorm

    def forward(self, video: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        f = video.shape[2]
        h = self.nonlinearity(video_group_norm(self.norm1, video, self.inflated_groupnorm))
        h = batch_to_frames(self.conv1(frames_to_batch(h)), f)
        if temb is not None:
            h = h + self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None, None]
        h = self.nonlinearity(video_group_norm(self.norm2, h, self.inflated_groupnorm))
        h = self.dropout(h)
        h = batch_to_frames(self.conv2(frames_to_batch(h)), f)
        shortcut = video
        if self.conv_shortcut is not None:
            shortcut = batch_to_frames(self.conv_shortcut(frames_to_batch(video)), f)
        return (shortcut + h) / self.output_scale_factor


def _spatial(transformer: Transformer2DModel, video: torch.Tensor, text: torch.Tensor,
             cross_attention_kwargs: dict | None) -> torch.Tensor:
    """A 2D transformer applied per frame; text states ``(B, L, D)`` repeated per frame."""
    f = video.shape[2]
    out = transformer(
        frames_to_batch(video),
        encoder_hidden_states=repeat(text, "b l d -> (b f) l d", f=f),
        cross_attention_kwargs=cross_attention_kwargs,
        return_dict=False,
    )[0]
    return batch_to_frames(out, f)


class VideoBlock(nn.Module):
    """One resolution level of the video UNet (down or up), with key names ``resnets.j``,
    ``attentions.j`` (if cross-attention), ``motion_modules.j`` (if enabled),
    ``downsamplers.0`` / ``upsamplers.0``.

    Down: ``in_channels -> out_channels``; up: takes ``prev_channels`` plus a skip per layer
    (``skip_channels[j]``)."""

    def __init__(self, *, kind: str, num_layers: int, in_channels: int, out_channels: int,
                 temb_channels: int, cross_attention: bool, heads: int,
                 cross_attention_dim: int, groups: int, eps: float, motion: dict | None,
                 resample: bool, downsample_padding: int = 1,
                 skip_channels: list[int] | None = None, prev_channels: int | None = None,
                 inflated_groupnorm: bool = False):
        super().__init__()
        self.kind = kind
        resnets, attentions, motions = [], [], []
        for j in range(num_layers):
            if kind == "down":
                res_in = in_channels if j == 0 else out_channels
            else:
                res_in = (prev_channels if j == 0 else out_channels) + skip_channels[j]
            resnets.append(ResnetBlock3D(in_channels=res_in, out_channels=out_channels,
                                         temb_channels=temb_channels, eps=eps, groups=groups,
                                         dropout=0.0, non_linearity="silu",
                                         inflated_groupnorm=inflated_groupnorm))
            if cross_attention:
                attentions.append(Transformer2DModel(
                    num_attention_heads=heads, attention_head_dim=out_channels // heads,
                    in_channels=out_channels, num_layers=1,
                    cross_attention_dim=cross_attention_dim, norm_num_groups=groups))
            if motion is not None:
                motions.append(MotionModule(out_channels, **motion))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions) if cross_attention else None
        self.motion_modules = nn.ModuleList(motions) if motion is not None else None
        if resample and kind == "down":
            self.downsamplers = nn.ModuleList([Downsample2D(
                out_channels, use_conv=True, out_channels=out_channels,
                padding=downsample_padding, name="op")])
        elif resample:
            self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True,
                                                        out_channels=out_channels)])

    def _layer(self, j: int, x, temb, text, xattn_kwargs):
        x = self.resnets[j](x, temb)
        if self.attentions is not None:
            x = _spatial(self.attentions[j], x, text, xattn_kwargs)
        if self.motion_modules is not None:
            x = self.motion_modules[j](x)
        return x

    def down(self, x, temb, text, xattn_kwargs=None):
        skips = []
        for j in range(len(self.resnets)):
            x = self._layer(j, x, temb, text, xattn_kwargs)
            skips.append(x)
        if hasattr(self, "downsamplers"):
            x = batch_to_frames(self.downsamplers[0](frames_to_batch(x)), x.shape[2])
            skips.append(x)
        return x, skips

    def up(self, x, skips, temb, text, xattn_kwargs=None, upsample_size=None):
        for j in range(len(self.resnets)):
            x = torch.cat([x, skips.pop()], dim=1)
            x = self._layer(j, x, temb, text, xattn_kwargs)
        if hasattr(self, "upsamplers"):
            f = x.shape[2]
            x = batch_to_frames(self.upsamplers[0](frames_to_batch(x), upsample_size), f)
        return x


class VideoMidBlock(nn.Module):
    """resnet, then (transformer, resnet) — no motion module unless ``motion`` is given."""

    def __init__(self, *, channels: int, temb_channels: int, heads: int, cross_attention_dim: int,
                 groups: int, eps: float, output_scale_factor: float, motion: dict | None,
                 inflated_groupnorm: bool = False):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_channels=channels, out_channels=channels, temb_channels=temb_channels,
                          eps=eps, groups=groups, dropout=0.0, non_linearity="silu",
                          output_scale_factor=output_scale_factor,
                          inflated_groupnorm=inflated_groupnorm)
            for _ in range(2))
        self.attentions = nn.ModuleList([Transformer2DModel(
            num_attention_heads=heads, attention_head_dim=channels // heads, in_channels=channels,
            num_layers=1, cross_attention_dim=cross_attention_dim, norm_num_groups=groups)])
        self.motion_modules = (nn.ModuleList([MotionModule(channels, **motion)])
                               if motion is not None else None)

    def forward(self, x, temb, text, xattn_kwargs=None):
        x = self.resnets[0](x, temb)
        x = _spatial(self.attentions[0], x, text, xattn_kwargs)
        if self.motion_modules is not None:
            x = self.motion_modules[0](x)
        return self.resnets[1](x, temb)


class VideoUNet(ModelMixin, ConfigMixin):
    """SD-style video UNet with temporal modules and ControlNet residual inputs.

    Constructor arguments are the SD ``unet/config.json`` keys (block types may be the 2D or
    3D names; a block is cross-attention iff its name starts with ``CrossAttn``) plus the
    keys of the official ``unet_additional_kwargs`` (motion modules, ``use_inflated_groupnorm``)
    and ``reference_fusion`` ("midup" or "full", see the module docstring). Build a full SD1.5-size
    model with ``VideoUNet.from_2d_config(json.load(open("unet/config.json")))``; tiny ones by
    passing small ``block_out_channels`` (multiples of 32: the motion modules' GroupNorm has 32
    groups) and ``norm_num_groups``.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D",
                                             "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types: tuple[str, ...] = ("UpBlock3D", "CrossAttnUpBlock3D",
                                           "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        attention_head_dim: int = 8,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        center_input_sample: bool = False,
        use_motion_module: bool = True,
        motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8),
        motion_module_mid_block: bool = False,
        motion_module_decoder_only: bool = False,
        motion_module_type: str = "Vanilla",
        motion_module_kwargs: dict | None = None,
        sample_size: int | None = None,
        reference_concat: bool = False,
        reference_residual: bool = False,
        use_inflated_groupnorm: bool = False,
        reference_fusion: str = "midup",
    ):
        super().__init__()
        if act_fn != "silu":
            raise ValueError("only act_fn='silu' is supported")
        if motion_module_type != "Vanilla":
            raise ValueError("only motion_module_type='Vanilla' (AnimateDiff v1/v2) is supported")
        motion_kwargs = dict(MAGICANIMATE_MOTION_KWARGS["motion_module_kwargs"])
        motion_kwargs.update(motion_module_kwargs or {})
        heads = attention_head_dim  # diffusers naming quirk: SD's "attention_head_dim" = heads
        levels = len(block_out_channels)
        temb_dim = block_out_channels[0] * 4

        if reference_residual and out_channels != in_channels:
            raise ValueError("reference_residual needs out_channels == in_channels")
        conv_in_channels = in_channels * (2 if reference_concat else 1)
        self.conv_in = nn.Conv2d(conv_in_channels, block_out_channels[0], 3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], temb_dim)

        def motion_at(res: int, decoder: bool) -> dict | None:
            ok = use_motion_module and res in motion_module_resolutions
            ok = ok and (decoder or not motion_module_decoder_only)
            return motion_kwargs if ok else None

        self.down_blocks = nn.ModuleList()
        out_ch = block_out_channels[0]
        skip_chs = [out_ch]
        for i, name in enumerate(down_block_types):
            in_ch, out_ch = out_ch, block_out_channels[i]
            final = i == levels - 1
            self.down_blocks.append(VideoBlock(
                kind="down", num_layers=layers_per_block, in_channels=in_ch, out_channels=out_ch,
                temb_channels=temb_dim, cross_attention=name.startswith("CrossAttn"), heads=heads,
                cross_attention_dim=cross_attention_dim, groups=norm_num_groups, eps=norm_eps,
                motion=motion_at(2 ** i, False), resample=not final,
                downsample_padding=downsample_padding, inflated_groupnorm=use_inflated_groupnorm))
            skip_chs += [out_ch] * layers_per_block + ([] if final else [out_ch])

        self.mid_block = VideoMidBlock(
            channels=block_out_channels[-1], temb_channels=temb_dim, heads=heads,
            cross_attention_dim=cross_attention_dim, groups=norm_num_groups, eps=norm_eps,
            output_scale_factor=mid_block_scale_factor,
            motion=motion_kwargs if (use_motion_module and motion_module_mid_block) else None,
            inflated_groupnorm=use_inflated_groupnorm)

        self.up_blocks = nn.ModuleList()
        reversed_ch = list(reversed(block_out_channels))
        out_ch = reversed_ch[0]
        for i, name in enumerate(up_block_types):
            prev_ch, out_ch = out_ch, reversed_ch[i]
            final = i == levels - 1
            n = layers_per_block + 1
            skips = [skip_chs.pop() for _ in range(n)]
            self.up_blocks.append(VideoBlock(
                kind="up", num_layers=n, in_channels=0, out_channels=out_ch, prev_channels=prev_ch,
                skip_channels=skips, temb_channels=temb_dim,
                cross_attention=name.startswith("CrossAttn"), heads=heads,
                cross_attention_dim=cross_attention_dim, groups=norm_num_groups, eps=norm_eps,
                motion=motion_at(2 ** (levels - 1 - i), True), resample=not final,
                inflated_groupnorm=use_inflated_groupnorm))

        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, 3, padding=1)
        if reference_residual:  # starts as "the frame is the reference" (x0 = reference + 0)
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)
        self.num_reference_slots = install_reference_processors(self, reference_fusion)

    @classmethod
    def from_2d_config(cls, config: dict, motion: dict | None = None, **overrides) -> "VideoUNet":
        """Build from an SD ``unet/config.json`` dict plus MagicAnimate's motion kwargs
        (default: the official ``unet_additional_kwargs``), as ``from_pretrained_2d`` does."""
        kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
        kwargs.update(motion if motion is not None else MAGICANIMATE_MOTION_KWARGS)
        kwargs.update(overrides)
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(k for k in kwargs if k not in accepted)
        for k in unknown:
            if k in ("unet_use_cross_frame_attention", "unet_use_temporal_attention"):
                if kwargs[k]:
                    raise ValueError(f"{k}=True is not supported")
            elif kwargs[k] not in (None, False, [], "default") and k not in _IGNORED_2D_KEYS:
                raise ValueError(f"unsupported UNet config key {k}={kwargs[k]!r}")
        return cls(**{k: v for k, v in kwargs.items() if k in accepted})

    def motion_module_keys(self) -> list[str]:
        return [k for k in self.state_dict() if ".motion_modules." in k]

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        down_block_additional_residuals: list[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        cross_attention_kwargs: dict | None = None,
        reference_latents: torch.Tensor | None = None,
        conv_in_residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Noise prediction ``(B, C_out, F, H, W)`` for ``sample`` ``(B, C_in, F, H, W)``.

        ``cross_attention_kwargs`` reach every transformer block, e.g. ``{"reference":
        view}`` with a :class:`~kinemate.models.reference.ReferenceBank` read view (only the
        fusion blocks use it).

        ``conv_in_residual`` ``(B, C0, F, H, W)`` (C0 = ``block_out_channels[0]``) is added to
        ``conv_in``'s output (Animate Anyone's pose-guider features).

        ``reference_latents`` ``(B, C_in, H, W)``: the clean reference latent, used only by the
        kinemate extensions ``reference_concat`` (stacked on the input channels of every frame)
        and ``reference_residual`` (added to the output, which then predicts the clean frame:
        the scheduler's ``prediction_type`` must be ``"sample"``). ``None`` (the unconditional
        half of classifier-free guidance, or reference dropout in training) reads as zeros.
        The published checkpoints use neither; their ``reference_latents`` are ignored."""
        b, _, f, hh, ww = sample.shape
        ref = None
        if self.config.reference_concat or self.config.reference_residual:
            if reference_latents is None:
                ref = torch.zeros_like(sample[:, :, 0])
            else:
                ref = reference_latents.to(sample.dtype)
                if ref.shape[0] == 1 and b > 1:
                    ref = ref.expand(b, -1, -1, -1)
                if ref.shape != sample[:, :, 0].shape:
                    raise ValueError(f"reference_latents must be (B, C, H, W) = "
                                     f"{tuple(sample[:, :, 0].shape)}, got {tuple(ref.shape)}")
            ref = ref[:, :, None].expand(-1, -1, f, -1, -1)
        if self.config.reference_concat:
            sample = torch.cat([sample, ref], dim=1)
        up_factor = 2 ** sum(hasattr(blk, "upsamplers") for blk in self.up_blocks)
        forward_upsample_size = hh % up_factor != 0 or ww % up_factor != 0
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=sample.device)
        timestep = timestep.reshape(-1).to(sample.device).expand(b)
        emb = self.time_embedding(self.time_proj(timestep).to(sample.dtype))

        x = batch_to_frames(self.conv_in(frames_to_batch(sample)), f)
        if conv_in_residual is not None:
            x = x + conv_in_residual.to(x.dtype)
        skips = [x]
        for block in self.down_blocks:
            x, res = block.down(x, emb, encoder_hidden_states, cross_attention_kwargs)
            skips += res
        if down_block_additional_residuals is not None:
            if len(down_block_additional_residuals) != len(skips):
                raise ValueError(f"expected {len(skips)} ControlNet down residuals, got "
                                 f"{len(down_block_additional_residuals)}")
            skips = [s + r for s, r in zip(skips, down_block_additional_residuals)]
        x = self.mid_block(x, emb, encoder_hidden_states, cross_attention_kwargs)
        if mid_block_additional_residual is not None:
            x = x + mid_block_additional_residual
        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            upsample_size = None
            if forward_upsample_size and i < len(self.up_blocks) - 1:
                upsample_size = skips[-1].shape[-2:]
            x = block.up(x, list(res), emb, encoder_hidden_states, cross_attention_kwargs,
                         upsample_size)
        x = torch.nn.functional.silu(video_group_norm(self.conv_norm_out, x,
                                                      self.config.use_inflated_groupnorm))
        out = batch_to_frames(self.conv_out(frames_to_batch(x)), f)
        if self.config.reference_residual:
            out = out + ref
        return out


_IGNORED_2D_KEYS = {
    "addition_embed_type", "addition_embed_type_num_heads", "addition_time_embed_dim",
    "class_embed_type", "class_embeddings_concat", "conv_in_kernel", "conv_out_kernel",
    "dual_cross_attention", "encoder_hid_dim", "encoder_hid_dim_type", "mid_block_type",
    "num_attention_heads", "num_class_embeds", "only_cross_attention",
    "projection_class_embeddings_input_dim", "resnet_out_scale_factor",
    "resnet_skip_time_act", "resnet_time_scale_shift", "time_cond_proj_dim",
    "time_embedding_act_fn", "time_embedding_dim", "time_embedding_type",
    "timestep_post_act", "transformer_layers_per_block", "upcast_attention",
    "use_linear_projection", "reverse_transformer_layers_per_block",
    "attention_type", "dropout", "cross_attention_norm", "mid_block_only_cross_attention",
}
