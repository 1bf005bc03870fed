"""From a driving input to control frames: extract -> clean up -> retarget -> render.

:func:`control_frames_from_driving` is what ``animate_file`` uses when the control is "pose":
it accepts a driving video, a folder of frames, or a pose JSON (kinemate or OpenPose), and
yields OpenPose-style control maps framed exactly like the reference photo.
:func:`densepose_frames` passes a DensePose (IUV) video through with the same framing.
Previews draw skeletons over the driving video or over the reference photo.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kinemate.errors import NoPersonError
from kinemate.pose.backends import PoseBackend
from kinemate.pose.extract import detect_reference_pose, extract_pose
from kinemate.pose.openpose_json import is_pose_file, load_pose
from kinemate.pose.people import person_box
from kinemate.pose.render import ControlFrames, frame_parts, map_parts, overlay
from kinemate.pose.retarget import retarget as retarget_track
from kinemate.pose.temporal import DEFAULT_MIN_CONF, fill_gaps, gate_confidence, hold_person, smooth_track
from kinemate.pose.track import PoseTrack


def load_driving_track(
    driving: str | os.PathLike[str] | PoseTrack,
    *,
    backend: str | PoseBackend = "mediapipe",
    select: str | int = "largest",
    smooth: bool = True,
    max_frames: int | None = None,
    fps: float | None = None,
    progress: bool = True,
    min_conf: float = DEFAULT_MIN_CONF,
    callback: Callable[[int, int | None], None] | None = None,
) -> PoseTrack:
    """The cleaned-up pose track of a driving input, at ``fps`` frames per second if given
    (for a folder of frames or a pose file; default: the file's own rate, 25 for a folder
    and OpenPose JSON): a video/folder (extracted), a pose JSON
    (kinemate JSON is used as saved apart from gating and gap filling; OpenPose JSON is also
    smoothed), or a PoseTrack. Raises :class:`NoPersonError` if no frame shows a person.
    ``callback(done, total)``: called per extracted frame (see :func:`extract_pose`)."""
    if isinstance(driving, PoseTrack):
        track = driving
        if fps:
            track = track.copy()
            track.fps = float(fps)
    elif is_pose_file(driving):
        track = load_pose(driving, select=select, fps=fps)
        if max_frames:
            track = track.subset(slice(0, max_frames))
        if track.meta.get("imported") == "openpose":
            track = smooth_track(track, min_conf=min_conf, smooth=smooth)
        else:
            track = fill_gaps(gate_confidence(track, min_conf), 5, min_conf)
    else:
        return extract_pose(driving, backend=backend, select=select, smooth=smooth, fps=fps,
                            max_frames=max_frames, progress=progress, min_conf=min_conf,
                            callback=callback)  # fmt: skip
    if len(track) == 0 or not track.present(min_conf).any():
        raise NoPersonError(
            f"the pose file {driving} has no frame with a person (all keypoints missing or "
            "invalid); re-create it with 'kinemate pose VIDEO -o FILE.json'"
        )
    return track


def prepare_controls_track(
    track: PoseTrack,
    reference_rgb: np.ndarray | None,
    *,
    retarget: bool = True,
    reference_pose: PoseTrack | None = None,
    backend: str | PoseBackend = "mediapipe",
    min_conf: float = DEFAULT_MIN_CONF,
    select: str | int = "largest",
) -> PoseTrack:
    """Hold the person through frames where they are missing, then retarget to the reference
    (unless ``retarget`` is False or the track is already retargeted). ``select`` picks the
    person in the reference photo if it shows several."""
    track = hold_person(track)
    if not retarget or track.meta.get("retargeted"):
        return track
    if reference_pose is None:
        if reference_rgb is None:
            raise ValueError("retargeting needs reference_rgb or reference_pose")
        reference_pose = detect_reference_pose(reference_rgb, backend=backend, min_conf=min_conf, select=select)
    return retarget_track(track, reference_pose, min_conf=min_conf)


def reference_framing(
    reference_wh: tuple[int, int], dst_wh: tuple[int, int], fit: str = "crop",
    reference_pose: PoseTrack | None = None,
) -> Any:
    """How the reference photo (and the control maps drawn in its pixels) is fitted onto
    ``dst_wh``: with ``fit="crop"`` and the person of ``reference_pose`` known, the crop that
    keeps the whole person, centred on them (:func:`~kinemate.pose.people.person_box`, and
    ``keep_box`` of :meth:`kinemate.io.Framing.compute`: it shows black bars only where the
    person does not fit otherwise, then ``framing.letterboxed`` is True); else the plain
    ``fit``."""
    from kinemate.io import Framing

    box = person_box(reference_pose) if reference_pose is not None and fit == "crop" else None
    return Framing.compute(tuple(reference_wh), tuple(dst_wh), fit, keep_box=box)  # type: ignore[arg-type]


def _person_if_any(reference_rgb: np.ndarray, **options: Any) -> PoseTrack | None:
    try:
        return detect_reference_pose(reference_rgb, **options)
    except NoPersonError:
        return None


def control_frames_from_driving(
    driving_path: str | os.PathLike[str] | PoseTrack,
    reference_rgb: np.ndarray,
    dst_wh: tuple[int, int],
    *,
    fit: str = "crop",
    retarget: bool = True,
    framing: Any | None = None,
    reference_pose: PoseTrack | None = None,
    backend: str | PoseBackend = "mediapipe",
    select: str | int = "largest",
    smooth: bool = True,
    hands: bool = True,
    face: bool = True,
    max_frames: int | None = None,
    fps: float | None = None,
    progress: bool = True,
    min_conf: float = DEFAULT_MIN_CONF,
    track_out: dict[str, PoseTrack] | None = None,
    callback: Callable[[int, int | None], None] | None = None,
    style: str = "v1.1",
) -> tuple[Iterator[np.ndarray], float, int]:
    """Control maps for animating ``reference_rgb`` (uint8 (H, W, 3)) with a driving input.

    ``driving_path``: a video file, a folder of frames, a pose JSON (kinemate or OpenPose; a
    folder of OpenPose files), or a :class:`PoseTrack`. Returns ``(frames, fps, num_frames)``
    where ``frames`` is a :class:`~kinemate.pose.render.ControlFrames`: uint8 (dst_h, dst_w, 3)
    OpenPose maps rendered lazily, usable as an iterator or as a sequence (``len``, ``[i]``).

    With ``retarget`` (default) the motion is fitted to the reference person and drawn through
    ``framing`` — the :class:`kinemate.io.Framing` applied to the reference photo (default
    :func:`reference_framing`: with ``fit="crop"`` a crop that keeps the whole reference
    person) — so skeleton and photo line up; ``frames.framing`` is the one used. The
    reference photo is looked at first: without a person in it, :class:`NoPersonError` comes
    before the driving video is read. Without ``retarget``, the driving pose is framed from
    the driving size with the same ``fit``. ``fps`` sets the frame rate of a folder of
    frames or a pose file (see :func:`load_driving_track`). ``select``
    ("largest", "central", N-th from the left) picks the person in the driving input and in
    the reference photo. Frames without
    a person repeat the nearest person frame (never a blank map). ``track_out``, if given,
    receives ``{"driving": ..., "controls": ...}`` tracks (for previews and saving).
    ``callback(done, total)`` is called after each driving frame the pose is extracted from;
    it may raise to stop (cancel) the extraction.
    """
    from kinemate.io import Framing

    driving = driving_path
    if not isinstance(driving, PoseTrack) and is_pose_file(driving):  # cheap: read it first
        driving = load_driving_track(driving, select=select, smooth=smooth, fps=fps,
                                     max_frames=max_frames, min_conf=min_conf)
    prepared = isinstance(driving, PoseTrack) and bool(driving.meta.get("retargeted"))
    if retarget and reference_pose is None and not prepared:
        # the photo first: no person in it fails now, not after the whole driving video
        reference_pose = detect_reference_pose(reference_rgb, backend=backend,
                                               min_conf=min_conf, select=select)
    track = load_driving_track(driving, backend=backend, select=select, smooth=smooth, fps=fps,
                               max_frames=max_frames, progress=progress, min_conf=min_conf,
                               callback=callback)  # fmt: skip
    controls = prepare_controls_track(track, reference_rgb, retarget=retarget, reference_pose=reference_pose,
                                      backend=backend, min_conf=min_conf, select=select)  # fmt: skip
    if track_out is not None:
        track_out["driving"] = track
        track_out["controls"] = controls
    dst = (int(dst_wh[0]), int(dst_wh[1]))
    # without a reference photo (a text-conditioned model) the pose stays in its own frame
    in_reference_space = reference_rgb is not None and (
        retarget or bool(controls.meta.get("retargeted")))
    if in_reference_space:
        ref_wh = (reference_rgb.shape[1], reference_rgb.shape[0])
        if (controls.width, controls.height) != ref_wh:  # a retargeted JSON made for another photo
            controls = _rescale(controls, ref_wh)
        if framing is None:
            if reference_pose is None and fit == "crop":  # a retargeted pose file
                reference_pose = _person_if_any(reference_rgb, backend=backend,
                                                min_conf=min_conf, select=select)
            framing = reference_framing(ref_wh, dst, fit, reference_pose)
    else:
        framing = Framing.compute(controls.size, dst, fit)  # type: ignore[arg-type]
    frames = ControlFrames(controls, dst, framing=framing, hands=hands, face=face,
                           min_conf=min_conf, style=style)
    return frames, controls.fps, len(controls)


def _rescale(track: PoseTrack, size_wh: tuple[int, int]) -> PoseTrack:
    from kinemate.io import Framing

    fr = Framing.compute(track.size, size_wh, "letterbox")
    out = track.copy()
    for name, arr in out.parts().items():
        arr[..., :2] = fr.map_points(arr[..., :2]).astype(np.float32)
    out.width, out.height = size_wh
    return out


def densepose_frames(
    driving_path: str | os.PathLike[str], dst_wh: tuple[int, int], *, fit: str = "crop",
    framing: Any | None = None, max_frames: int | None = None, fps: float | None = None,
) -> tuple[Iterator[np.ndarray], float, int | None]:  # fmt: skip
    """A DensePose (IUV) video passed through with an aspect-preserving fit (nearest-neighbour
    resampling, so part labels are never blended). ``framing`` defaults to
    ``Framing.compute(video size, dst_wh, fit)``. ``fps``: the frame rate of a folder of
    frames (default 25)."""
    from kinemate.io import Framing, open_video

    reader = open_video(driving_path, fps=fps)
    fr = framing or Framing.compute((reader.width, reader.height), tuple(dst_wh), fit)  # type: ignore[arg-type]
    n = reader.num_frames if not max_frames else min(max_frames, reader.num_frames or max_frames)

    def gen() -> Iterator[np.ndarray]:
        with reader:
            for i, frame in enumerate(reader):
                if max_frames and i >= max_frames:
                    break
                yield fr.apply(frame, resample="nearest")

    return gen(), reader.fps, n


# --- previews -----------------------------------------------------------------------------------
def write_overlay_video(video_path: str | os.PathLike[str], track: PoseTrack, out_path: str | os.PathLike[str],
                        *, marker: Any = None) -> Path:
    """The skeleton of ``track`` drawn over the frames of the video it was extracted from.
    ``marker`` (io marker protocol) marks every frame, as for any output."""
    from kinemate.io import VideoWriter, open_video, read_image

    src = Path(video_path)
    out = Path(out_path)
    if src.is_file() and src.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"):
        from kinemate.io import write_video

        picture = overlay(read_image(src), frame_parts(track, 0))
        if out.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"):
            _write_still(out, picture, marker)
        else:
            write_video(out, [picture], track.fps, marker=marker)
        return out
    with open_video(src) as reader, VideoWriter(out, reader.fps, marker=marker) as writer:
        for i, frame in enumerate(reader):
            if i >= len(track):
                break
            writer.write(overlay(frame, frame_parts(track, i)))
    return out


def write_reference_preview(
    reference_rgb: np.ndarray, track: PoseTrack, out_path: str | os.PathLike[str], *, marker: Any = None
) -> Path:
    """The retargeted skeleton over the reference photo: a video (one frame per pose frame) for
    a video suffix, else one image of the first frame. ``marker`` marks every frame."""
    from kinemate.io import VideoWriter

    out = Path(out_path)
    ref_wh = (reference_rgb.shape[1], reference_rgb.shape[0])
    if track.size != ref_wh:
        track = _rescale(track, ref_wh)
    if out.suffix.lower() in (".mp4", ".mov", ".gif", ".webm", ".mkv", ""):
        with VideoWriter(out, track.fps, marker=marker) as writer:
            for i in range(len(track)):
                writer.write(overlay(reference_rgb, frame_parts(track, i)))
        return out
    _write_still(out, overlay(reference_rgb, map_parts(frame_parts(track, 0), None)), marker)
    return out


def _write_still(out: Path, picture: np.ndarray, marker: Any) -> None:
    """One image, marked (``marker.mark``, then ``marker.finalize`` before the rename)."""
    from kinemate.io import write_image
    from kinemate.io.atomic import atomic_path

    if marker is None:
        write_image(out, picture)
        return
    with atomic_path(out) as tmp:
        write_image(tmp, marker.mark(picture))
        marker.finalize(tmp)
