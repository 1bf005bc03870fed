"""Reference attention: the appearance encoder "writes" features, the video UNet "reads" them.

No forward is ever replaced. Both networks carry :class:`ReferenceAttnProcessor` on their
attention modules (an ordinary diffusers attention processor); the processors of the fused
blocks (mid + up, "midup") know their slot number. What to do with a slot is decided by a
:class:`ReferenceBank` passed in ``cross_attention_kwargs={"reference": bank}`` for one call,
so the feature bank lives in an object the pipeline creates for one sampling call — no
global state, nothing left behind between calls — and each forward gets an immutable write or
read view of it.

Semantics (SPEC §3):
* write: the processor's input is ``norm1(x)`` of the transformer block; it is stored as
  ``bank.features[slot]`` (``(B_ref, L_ref, C)``), then ordinary self-attention runs.
* read (video UNet, hidden states ``(B*F, L, C)``, the first ``uncond_videos*F`` rows are the
  unconditional CFG half): the conditional rows attend to ``[own tokens; reference tokens]``
  (keys/values projected by the block's own ``to_k``/``to_v``, queries from the frame only);
  the unconditional rows do plain self-attention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn


def attention(attn, query_states: torch.Tensor, kv_states: torch.Tensor,
              key: torch.Tensor | None = None, value: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention of a diffusers ``Attention`` module through SDPA.

    ``query_states`` (N, Lq, C) and ``kv_states`` (N, Lk, C) are projected with ``to_q`` and
    ``to_k``/``to_v``; precomputed ``key``/``value`` (N, Lk', inner) are appended after them.
    """
    q = attn.to_q(query_states)
    k = attn.to_k(kv_states)
    v = attn.to_v(kv_states)
    if key is not None:
        k = torch.cat([k, key], dim=1)
        v = torch.cat([v, value], dim=1)
    q, k, v = (rearrange(t, "n l (h d) -> n h l d", h=attn.heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
    out = rearrange(out, "n h l d -> n l (h d)").to(q.dtype)
    out = attn.to_out[0](out)
    return attn.to_out[1](out)


@dataclass
class ReferenceBank:
    """Reference features of one sampling call (created by the pipeline, discarded after).

    The bank only stores; what a network does with it is decided by the view passed in
    ``cross_attention_kwargs={"reference": view}`` for one forward: :meth:`writer` (the
    appearance encoder records features) or :meth:`reader` (the video UNet reads them, with
    the row layout of that call). Views are immutable, so no mode is switched on the bank
    between calls.

    ``detach=False`` keeps the graph of the written features (training through the reference
    attention into the appearance encoder). ``bank_dtype`` emulates the official fp16 rounding
    of the features (``torch.float16``) or keeps them (``None``). ``lean`` selects the exact
    lean path: reference attention only for conditional rows, reference keys/values projected
    once per written bank instead of once per frame; ``lean=False`` computes what the official
    code computes (reference attention on every row, unconditional rows recomputed).
    """

    bank_dtype: torch.dtype | None = torch.float16
    lean: bool = True
    detach: bool = True  # False keeps the autograd graph of the written features (training)
    features: dict[int, torch.Tensor] = field(default_factory=dict)
    _kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def clear(self) -> None:
        self.features.clear()
        self._kv.clear()

    def writer(self) -> "ReferenceWrite":
        """An emptied bank's write view (for the appearance encoder's forward)."""
        self.clear()
        return ReferenceWrite(self)

    def reader(self, num_frames: int, uncond_videos: int = 0) -> "ReferenceRead":
        """The read view for one video-UNet forward on hidden states ``(B*F, L, C)`` whose
        first ``uncond_videos * num_frames`` rows are the unconditional CFG half (see
        :class:`kinemate.models.guidance.GuidanceRows`)."""
        return ReferenceRead(self, num_frames, uncond_videos * num_frames)

    # -- the two operations -------------------------------------------------------------
    def record(self, slot: int, normed: torch.Tensor) -> None:
        """Store the reference feature of ``slot`` (a copy, detached unless ``detach=False``)."""
        self.features[slot] = normed.detach().clone() if self.detach else normed
        self._kv.pop(slot, None)

    def _reference(self, slot: int, like: torch.Tensor) -> torch.Tensor:
        if slot not in self.features:
            raise RuntimeError(f"reference slot {slot} was never written (appearance encoder "
                               "and video UNet must have the same transformer layout)")
        feat = self.features[slot]
        if self.bank_dtype is not None:
            feat = feat.to(self.bank_dtype)
        return feat.to(like.dtype)

    def read(self, slot: int, attn, normed: torch.Tensor, num_frames: int,
             uncond_rows: int) -> torch.Tensor:
        """Self-attention of ``normed`` ``(B*F, L, C)``: the conditional rows (after the first
        ``uncond_rows``) also attend to the reference tokens of ``slot``."""
        rows = normed.shape[0]
        ref = self._reference(slot, normed)  # (B_ref, L_ref, C)
        if not self.lean:
            # official: every row attends to [own; reference row repeated per frame], then
            # the unconditional rows are recomputed as plain self-attention
            per_row = repeat(ref, "b l c -> (b f) l c", f=num_frames)[:rows]
            out = attention(attn, normed, torch.cat([normed, per_row], dim=1))
            if uncond_rows:
                out = out.clone()
                out[:uncond_rows] = attention(attn, normed[:uncond_rows], normed[:uncond_rows])
            return out
        # lean: reference keys/values projected once per written bank; conditional video b
        # reads reference row b of the last ``cond_batches`` rows (a [uncond, cond] writer
        # batch ends with the cond rows), a single reference row serves every video
        cond = normed[uncond_rows:]
        cond_batches = cond.shape[0] // num_frames
        if slot not in self._kv:
            rows_ref = ref[-cond_batches:] if ref.shape[0] > 1 else ref
            self._kv[slot] = (attn.to_k(rows_ref), attn.to_v(rows_ref))
        k_ref, v_ref = self._kv[slot]
        if k_ref.shape[0] == 1:
            k_ref, v_ref = (t.expand(cond.shape[0], -1, -1) for t in (k_ref, v_ref))
        else:
            if k_ref.shape[0] != cond_batches:
                raise RuntimeError(f"{k_ref.shape[0]} reference rows for {cond_batches} videos")
            k_ref, v_ref = (t.repeat_interleave(num_frames, dim=0) for t in (k_ref, v_ref))
        out_c = attention(attn, cond, cond, k_ref, v_ref)
        if not uncond_rows:
            return out_c
        out_u = attention(attn, normed[:uncond_rows], normed[:uncond_rows])
        return torch.cat([out_u, out_c], dim=0)


@dataclass(frozen=True)
class ReferenceWrite:
    """Write view of a bank: a fusion block records its ``norm1`` output, then runs plain
    self-attention."""

    bank: ReferenceBank

    def record(self, slot: int, normed: torch.Tensor) -> None:
        self.bank.record(slot, normed)

    def __call__(self, slot: int, attn, normed: torch.Tensor) -> torch.Tensor:
        self.bank.record(slot, normed)
        return attention(attn, normed, normed)


@dataclass(frozen=True)
class ReferenceRead:
    """Read view of a bank for one forward: the row layout is fixed when it is made."""

    bank: ReferenceBank
    num_frames: int
    uncond_rows: int

    def record(self, slot: int, normed: torch.Tensor) -> None:
        raise RuntimeError("a network tried to write reference features through a read view")

    def __call__(self, slot: int, attn, normed: torch.Tensor) -> torch.Tensor:
        return self.bank.read(slot, attn, normed, self.num_frames, self.uncond_rows)


class ReferenceAttnProcessor:
    """SDPA attention processor; with a ``slot`` it also writes/reads reference features.

    Accepts a ``reference`` keyword (a :class:`ReferenceWrite`/:class:`ReferenceRead` view, or
    None) through diffusers' ``cross_attention_kwargs``; without one it is plain attention.
    """

    def __init__(self, slot: int | None = None):
        self.slot = slot

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, reference: "ReferenceWrite | ReferenceRead | None" = None):
        if attention_mask is not None:
            raise NotImplementedError("attention masks are not used by kinemate models")
        if self.slot is None or reference is None or encoder_hidden_states is not None:
            context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
            return attention(attn, hidden_states, context)
        return reference(self.slot, attn, hidden_states)


def fusion_blocks(model: nn.Module, which: str = "midup") -> list[nn.Module]:
    """The transformer blocks whose self-attention exchanges reference features, in pairing
    order: a pre-order walk of ``mid_block`` then ``up_blocks`` ("midup", MagicAnimate) or of
    ``down_blocks``, ``up_blocks``, ``mid_block`` ("full", Animate Anyone: the child order of
    the official UNets), stably sorted by channel width, descending (as the official code).
    The walk names the blocks explicitly, so a writer and a reader built in another order
    still pair the blocks with the same module path."""
    from diffusers.models.attention import BasicTransformerBlock

    if which == "midup":
        roots = [model.mid_block, model.up_blocks]
    elif which == "full":
        roots = [model.down_blocks, model.up_blocks, model.mid_block]
    else:
        raise ValueError(f"unknown reference fusion {which!r}; use 'midup' or 'full'")
    found = []
    for root in roots:
        for module in root.modules():
            if isinstance(module, (BasicTransformerBlock, ReferenceOnlyBlock)):
                found.append(module)
    return sorted(found, key=lambda m: -m.norm1.normalized_shape[0])


class ReferenceOnlyBlock(nn.Module):
    """What is left of the appearance encoder's very last transformer block: only ``norm1``,
    whose output is the last reference feature (its attention/FF are absent in the release)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=True)
        self.slot: int | None = None


def install_reference_processors(model: nn.Module, which: str = "midup") -> int:
    """Give every attention of ``model`` a :class:`ReferenceAttnProcessor`; the self-attention
    of each fusion block gets its slot number. Returns the number of slots."""
    from diffusers.models.attention_processor import Attention

    for module in model.modules():
        if isinstance(module, Attention):
            module.set_processor(ReferenceAttnProcessor())
    blocks = fusion_blocks(model, which)
    for slot, block in enumerate(blocks):
        if isinstance(block, ReferenceOnlyBlock):
            block.slot = slot
        else:
            block.attn1.set_processor(ReferenceAttnProcessor(slot))
    return len(blocks)
