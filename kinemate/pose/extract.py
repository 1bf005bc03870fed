"""Pose extraction: a video, an image folder or a photo -> :class:`PoseTrack`.

Frames stream through a backend (MediaPipe by default, see :mod:`kinemate.pose.backends`);
per frame every person found is a candidate, and one person is chosen and followed (see
:mod:`kinemate.pose.people`). The raw track is then cleaned up (confidence gating, short-gap
filling, One-Euro smoothing; :mod:`kinemate.pose.temporal`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from kinemate.errors import InputError, NoPersonError
from kinemate.pose.backends import PoseBackend, get_backend
from kinemate.pose.people import Candidate, follow_person, rank_candidates, track_from_candidates
from kinemate.pose.temporal import (DEFAULT_MIN_CONF, MIN_BODY_SIZE, MIN_RUN, gate_confidence,
                                    keep_plausible_bodies, smooth_track)
from kinemate.pose.track import PoseTrack

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def iter_candidates(
    frames: Iterable[np.ndarray],
    backend: PoseBackend,
    *,
    total: int | None = None,
    progress: bool = True,
    desc: str = "pose",
    callback: Callable[[int, int | None], None] | None = None,
) -> Iterator[list[Candidate]]:
    """Run ``backend`` over uint8 (H, W, 3) RGB frames, yielding the people found in each.
    ``callback(done, total)`` is called after each frame; it may raise to stop the run."""
    with tqdm(total=total, disable=not progress, desc=desc, unit="frame", file=sys.stderr, leave=False) as bar:
        for done, frame in enumerate(frames, 1):
            yield backend.detect(frame)
            bar.update(1)
            if callback is not None:
                callback(done, total)


def extract_pose(
    source: str | os.PathLike[str] | np.ndarray,
    *,
    backend: str | PoseBackend = "mediapipe",
    select: str | int = "largest",
    max_people: int = 2,
    max_frames: int | None = None,
    smooth: bool = True,
    min_conf: float = DEFAULT_MIN_CONF,
    max_gap: int = 5,
    fps: float | None = None,
    progress: bool = True,
    require_person: bool = True,
    hands: bool = True,
    face: bool = True,
    workers: int = 1,
    callback: Callable[[int, int | None], None] | None = None,
) -> PoseTrack:
    """Extract one person's pose track from a video file, an image folder, an image file, or
    frames in memory (uint8 (H, W, 3) or (F, H, W, 3) RGB).

    ``select``: which person when several are seen — "largest", "central" or n (n-th from the
    left), then followed over time. ``max_people``: how many people the MediaPipe backend looks
    for per frame (1 is fastest). ``hands``/``face``: also extract them (both False: body
    only, faster; applies to a backend built here from its name). ``workers`` > 1: split a
    video into that many chunks extracted by parallel processes (see
    :mod:`kinemate.pose.parallel`; a backend given by name only). ``smooth``: One-Euro
    smoothing (gating and gap filling always run). ``callback(done, total)`` is called after
    each frame is analysed (``total`` None when unknown; with ``workers`` > 1 it is not
    called); it may raise (e.g. to cancel), which stops the extraction and closes the video.
    Raises :class:`NoPersonError` if ``require_person`` and nobody is found in any frame.
    """
    own = isinstance(backend, str)
    if own and workers > 1 and not isinstance(source, np.ndarray) and not _is_image_file(Path(source)):
        from kinemate.io import probe_video
        from kinemate.pose.parallel import extract_candidates_parallel

        info = probe_video(source, fps=fps)
        if info.num_frames and info.num_frames > 1:
            options = {"max_people": max_people, "video": True, "hands": hands, "face": face}
            cands = extract_candidates_parallel(str(source), info.num_frames, workers=workers, backend=backend,  # type: ignore[arg-type]
                                                options=options, fps=fps, max_frames=max_frames,
                                                progress=progress)  # fmt: skip
            return _finish(cands, info.width, info.height, info.fps, str(source), str(backend), select,
                           min_conf=min_conf, max_gap=max_gap, smooth=smooth, require_person=require_person,
                           faces=face)  # fmt: skip
    if own:
        is_still = isinstance(source, np.ndarray) and source.ndim == 3 or (
            not isinstance(source, np.ndarray) and _is_image_file(Path(source))
        )
        be = get_backend(backend, max_people=max_people, video=not is_still, hands=hands, face=face)
    else:
        be = backend
        be.reset()
    try:
        frames, width, height, rate, total, name = _open_frames(source, fps=fps, max_frames=max_frames)
        try:
            cands = list(iter_candidates(frames, be, total=total, progress=progress, callback=callback))
        finally:
            getattr(frames, "close", lambda: None)()  # a generator: closes its video reader now
    finally:
        if own:
            be.close()
    return _finish(cands, width, height, rate, name, be.name, select,
                   min_conf=min_conf, max_gap=max_gap, smooth=smooth, require_person=require_person,
                   faces=bool(getattr(be, "face", False)))  # fmt: skip


def _finish(
    cands: list[list[Candidate]], width: int, height: int, rate: float, name: str, backend_name: str,
    select: str | int, *, min_conf: float, max_gap: int, smooth: bool, require_person: bool,
    faces: bool = False,
) -> PoseTrack:  # fmt: skip
    """Follow one person through the per-frame candidates, then clean the track up. ``faces``:
    the backend looked for faces (a plausible person then shows one, or a whole body)."""
    if not cands:
        raise InputError(f"{name} has no frames; pass a video with at least one frame")
    chosen = follow_person(cands, (width, height), select)
    track = track_from_candidates(chosen, width, height, rate, source=name, backend=backend_name, select=select)
    found = ""
    if require_person:  # a driving input: what was "found" must be a plausible body
        track, report = keep_plausible_bodies(track, min_conf, faces=faces)
        if report["seen"]:
            found = (f": a pose was detected in {report['seen']} frame(s), but not a plausible "
                     f"person ({_rejected(report)})")
    if require_person and not track.present(min_conf).any():
        raise NoPersonError(
            f"no person was found in {name} ({len(track)} frame(s)){found}; use a video/photo "
            "where one person is clearly visible (whole upper body, not too small); a DensePose "
            "rendering is not a person video — animate with it using `control=densepose`"
        )
    return smooth_track(track, min_conf=min_conf, max_gap=max_gap, smooth=smooth)


def _rejected(report: dict[str, int]) -> str:
    """Why the detections of :func:`keep_plausible_bodies` were dropped, in words."""
    why = {"small": f"smaller than {MIN_BODY_SIZE:.0%} of the picture",
           "short": f"seen for fewer than {MIN_RUN} frames in a row",
           "fragment": "too few joints for a body",
           "inconsistent": "body proportions jumping from frame to frame",
           "faceless": "no face, and too little of a body"}
    return "; ".join(f"{report[key]}: {text}" for key, text in why.items() if report[key])


def _open_frames(
    source: str | os.PathLike[str] | np.ndarray, *, fps: float | None, max_frames: int | None
) -> tuple[Iterable[np.ndarray], int, int, float, int | None, str]:
    """(frames iterator, width, height, fps, frame count or None, name) for any source."""
    if isinstance(source, np.ndarray):
        arr = source[None] if source.ndim == 3 else source
        if arr.ndim != 4 or arr.shape[-1] < 3 or arr.dtype != np.uint8:
            raise InputError(f"frames must be uint8 (F, H, W, 3), got {arr.dtype} {arr.shape}")
        arr = arr[:max_frames] if max_frames else arr
        return iter(arr), arr.shape[2], arr.shape[1], float(fps or 25.0), len(arr), "frames"
    path = Path(source)
    if _is_image_file(path):
        from kinemate.io import read_image

        img = read_image(path)
        return iter([img]), img.shape[1], img.shape[0], float(fps or 25.0), 1, str(path)
    from kinemate.io import open_video

    reader = open_video(path, fps=fps)
    total = reader.num_frames
    if max_frames:
        total = min(total, max_frames) if total else max_frames

    def gen() -> Iterator[np.ndarray]:
        with reader:
            for i, frame in enumerate(reader):
                if max_frames and i >= max_frames:
                    break
                yield frame

    return gen(), reader.width, reader.height, float(reader.fps), total, str(path)


def detect_reference_pose(
    image: np.ndarray,
    *,
    backend: str | PoseBackend = "mediapipe",
    select: str | int = "largest",
    min_conf: float = DEFAULT_MIN_CONF,
    what: str = "the reference photo",
) -> PoseTrack:
    """The pose of the person in one uint8 (H, W, 3) RGB photo, as a 1-frame track.

    Raises :class:`NoPersonError` if nobody (or only a fragment: fewer than 3 joints including
    the neck) is found.
    """
    own = isinstance(backend, str)
    be: PoseBackend = get_backend(backend, max_people=2, video=False) if own else backend  # type: ignore[arg-type]
    try:
        be.reset()
        cands = be.detect(np.ascontiguousarray(image[..., :3]))
    finally:
        if own:
            be.close()
    h, w = image.shape[:2]
    order = rank_candidates(cands, (w, h), select) if cands else []
    chosen: list[Candidate | None] = [cands[order[0]] if order else None]
    track = gate_confidence(track_from_candidates(chosen, w, h, 25.0, backend=be.name), min_conf)
    body = track.body[0]
    if not (body[1, 2] > 0 and (body[:, 2] > 0).sum() >= 3):
        raise NoPersonError(
            f"no person was found in {what}; use a photo where one person is clearly visible "
            "(at least head and shoulders, facing the camera), or pass `retarget=false`"
        )
    return track


def describe(track: PoseTrack) -> dict[str, Any]:
    """A short summary for logs and the CLI."""
    present = track.present()
    return {
        "frames": len(track),
        "frames_with_person": int(present.sum()),
        "size": f"{track.width}x{track.height}",
        "fps": round(track.fps, 3),
        "hands": int(((track.hand_left[..., 2] > 0).any(axis=1) | (track.hand_right[..., 2] > 0).any(axis=1)).sum()),
        "faces": int((track.face[..., 2] > 0).any(axis=1).sum()),
    }
