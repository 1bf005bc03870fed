"""The engine: context windows, fusion, guidance, schedulers, loading — shared by every family.

Public API: :func:`load_pipeline`, :class:`AnimationPipeline`, :class:`SamplingOptions`,
:func:`animate_file`, :func:`parse_size`, :func:`default_dtype`, :class:`WindowParallel`
(windows split over processes), and the window functions in
:mod:`kinemate.pipeline.context`. Model families are found through
:mod:`kinemate.models.registry`. Names are imported on first use (``kinemate --help`` and
``kinemate.pipeline.options`` need no torch).
"""

from __future__ import annotations

from kinemate.lazy import lazy_attributes

_LAZY = {
    "AnimateResult": "kinemate.pipeline.animate",
    "AnimationPipeline": "kinemate.pipeline.animation",
    "SamplingOptions": "kinemate.pipeline.options",
    "WindowParallel": "kinemate.pipeline.parallel",
    "animate_file": "kinemate.pipeline.animate",
    "closed_loop_windows": "kinemate.pipeline.context",
    "context_windows": "kinemate.pipeline.context",
    "default_dtype": "kinemate.pipeline.loading",
    "load_pipeline": "kinemate.pipeline.loading",
    "make_scheduler": "kinemate.pipeline.animation",
    "parse_size": "kinemate.pipeline.options",
    "sliding_windows": "kinemate.pipeline.context",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_attributes("kinemate.pipeline", _LAZY)
