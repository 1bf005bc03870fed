"""The motion module hands the next block a video whose frames are ordinary (contiguous NCHW)
tensors: a channels-last result made the following ResNet convolutions 2-5x slower on the CPU
(Animate Anyone ran ~15 % slower per step than the official code, benchmarks/bench_aa_speed.py)."""

from __future__ import annotations

import torch
from einops import rearrange


def test_motion_module_output_frames_are_contiguous():
    from kinemate.models.motion import MotionModule

    torch.manual_seed(0)
    module = MotionModule(64, num_attention_heads=8, temporal_position_encoding_max_len=32).eval()
    with torch.no_grad():
        module.temporal_transformer.proj_out.weight.normal_(0, 0.02)  # not the identity
        video = torch.randn(2, 64, 3, 4, 5)
        out = module(video)
    assert out.shape == video.shape
    frames = rearrange(out, "b c f h w -> (b f) c h w")  # what the per-frame convolutions get
    assert frames.is_contiguous(), frames.stride()
    # the values are those of the plain computation, whatever the layout
    x = rearrange(video, "b c f h w -> (b f) c h w")
    t = module.temporal_transformer
    with torch.no_grad():
        y = t.proj_in(rearrange(t.norm(x), "n c h w -> n (h w) c"))
        for block in t.transformer_blocks:
            y = block(y, 3)
        y = rearrange(t.proj_out(y), "n (h w) c -> n c h w", h=4, w=5) + x
    torch.testing.assert_close(frames, y, atol=0, rtol=0)
