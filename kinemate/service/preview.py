"""Preview of a job's control: the first driving frame as the model will see it.

DensePose control: the first frame of the (already rendered IUV) driving video, framed like
the output. Pose control: the pose of the first frame (extracted from the video, or read
from the pose JSON), retargeted to the reference person and rendered as the OpenPose map the
model receives (:func:`kinemate.pose.control_frames_from_driving`). Cached as
``preview.png`` in the job folder; a preview that cannot be made is cached too, as
``preview-error.json`` (its message and status), so asking again costs nothing (making one
can take seconds of pose extraction, under a lock).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from kinemate.errors import KinemateError
from kinemate.pipeline.options import parse_size
from kinemate.service.media import UploadRejected
from kinemate.service.store import Job
from kinemate.service.worker import trim_heap

log = logging.getLogger("kinemate.service")
MAX_SIDE = 512
_lock = threading.Lock()  # pose extraction models are not re-entrant; previews are rare


def resolve_control(job: Job, worker_info: dict) -> str:
    """'densepose' or 'pose' for this job: the requested kind, or for 'auto' the kind of
    control the loaded model was trained on."""
    from kinemate.pipeline.animate import choose_control

    return choose_control(job.params.get("control", "auto"), worker_info.get("control_kind"),
                          pose_input=job.inputs["driving"]["kind"] == "pose")


def _size(job: Job, worker_info: dict) -> tuple[int, int]:
    w, h = parse_size(job.params.get("size")) or worker_info.get("default_size", (512, 512))
    scale = min(1.0, MAX_SIDE / max(w, h))
    return max(8, round(w * scale)), max(8, round(h * scale))


def render_preview(job: Job, job_dir: Path, worker_info: dict) -> np.ndarray:
    """uint8 (H, W, 3) RGB control map of the first frame, framed like the output."""
    from kinemate import pose
    from kinemate.io import read_image

    driving = job_dir / job.inputs["driving"]["file"]
    size = _size(job, worker_info)
    fit = job.params.get("fit", "crop")
    if resolve_control(job, worker_info) == "densepose":
        frames, _fps, _n = pose.densepose_frames(driving, size, fit=fit, max_frames=1)
    else:
        ref = job.inputs.get("reference")  # none for a text-conditioned model
        reference = read_image(job_dir / ref["file"]) if ref else None
        with _lock:
            frames, _fps, _n = pose.control_frames_from_driving(
                driving, reference, size, fit=fit, max_frames=1, progress=False,
                retarget=job.params.get("retarget", True) and reference is not None,
                **worker_info.get("pose_render", {}))
    for frame in frames:
        return frame
    raise UploadRejected("the driving input has no frame to preview")


ERROR_FILE = "preview-error.json"


def preview_png(job: Job, job_dir: Path, worker_info: dict) -> Path:
    """Path of the cached preview PNG, rendering it first if needed; raises
    :class:`UploadRejected` when no preview can be made (the first failure is cached)."""
    from kinemate.io import write_image
    from kinemate.io.atomic import write_json_atomic

    path = job_dir / "preview.png"
    if path.is_file():
        return path
    failed = _cached_failure(job_dir / ERROR_FILE)
    if failed is not None:
        raise failed
    try:
        image = render_preview(job, job_dir, worker_info)
    except Exception as exc:  # noqa: BLE001 - every failure is answered, and cached
        trim_heap()
        if isinstance(exc, UploadRejected):
            failed = UploadRejected(str(exc), exc.status)
        elif isinstance(exc, KinemateError):
            message = str(exc).replace(f"{job_dir}{os.sep}", "").replace(str(job_dir), "job")
            failed = UploadRejected(f"no pose preview for this job: {message}")
        else:  # a decoder/detector failure on odd input
            log.exception("job %s: preview failed", job.id)
            failed = UploadRejected(f"no pose preview could be made for this job "
                                    f"({type(exc).__name__}); the job itself may still run")
        write_json_atomic(job_dir / ERROR_FILE, {"detail": str(failed), "status": failed.status})
        raise failed from exc
    trim_heap()
    write_image(path, image)
    return path


def _cached_failure(path: Path) -> UploadRejected | None:
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        return UploadRejected(str(cached["detail"]), int(cached["status"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
