"""Reference attention: lean vs official reads, batched videos, training through the bank."""

from __future__ import annotations

import pytest
import torch


def test_reference_bank_batched_videos_read_their_own_reference():
    """Lean and official reads agree, also for a batch of videos with one reference each."""
    from diffusers.models.attention_processor import Attention

    from kinemate.models import ReferenceBank

    torch.manual_seed(0)
    attn = Attention(16, heads=2, dim_head=8)
    frames, tokens = 3, 5
    ref = torch.randn(2, 7, 16)          # two videos, two references
    x = torch.randn(2 * frames, tokens, 16)
    outs = []
    for lean in (True, False):
        bank = ReferenceBank(bank_dtype=None, lean=lean)
        bank.features[0] = ref
        outs.append(bank.reader(num_frames=frames)(0, attn, x))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-5)
    # video 1 must not depend on reference 0
    bank = ReferenceBank(bank_dtype=None, lean=True)
    bank.features[0] = torch.stack([torch.zeros(7, 16), ref[1]])
    torch.testing.assert_close(bank.reader(num_frames=frames)(0, attn, x)[frames:],
                               outs[0][frames:])



def test_reference_bank_without_detach_trains_the_writer():
    from diffusers.models.attention_processor import Attention

    from kinemate.models import ReferenceBank

    torch.manual_seed(0)
    attn = Attention(16, heads=2, dim_head=8)
    written = torch.randn(1, 7, 16, requires_grad=True)
    for detach, expect_grad in ((True, False), (False, True)):
        bank = ReferenceBank(bank_dtype=None, lean=True, detach=detach)
        bank.writer()(0, attn, written * 1.0)
        out = bank.reader(num_frames=2)(0, attn, torch.randn(2, 5, 16))
        assert out.requires_grad  # attention weights always train
        grads = torch.autograd.grad(out.sum(), written, allow_unused=True)[0]
        assert (grads is not None and grads.abs().sum() > 0) == expect_grad


def test_views_fix_the_row_layout_and_leave_the_bank_unchanged():
    """The guidance contract: a read view's unconditional rows ignore the reference, its
    conditional rows read it; making views switches no state on the bank."""
    from diffusers.models.attention_processor import Attention

    from kinemate.models import ReferenceBank
    from kinemate.models.reference import attention

    torch.manual_seed(0)
    attn = Attention(16, heads=2, dim_head=8)
    frames = 2
    bank = ReferenceBank(bank_dtype=None, lean=True)
    bank.writer()(0, attn, torch.randn(1, 7, 16))
    before = dict(vars(bank))
    x = torch.randn(2 * frames, 5, 16)  # [uncond video; cond video]
    out = bank.reader(num_frames=frames, uncond_videos=1)(0, attn, x)
    assert dict(vars(bank)).keys() == before.keys()
    torch.testing.assert_close(out[:frames], attention(attn, x[:frames], x[:frames]))
    assert not torch.allclose(out[frames:], attention(attn, x[frames:], x[frames:]))
    with pytest.raises(RuntimeError, match="read view"):
        bank.reader(num_frames=frames).record(0, x)
