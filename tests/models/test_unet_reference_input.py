"""The video UNet's kinemate extensions ``reference_concat`` / ``reference_residual``."""

from __future__ import annotations

import pytest
import torch

from kinemate.train.arch import TINY_ARCH, build_unet


def _unet(**flags):
    arch = {**TINY_ARCH, "unet": {**TINY_ARCH["unet"], **flags}}
    torch.manual_seed(0)
    return build_unet(arch).eval()


def _inputs(b=2, f=3):
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(b, 4, f, 16, 16, generator=g)
    ref = torch.randn(b, 4, 16, 16, generator=g)
    text = torch.randn(b, 8, TINY_ARCH["unet"]["cross_attention_dim"], generator=g)
    return sample, ref, text


@torch.no_grad()
def test_concat_reads_the_reference_and_none_means_zeros():
    unet = _unet(reference_concat=True)
    assert unet.conv_in.in_channels == 8
    sample, ref, text = _inputs()
    a = unet(sample, 500, text, reference_latents=ref)
    b = unet(sample, 500, text, reference_latents=ref + 1)
    assert a.shape == sample.shape
    assert (a - b).abs().max() > 1e-3  # the reference reaches the output
    zeros = unet(sample, 500, text, reference_latents=torch.zeros_like(ref))
    torch.testing.assert_close(unet(sample, 500, text), zeros)
    # one reference for a batch of windows is broadcast
    one = unet(sample, 500, text, reference_latents=ref[:1])
    torch.testing.assert_close(one, unet(sample, 500, text, reference_latents=ref[:1].expand(2, -1, -1, -1)))
    with pytest.raises(ValueError, match="reference_latents must be"):
        unet(sample, 500, text, reference_latents=ref[:, :, :8])


@torch.no_grad()
def test_fresh_residual_unet_predicts_the_reference_for_every_frame():
    unet = _unet(reference_concat=True, reference_residual=True)
    sample, ref, text = _inputs()
    out = unet(sample, 10, text, reference_latents=ref)
    torch.testing.assert_close(out, ref[:, :, None].expand_as(out))
    plain = _unet()
    assert plain.conv_in.in_channels == 4
    # published-style UNets ignore the argument
    torch.testing.assert_close(plain(sample, 10, text, reference_latents=ref), plain(sample, 10, text))


def test_residual_needs_matching_channels():
    with pytest.raises(ValueError, match="out_channels == in_channels"):
        _unet(reference_residual=True, out_channels=8)
