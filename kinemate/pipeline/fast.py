"""Opt-in speed settings for a loaded pipeline on a GPU: same networks, same weights, the same
computation up to floating-point rounding (no approximation).

* ``channels_last``: 4-D convolution weights in NHWC order, which cuDNN's half-precision
  tensor-core kernels prefer (activations follow the weights' layout);
* ``compile``: ``torch.compile`` of each network in place (``nn.Module.compile``, so
  ``state_dict`` keys and ``pipe.unet`` stay as they are) with static shapes: every window of
  a video has the same length, so each network compiles once per window length and batch.

The differences these make are rounding-level; ``benchmarks/gpu_check.py`` measures the fast
path against the plain one in float16 next to the plain float16 path against float32 on the
full-size model, and ``tests/pipeline/test_fast.py`` checks them on the CPU.
"""

from __future__ import annotations

import torch
from torch import nn


def optimize(pipe, *, channels_last: bool = True, compile: bool = False,  # noqa: A002
             mode: str | None = None, backend: str = "inductor",
             parts: tuple[str, ...] | None = None) -> list[str]:
    """Apply the settings to the networks named in ``parts`` (default: every network of the
    denoiser, and the VAE's decoder); returns the names changed. ``mode``/``backend`` go to
    ``torch.compile``."""
    modules = dict(pipe.denoiser.components())
    if getattr(pipe, "vae", None) is not None and hasattr(pipe.vae, "decoder"):
        modules["vae.decoder"] = pipe.vae.decoder
    changed = []
    for name, module in modules.items():
        if not isinstance(module, nn.Module) or (parts is not None and name not in parts):
            continue
        if channels_last:
            module.to(memory_format=torch.channels_last)
        if compile:
            module.compile(backend=backend, mode=mode, dynamic=False)
        changed.append(name)
    return changed
