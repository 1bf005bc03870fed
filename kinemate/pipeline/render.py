"""``RenderPipeline``: the engine's face for a family that draws frames itself.

A *renderer* family (``Family.renderer``, e.g. ``kinemate-photo``) samples nothing: it builds
once-per-video state from the reference photo and its pose (``renderer.start``) and draws
each frame from a pose (``renderer.frame``). ``RenderPipeline`` gives it the public surface of
:class:`~kinemate.pipeline.animation.AnimationPipeline` that the front ends use —
``name``, ``family``, ``control_kind``, ``default_size``/``size_for``, ``options``/
``resolve``, ``stream``, ``__call__``, ``device``/``dtype``/``to`` — so ``animate_file``, the
CLI, the service and provenance treat it like any model. What differs is said here once:

* it is driven by the pose track (``poses``, keypoints in output pixels; ``animate_file``
  passes it with the skeleton maps), not by the control images;
* sampling options do not apply: one set to a value other than the model's is refused with a
  :class:`UsageError` (a result that silently ignored ``steps`` would mislead). ``seed`` is
  accepted: the renderer is deterministic;
* there is no sampler state to resume (``checkpoint`` is accepted and left empty: running
  again gives the same frames), and the output size defaults to the photo's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from kinemate.errors import InputError, UsageError
from kinemate.pipeline.options import OPTION_NAMES, SamplingOptions

# options a renderer takes without a difference (it draws no random numbers)
NEUTRAL_OPTIONS = ("seed",)


class RenderPipeline:
    """A renderer family as a pipeline (see the module docstring)."""

    def __init__(self, renderer: Any, *, name: str, family: str | None = None):
        self.renderer = renderer
        self.name = name
        self.family = family or name
        self.control_kind = renderer.control_kind
        self.default_size = None  # the photo's own size (:meth:`size_for`)
        # one "step": the once-per-video preparation (progress reports count it)
        self.options = SamplingOptions().merged({"steps": 1, "guidance": 1.0})
        self.index: dict = {}
        self.uses_reference = True  # it moves the person in the photo

    # -- what the front ends ask of any pipeline -----------------------------------------
    @property
    def device(self):
        import torch

        return torch.device("cpu")

    @property
    def dtype(self):
        import torch

        return torch.float32

    def to(self, device=None, dtype=None) -> "RenderPipeline":
        return self  # numpy/OpenCV on the CPU whatever the device

    @property
    def components(self) -> dict:
        return {}

    def size_for(self, photo_wh: tuple[int, int]) -> tuple[int, int]:
        """The output size when none is asked for: the photo's (see the renderer)."""
        return self.renderer.size_for(photo_wh)

    def resolve(self, *, text_only: bool = False, **options) -> SamplingOptions:
        """The model's options; any other value for a sampling option is refused
        (``text_only``: as :meth:`AnimationPipeline.resolve`; a renderer has no text mode)."""
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise UsageError(f"unknown sampling option(s) {', '.join(unknown)}; the options are "
                             f"{', '.join(OPTION_NAMES)}")
        merged = self.options.merged(options)  # checks types and bounds
        differ = [k for k, v in options.items() if v is not None and k not in NEUTRAL_OPTIONS
                  and getattr(merged, k) != getattr(self.options, k)]
        if differ:
            names = ", ".join(f"`{k}`" for k in sorted(differ))
            raise UsageError(f"{names}: not an option of {self.name}, which warps the photo "
                             "and samples nothing; leave it out, or pass `model` kinemate-tiny "
                             "(or another diffusion model) to sample with it")
        return merged

    def check_unused(self, options: SamplingOptions) -> None:
        """Nothing to add: :meth:`resolve` already refuses every option that would change."""

    # -- drawing -------------------------------------------------------------------------
    def start(self, reference: np.ndarray, reference_pose=None):
        """The renderer's once-per-video state for ``reference`` (uint8 (H, W, 3)); its pose
        comes from ``reference_pose`` (a :class:`~kinemate.pose.PoseTrack` in its pixels)
        or kinemate's own extractor."""
        reference = np.asarray(reference)
        if reference.ndim != 3 or reference.shape[2] != 3 or reference.dtype != np.uint8:
            raise InputError(f"reference must be a uint8 RGB image (H, W, 3), got "
                             f"{reference.dtype} {reference.shape}; convert it to RGB first")
        if reference_pose is None:
            from kinemate.pose import detect_reference_pose

            reference_pose = detect_reference_pose(reference)
        return self.renderer.start(reference, reference_pose.body[0])

    def stream(self, reference: np.ndarray, controls: Sequence[np.ndarray] | None = None, *,
               poses=None, reference_pose=None, progress: bool = True,
               callback: Callable | None = None, checkpoint: Any = None,
               window_callback: Callable | None = None, parallel: Any = None,
               **options) -> Iterator[np.ndarray]:
        """Yield one uint8 (H, W, 3) frame per pose of ``poses`` (a
        :class:`~kinemate.pose.PoseTrack` whose keypoints are in ``reference``'s pixels).
        ``controls`` (the skeleton maps, optional) must match it in number and size.
        ``callback(0, None, info)`` is called once the video's state is built (the one
        "step"); a job is cancelled between frames through the output's marker, so
        ``window_callback`` is not called (there are no windows)."""
        self.resolve(**{k: v for k, v in options.items() if k in OPTION_NAMES})
        if poses is None:
            raise UsageError(f"{self.name} is driven by a pose track: use animate_file (or "
                             "'kinemate animate') with a video of a person or a pose file, or "
                             "pass `poses`")
        ref = np.asarray(reference)
        if (poses.width, poses.height) != (ref.shape[1], ref.shape[0]):
            raise InputError(f"the pose track is in {poses.width}x{poses.height} pixels but the "
                             f"reference is {ref.shape[1]}x{ref.shape[0]}; frame both alike")
        if controls is not None and len(controls) and (
                len(controls) != len(poses) or np.asarray(controls[0]).shape != ref.shape):
            raise InputError(f"{len(controls)} control frames of {np.asarray(controls[0]).shape}"
                             f" do not match {len(poses)} poses on a {ref.shape} reference")
        rig = self.start(ref, reference_pose)
        if callback is not None:
            callback(0, None, {"frames": len(poses)})
        from tqdm.auto import tqdm

        for i in tqdm(range(len(poses)), disable=not progress, desc=f"{self.name}: "
                      f"{len(poses)} frames", unit="frame", leave=False):
            yield self.renderer.frame(rig, poses.body[i])

    def __call__(self, reference: np.ndarray, controls: Sequence[np.ndarray] | None = None,
                 **kwargs) -> np.ndarray:
        """Every frame at once: uint8 ``(F, H, W, 3)`` (see :meth:`stream`)."""
        return np.stack(list(self.stream(reference, controls, **kwargs)))


def load_renderer(family) -> RenderPipeline:
    """The pipeline of a renderer family (``Family.renderer``)."""
    return RenderPipeline(family.renderer(), name=family.name, family=family.name)


__all__ = ["RenderPipeline", "load_renderer"]
