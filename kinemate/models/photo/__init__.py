"""The ``kinemate-photo`` family: the person in the photo moved by warping the photo itself.

Not a diffusion model: nothing is sampled and no weights are loaded. The person in the
reference photo is cut out (MediaPipe Pose's segmentation, :mod:`.segment`), rigged with
per-bone layers (:mod:`.rig`) and posed frame by frame with a few ``cv2.remap`` calls, at the
photo's own resolution (up to :data:`MAX_SIDE` pixels on the long side). Face and clothes
keep the photo's pixels; what the person uncovers is filled once per video by inpainting.

The family declares a *renderer* (:class:`PhotoRenderer`) instead of networks; the engine
wraps it in a :class:`kinemate.pipeline.render.RenderPipeline`, which offers what
``animate_file``, the CLI and the service use of a pipeline (``resolve``, ``stream``,
``name``, ``control_kind``, ...). It needs the pose track (the control is "pose"), which
``animate_file`` passes along with the skeleton maps. Its warped frames also give the
diffusion families a start (``init="warp"``, :mod:`kinemate.pipeline.animation`).
"""

from __future__ import annotations

import numpy as np

from kinemate.models.registry import Family

MAX_SIDE = 1024  # the longest output side drawn at the photo's resolution by default


class PhotoRenderer:
    """Reference photo + pose track -> frames (see the module docstring).

    ``start(reference, body, mask=None)`` builds a :class:`~.rig.PhotoRig` once per video
    (``body``: the reference's (18, 3) COCO-18 keypoints in its pixels; ``mask``: the person,
    float (H, W) in [0, 1], by default cut out by :func:`~.segment.person_mask`);
    ``frame(rig, body)`` draws one pose."""

    control_kind = "openpose"
    max_side = MAX_SIDE

    def start(self, reference: np.ndarray, body: np.ndarray, mask: np.ndarray | None = None):
        from kinemate.models.photo.rig import PhotoRig
        from kinemate.models.photo.segment import person_mask

        if mask is None:
            mask = person_mask(reference, body)
        return PhotoRig(reference, body, mask)

    @staticmethod
    def frame(rig, body: np.ndarray) -> np.ndarray:
        return rig.render(body)

    def size_for(self, photo_wh: tuple[int, int]) -> tuple[int, int]:
        """The output size for a photo of ``photo_wh``: its own, scaled down to at most
        :data:`MAX_SIDE` on the long side, even sides (video encoders need them)."""
        w, h = (int(v) for v in photo_wh)
        f = min(1.0, self.max_side / max(w, h))
        return (max(2, int(w * f) // 2 * 2), max(2, int(h * f) // 2 * 2))


def _no_networks(*_args, **_kwargs):
    from kinemate.errors import UsageError

    raise UsageError("kinemate-photo is a renderer without networks: there is no model folder "
                     "to load for it; drop `weights`")


FAMILIES = (
    Family(
        name="kinemate-photo",
        summary="the default: moves the person in the photo itself (segmentation, per-bone "
                "layered warping, background inpainting) at the photo's resolution, in "
                "seconds on a CPU; no weights, no diffusion",
        control_kinds=("openpose",),
        components=(),
        assemble=_no_networks,
        renderer=PhotoRenderer,
    ),
)

__all__ = ["FAMILIES", "MAX_SIDE", "PhotoRenderer"]
