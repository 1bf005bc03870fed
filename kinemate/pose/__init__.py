"""kinemate.pose — driving motion: pose tracks, extraction, clean-up, retargeting, control maps.

* :class:`PoseTrack` — one person's keypoints over time (OpenPose COCO-18 body, hands-21,
  face-70) with a versioned JSON format; :func:`load_pose` reads kinemate or OpenPose JSON,
  :func:`save_openpose` writes OpenPose JSON.
* :func:`extract_pose` — MediaPipe (bundled, CPU, offline) or another registered backend.
* :func:`smooth_track` — confidence gating, gap filling, One-Euro smoothing.
* :func:`retarget` — the driving motion re-proportioned to the reference person.
* :func:`render_openpose` — control maps in the standard OpenPose colours.
* :func:`control_frames_from_driving` — all of the above for ``animate_file``.

See docs/pose.md.
"""

from kinemate.pose.backends import (
    MediaPipeBackend,
    PoseBackend,
    available_backends,
    get_backend,
    register_backend,
)
from kinemate.pose.control import (
    control_frames_from_driving,
    densepose_frames,
    framed_track,
    load_driving_track,
    write_overlay_video,
    write_reference_preview,
)
from kinemate.pose.extract import detect_reference_pose, extract_pose
from kinemate.pose.openpose_json import is_pose_file, load_openpose, load_pose, save_openpose
from kinemate.pose.render import draw_pose, render_openpose
from kinemate.pose.retarget import bone_lengths, retarget
from kinemate.pose.temporal import fill_gaps, hold_person, one_euro, smooth_track
from kinemate.pose.track import PoseTrack

__all__ = [
    "MediaPipeBackend",
    "PoseBackend",
    "PoseTrack",
    "available_backends",
    "bone_lengths",
    "control_frames_from_driving",
    "densepose_frames",
    "detect_reference_pose",
    "draw_pose",
    "extract_pose",
    "fill_gaps",
    "framed_track",
    "get_backend",
    "hold_person",
    "is_pose_file",
    "load_driving_track",
    "load_openpose",
    "load_pose",
    "one_euro",
    "register_backend",
    "render_openpose",
    "retarget",
    "save_openpose",
    "smooth_track",
    "write_overlay_video",
    "write_reference_preview",
]
