"""AnimateDiff-v1 temporal ("motion") modules, with the exact parameter names of the release.

A motion module attends over the frames of a video at every spatial position. Layout in:
video features ``(B, C, F, H, W)``; out: the same. Key names (``temporal_transformer.norm``,
``.proj_in``, ``.transformer_blocks.0.attention_blocks.{0,1}.{to_q,to_k,to_v,to_out.0}``,
``.pos_encoder.pe``, ``.norms.{0,1}``, ``.ff.net.{0.proj,2}``, ``.ff_norm``, ``.proj_out``) match
``temporal_attention.ckpt`` one to one (see SPEC §1.3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from einops import rearrange
from torch import nn


def sinusoidal_table(max_len: int, dim: int) -> torch.Tensor:
    """The fixed positional table ``(1, max_len, dim)``: sin on even channels, cos on odd ones."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    """Adds ``pe[:, :F]`` to frame tokens ``(N, F, C)``. ``pe`` is a persistent buffer (it is in
    the checkpoint), so windows longer than ``max_len`` frames are impossible."""

    def __init__(self, dim: int, max_len: int = 24):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, dim), persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        num_frames = x.shape[1]
        if num_frames > self.pe.shape[1]:
            raise ValueError(
                f"a context window of {num_frames} frames exceeds the motion module's positional "
                f"table ({self.pe.shape[1]} frames); use a smaller context_frames"
            )
        return x + self.pe[:, :num_frames].to(x.dtype)


class TemporalAttention(nn.Module):
    """Multi-head self-attention over frames at each spatial position ("Temporal_Self").

    Takes tokens ``(B*F, L, C)`` (frames folded in the batch, L = h*w), returns the same.
    The positional table is added to the (already LayerNorm-ed) input before q/k/v.
    """

    def __init__(self, dim: int, heads: int = 8, head_dim: int | None = None,
                 positional_encoding: bool = True, max_len: int = 24):
        super().__init__()
        head_dim = head_dim or dim // heads
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])
        self.pos_encoder = PositionalEncoding(dim, max_len) if positional_encoding else None

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        tokens = x.shape[1]
        x = rearrange(x, "(b f) l c -> (b l) f c", f=num_frames)
        if self.pos_encoder is not None:
            x = self.pos_encoder(x)
        q, k, v = (rearrange(p(x), "n f (h d) -> n h f d", h=self.heads)
                   for p in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "n h f d -> n f (h d)")
        out = self.to_out[1](self.to_out[0](out))
        return rearrange(out, "(b l) f c -> (b f) l c", l=tokens)


class TemporalTransformerBlock(nn.Module):
    """(LayerNorm -> temporal attention -> +residual) x len(attention_blocks), then LN -> GEGLU FF -> +res."""

    def __init__(self, dim: int, heads: int, head_dim: int, num_attention_blocks: int = 2,
                 positional_encoding: bool = True, max_len: int = 24):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            TemporalAttention(dim, heads, head_dim, positional_encoding, max_len)
            for _ in range(num_attention_blocks)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_attention_blocks))
        self.ff = FeedForward(dim, dropout=0.0, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x), num_frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    """GroupNorm(32) per frame -> Linear proj_in -> blocks -> Linear proj_out -> + input."""

    def __init__(self, dim: int, heads: int = 8, head_dim: int | None = None, num_layers: int = 1,
                 num_attention_blocks: int = 2, positional_encoding: bool = True,
                 max_len: int = 24, norm_num_groups: int = 32):
        super().__init__()
        head_dim = head_dim or dim // heads
        inner = heads * head_dim
        self.norm = nn.GroupNorm(norm_num_groups, dim, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(dim, inner)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(inner, heads, head_dim, num_attention_blocks,
                                     positional_encoding, max_len)
            for _ in range(num_layers)
        )
        self.proj_out = nn.Linear(inner, dim)
        nn.init.zeros_(self.proj_out.weight)  # an untrained module is the identity
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``video`` (B, C, F, H, W) -> (B, C, F, H, W)."""
        b, c, f, h, w = video.shape
        residual = rearrange(video, "b c f h w -> (b f) c h w")
        x = self.norm(residual)
        x = rearrange(x, "n c h w -> n (h w) c")
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, f)
        x = self.proj_out(x)
        # contiguous before the add: the sum takes the layout of its first operand, and a
        # channels-last video makes the next block's convolutions several times slower on CPU
        x = rearrange(x, "n (h w) c -> n c h w", h=h, w=w).contiguous() + residual
        return rearrange(x, "(b f) c h w -> b c f h w", f=f)


class MotionModule(nn.Module):
    """AnimateDiff-v1 "Vanilla" temporal module: ``temporal_transformer`` applied to a video."""

    def __init__(self, dim: int, *, num_attention_heads: int = 8, num_transformer_block: int = 1,
                 attention_block_types: tuple[str, ...] = ("Temporal_Self", "Temporal_Self"),
                 temporal_position_encoding: bool = True,
                 temporal_position_encoding_max_len: int = 24, temporal_attention_dim_div: int = 1):
        super().__init__()
        for kind in attention_block_types:
            if kind != "Temporal_Self":
                raise ValueError(f"unsupported motion-module attention type {kind!r}")
        head_dim = dim // num_attention_heads // temporal_attention_dim_div
        self.temporal_transformer = TemporalTransformer(
            dim, heads=num_attention_heads, head_dim=head_dim, num_layers=num_transformer_block,
            num_attention_blocks=len(attention_block_types),
            positional_encoding=temporal_position_encoding,
            max_len=temporal_position_encoding_max_len,
        )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.temporal_transformer(video)
