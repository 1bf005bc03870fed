"""Opt-in speed settings (kinemate.pipeline.fast) change rounding only: kinemate-tiny with
channels-last convolution weights against the plain pipeline. (``compile=True`` is measured
on a GPU by benchmarks/gpu_check.py: tracing the UNet on this CPU takes minutes.)"""

from __future__ import annotations

import numpy as np
import torch


def test_channels_last_same_output_within_rounding(one_thread):
    from kinemate.pipeline import load_pipeline
    from kinemate.pipeline.fast import optimize

    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    controls = rng.integers(0, 256, (12, 48, 64, 3), dtype=np.uint8)
    kwargs = dict(steps=2, guidance=2.0, seed=3, context_frames=8, context_overlap=4,
                  progress=False)
    plain = load_pipeline().sample_latents(ref, controls, **kwargs)
    pipe = load_pipeline()
    assert {"unet", "appearance_encoder", "controlnet"} <= set(optimize(pipe, channels_last=True))
    conv = pipe.controlnet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    fast = pipe.sample_latents(ref, controls, **kwargs)
    # observed 1.4e-5 on values up to 10.8 (2026-12-02)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-4)
    assert not torch.equal(fast, torch.zeros_like(fast))
