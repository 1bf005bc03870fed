"""Preview of a job's control: the first driving frame as the model will see it.

DensePose control: the first frame of the (already rendered IUV) driving video. Pose
control: the pose extracted from the first frame (or the first frame of a pose JSON),
rendered as an OpenPose skeleton. Cached as ``preview.png`` in the job folder.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from kinemate.errors import KinemateError
from kinemate.service.media import UploadRejected
from kinemate.service.store import Job

MAX_SIDE = 512
_lock = threading.Lock()  # pose extraction models are not re-entrant; previews are rare


def resolve_control(job: Job, worker_info: dict) -> str:
    """'densepose' or 'pose' for this job: the requested kind, or for 'auto' the kind of
    control the loaded model was trained on."""
    control = job.params.get("control", "auto")
    if job.inputs["driving"]["kind"] == "pose":
        return "pose"
    if control == "auto":
        return "densepose" if worker_info.get("control_kind", "densepose") == "densepose" else "pose"
    return control


def _first_frame(path: Path) -> np.ndarray:
    from kinemate.io import open_video

    with open_video(path) as reader:
        for frame in reader:
            return frame
    raise UploadRejected("the driving video has no frame to preview")


def _shrink(image: np.ndarray) -> np.ndarray:
    from kinemate.io import resize

    h, w = image.shape[:2]
    scale = MAX_SIDE / max(h, w)
    if scale >= 1:
        return image
    return resize(image, (max(1, round(w * scale)), max(1, round(h * scale))))


def render_preview(job: Job, job_dir: Path, worker_info: dict) -> np.ndarray:
    """uint8 (H, W, 3) RGB preview of the first control frame."""
    driving = job_dir / job.inputs["driving"]["file"]
    control = resolve_control(job, worker_info)
    if control == "densepose":
        return _shrink(_first_frame(driving))
    from kinemate import pose

    if job.inputs["driving"]["kind"] == "pose":
        track = pose.PoseTrack.load(driving).subset([0])
    else:
        frame = _shrink(_first_frame(driving))
        with _lock:
            track = pose.extract_pose(frame)
    width, height = track.size
    scale = min(1.0, MAX_SIDE / max(width, height, 1))
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    if scale < 1.0:
        track = _scaled(track, scale)
    return next(iter(pose.render_openpose(track, size)))


def _scaled(track, scale: float):
    out = track.copy()
    for name, arr in out.parts().items():
        arr[..., :2] *= scale
    out.width, out.height = round(track.width * scale), round(track.height * scale)
    return out


def preview_png(job: Job, job_dir: Path, worker_info: dict) -> Path:
    """Path of the cached preview PNG, rendering it first if needed."""
    from kinemate.io import write_image

    path = job_dir / "preview.png"
    if not path.is_file():
        try:
            image = render_preview(job, job_dir, worker_info)
        except UploadRejected:
            raise
        except KinemateError as exc:
            raise UploadRejected(f"no pose preview for this job: {exc}") from exc
        write_image(path, image)
    return path
