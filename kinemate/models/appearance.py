"""The appearance encoder: an SD1.5 2D UNet whose only output is the reference feature bank.

Same parameters as diffusers' ``UNet2DConditionModel`` minus the 24 keys the release lacks:
no ``conv_norm_out``/``conv_out``, and the last transformer block
(``up_blocks[3].attentions[2]``) keeps only ``norm``, ``proj_in`` and
``transformer_blocks.0.norm1`` — the ``norm1`` output there is the last reference feature.
Running it fills a :class:`~kinemate.models.reference.ReferenceBank` (through its write view) with the
LayerNorm-ed self-attention inputs of the mid and up transformer blocks.
"""

from __future__ import annotations

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from einops import rearrange
from torch import nn

from kinemate.models.reference import (ReferenceBank, ReferenceOnlyBlock, ReferenceWrite,
                                       install_reference_processors)


class ReferenceTail(nn.Module):
    """Stands in for the last ``Transformer2DModel``: GroupNorm -> 1x1 conv -> tokens ->
    ``norm1`` (recorded). Its output is never used, so it returns its input unchanged."""

    def __init__(self, channels: int, groups: int, inner: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList([ReferenceOnlyBlock(inner)])

    def forward(self, hidden_states, encoder_hidden_states=None, cross_attention_kwargs=None,
                return_dict=False, **_unused):
        reference = (cross_attention_kwargs or {}).get("reference")
        block = self.transformer_blocks[0]
        if reference is not None and block.slot is not None:
            x = self.proj_in(self.norm(hidden_states))
            tokens = rearrange(x, "b c h w -> b (h w) c")
            reference.record(block.slot, block.norm1(tokens))
        return (hidden_states,)


class AppearanceEncoder(UNet2DConditionModel):
    """``UNet2DConditionModel`` config; ``forward(latents, t, text, bank)`` writes ``bank``.

    MagicAnimate's appearance encoder by default: the last transformer block reduced to its
    tail (``reference_tail``; requires 4 up blocks with ``layers_per_block >= 2``, the tail is
    ``up_blocks[-1].attentions[-1]`` as in the official ``AppearanceEncoderModel``) and the
    mid/up blocks writing (``reference_fusion="midup"``). Animate Anyone's reference UNet is
    ``reference_tail=False, reference_fusion="full"``: every transformer block kept and
    writing (SD1.5 keys minus ``conv_norm_out``/``conv_out``).
    """

    def __init__(self, *args, reference_tail: bool = True, reference_fusion: str = "midup",
                 **kwargs):
        super().__init__(*args, **kwargs)
        if reference_tail:
            last_up = self.up_blocks[-1]
            if not getattr(last_up, "attentions", None):
                raise ValueError("the appearance encoder needs a cross-attention last up block")
            old = last_up.attentions[-1]
            inner = old.proj_in.out_channels
            last_up.attentions[-1] = ReferenceTail(old.norm.num_channels, old.norm.num_groups,
                                                   inner)
        self.conv_norm_out = None
        self.conv_act = None
        self.conv_out = None
        self.register_to_config(reference_tail=reference_tail, reference_fusion=reference_fusion)
        self.num_reference_slots = install_reference_processors(self, reference_fusion)

    @classmethod
    def from_unet_config(cls, config: dict, **overrides) -> "AppearanceEncoder":
        """Build from an SD ``unet/config.json``-style dict (the release's
        ``appearance_encoder/config.json`` is one); unknown ``_``-keys are ignored."""
        import inspect

        accepted = set(inspect.signature(UNet2DConditionModel.__init__).parameters) - {"self"}
        accepted |= {"reference_tail", "reference_fusion"}
        kwargs = {k: v for k, v in {**config, **overrides}.items() if k in accepted}
        return cls(**kwargs)

    @torch.no_grad()
    def write(self, latents: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
              bank: ReferenceBank) -> ReferenceBank:
        """Run on reference latents ``(B, 4, h, w)`` at ``timestep`` with text ``(B, L, D)``;
        fills ``bank.features`` (slot -> ``(B, tokens, C)``), emptied first."""
        self(latents, timestep, encoder_hidden_states, bank.writer())
        return bank

    # Not UNet2DConditionModel.forward: that one ends in conv_norm_out/conv_out, which the
    # release lacks; this is its block walk without them (and without unused extras).
    def forward(self, sample, timestep, encoder_hidden_states,  # type: ignore[override]
                reference: ReferenceWrite | None = None):
        xattn = {"reference": reference} if reference is not None else None
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=sample.device)
        timestep = timestep.reshape(-1).to(sample.device).expand(sample.shape[0])
        emb = self.time_embedding(self.time_proj(timestep).to(sample.dtype))
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                x, res = block(hidden_states=x, temb=emb, encoder_hidden_states=encoder_hidden_states,
                               cross_attention_kwargs=xattn)
            else:
                x, res = block(hidden_states=x, temb=emb)
            skips += res
        x = self.mid_block(x, emb, encoder_hidden_states=encoder_hidden_states,
                           cross_attention_kwargs=xattn)
        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            res, skips = tuple(skips[-n:]), skips[:-n]
            size = skips[-1].shape[2:] if skips else None
            if getattr(block, "has_cross_attention", False):
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res,
                          encoder_hidden_states=encoder_hidden_states,
                          cross_attention_kwargs=xattn, upsample_size=size)
            else:
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res,
                          upsample_size=size)
        return x
