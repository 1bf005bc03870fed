"""Cross-frame attention (Text2Video-Zero, SPEC §4) as a diffusers attention processor.

Every self-attention layer lets each frame attend to the keys and values of the **first frame
of its block**; queries stay per frame; cross-attention (text) is untouched. A *block* is the
run of consecutive batch rows that form one video in one guidance branch: a call on ``B``
blocks of ``F`` frames has rows laid out ``[block][frame]`` (with classifier-free guidance
``[uncond video; cond video]``, so the two branches never share keys). The frames per block
come with the call (``cross_attention_kwargs={"video_length": F}``, which UNet2DConditionModel
and ControlNetModel hand to every processor) or, when the call says nothing, from the number
of blocks the processor was made with (``blocks``), as diffusers' ``CrossFrameAttnProcessor2_0
(batch_size=blocks)`` does.

Attention goes through ``torch.nn.functional.scaled_dot_product_attention`` (default scale
``dim_head ** -0.5``), then ``to_out``; like the reference processor it has no residual,
group norm or output rescale (SD1.x attention layers use none of them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossFrameAttention:
    """Attention processor: self-attention keys/values of every frame replaced by those of
    the first frame of its block (see the module docstring)."""

    def __init__(self, blocks: int = 2):
        if blocks < 1:
            raise ValueError("blocks must be >= 1")
        self.blocks = int(blocks)

    def __call__(self, attn, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 video_length: int | None = None) -> torch.Tensor:
        rows, _, inner = hidden_states.shape
        query = attn.to_q(hidden_states)
        self_attention = encoder_hidden_states is None
        if self_attention:
            context = hidden_states
        else:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross \
                else encoder_hidden_states
        key, value = attn.to_k(context), attn.to_v(context)
        if self_attention:
            frames = video_length or max(1, rows // self.blocks)
            if rows % frames:
                raise ValueError(f"cross-frame attention: {rows} rows are not whole videos of "
                                 f"{frames} frames")
            key, value = first_frame(key, frames), first_frame(value, frames)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, key.shape[1], rows)
            attention_mask = attention_mask.view(rows, attn.heads, -1, attention_mask.shape[-1])
        head_dim = inner // attn.heads
        q, k, v = (x.view(rows, -1, attn.heads, head_dim).transpose(1, 2)
                   for x in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=0.0,
                                             is_causal=False)
        out = out.transpose(1, 2).reshape(rows, -1, attn.heads * head_dim).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


def first_frame(x: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B*F, L, C)`` -> the same shape with every frame's entries replaced by those of
    frame 0 of its block of ``frames`` rows."""
    blocks = x.shape[0] // frames
    anchor = x.view(blocks, frames, *x.shape[1:])[:, :1]
    return anchor.expand(blocks, frames, *x.shape[1:]).reshape(x.shape)


def install(model: nn.Module, cross_frame: bool = True) -> None:
    """Put :class:`CrossFrameAttention` (or, for an ablation, diffusers' plain
    ``AttnProcessor2_0``) on every attention layer of ``model`` (a UNet or a ControlNet)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    model.set_attn_processor(CrossFrameAttention() if cross_frame else AttnProcessor2_0())


def check_installed(model: nn.Module, name: str, cross_frame: bool = True) -> None:
    """Refuse to run when another processor replaced the cross-frame one (e.g. a
    memory-efficient attention switch, diffusers #2898: temporal consistency silently lost)."""
    from kinemate.errors import UsageError

    wanted = CrossFrameAttention if cross_frame else type(None)
    others = sorted({type(p).__name__ for p in model.attn_processors.values()
                     if cross_frame and not isinstance(p, wanted)})
    if others:
        raise UsageError(f"the {name}'s attention processors were replaced ({', '.join(others)}); "
                         "Text2Video-Zero needs its cross-frame attention on every layer — "
                         "reload the model instead of switching its attention")
