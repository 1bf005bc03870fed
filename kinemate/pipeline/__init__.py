"""The sampling pipeline: context windows, fusion, guidance, schedulers, loading.

Public API: :func:`load_pipeline`, :class:`AnimationPipeline`, :func:`animate_file`, and the
window functions in :mod:`kinemate.pipeline.context`.
"""

from kinemate.pipeline.animation import AnimationPipeline, SamplingOptions, make_scheduler
from kinemate.pipeline.context import closed_loop_windows, context_windows, sliding_windows
from kinemate.pipeline.loading import load_pipeline

__all__ = ["AnimationPipeline", "SamplingOptions", "closed_loop_windows", "context_windows",
           "load_pipeline", "make_scheduler", "sliding_windows"]


def __getattr__(name):  # animate_file pulls in kinemate.io / kinemate.pose lazily
    if name == "animate_file":
        from kinemate.pipeline.animate import animate_file

        return animate_file
    raise AttributeError(name)
