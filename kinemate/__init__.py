"""kinemate — animate a person in one photo with the motion of a driving video."""

from __future__ import annotations

__version__ = "0.1.0"

from kinemate.errors import KinemateError  # noqa: E402


def load_pipeline(weights=None, *, model=None, device="cpu", dtype=None):
    """Load an animation pipeline (see :func:`kinemate.pipeline.load_pipeline`); imported
    lazily so that ``import kinemate`` stays light."""
    import torch

    from kinemate.pipeline.loading import load_pipeline as _load

    return _load(weights, model=model, device=device, dtype=dtype or torch.float32)


__all__ = ["KinemateError", "__version__", "load_pipeline"]
