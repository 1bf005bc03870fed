"""OpenPose JSON import/export, and :func:`load_pose`, which reads any supported pose file.

OpenPose writes one file per frame (``<name>_000000000000_keypoints.json``)::

    {"version": 1.3, "people": [{"person_id": [-1],
        "pose_keypoints_2d": [x, y, c, ...],        # 18 (COCO) or 25 (BODY_25) points
        "face_keypoints_2d": [...],                  # 70 points or []
        "hand_left_keypoints_2d": [...],             # 21 points or []
        "hand_right_keypoints_2d": [...]}, ...]}

ControlNet tools add ``canvas_width``/``canvas_height`` and sometimes store coordinates
normalised to [0, 1]. kinemate reads a folder of such files (sorted by name), one such file,
or one JSON array of them; writes a folder (one file per frame) or a single JSON array.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kinemate.errors import InputError, UsageError
from kinemate.pose.people import Candidate, follow_person, track_from_candidates
from kinemate.pose.skeleton import (
    BODY25_FROM_COCO18,
    BODY25_MID_HIP,
    L_HIP,
    L_SHOULDER,
    NECK,
    NUM_BODY,
    NUM_BODY25,
    NUM_FACE,
    NUM_HAND,
    R_HIP,
    R_SHOULDER,
)
from kinemate.pose.track import (
    FORMAT_NAME,
    MAX_SIDE,
    PoseTrack,
    check_frame_count,
    parse_points,
    read_json,
    write_json_atomic,
)

OPENPOSE_KEYS = {
    "hand_left": "hand_left_keypoints_2d",
    "hand_right": "hand_right_keypoints_2d",
    "face": "face_keypoints_2d",
}


# --- export -------------------------------------------------------------------------------------
def _flat(pts: np.ndarray) -> list[float]:
    out: list[float] = []
    for x, y, c in pts:
        out.extend([round(float(x), 3), round(float(y), 3), round(float(c), 4)] if c > 0 else [0.0, 0.0, 0.0])
    return out


def coco18_to_body25(body: np.ndarray) -> np.ndarray:
    """(18, 3) COCO-18 -> (25, 3) BODY_25; mid-hip is the hip midpoint, feet are missing."""
    out = np.zeros((NUM_BODY25, 3), np.float32)
    for b25, c18 in BODY25_FROM_COCO18.items():
        out[b25] = body[c18]
    rh, lh = body[R_HIP], body[L_HIP]
    if rh[2] > 0 and lh[2] > 0:
        out[BODY25_MID_HIP] = [(rh[0] + lh[0]) / 2, (rh[1] + lh[1]) / 2, min(rh[2], lh[2])]
    return out


def body25_to_coco18(body25: np.ndarray) -> np.ndarray:
    out = np.zeros((NUM_BODY, 3), np.float32)
    for b25, c18 in BODY25_FROM_COCO18.items():
        out[c18] = body25[b25]
    return out


def to_openpose_frames(track: PoseTrack, *, body_format: str = "coco18") -> list[dict[str, Any]]:
    """One OpenPose JSON object per frame (``people`` is empty where no person was seen)."""
    if body_format not in ("coco18", "body25"):
        raise UsageError(f"unknown OpenPose body format {body_format!r}; use 'coco18' or 'body25'")
    frames = []
    present = track.present()
    for i in range(len(track)):
        people = []
        if present[i] or (track.hand_left[i, :, 2] > 0).any() or (track.hand_right[i, :, 2] > 0).any():
            body = track.body[i] if body_format == "coco18" else coco18_to_body25(track.body[i])
            person: dict[str, Any] = {"person_id": [-1], "pose_keypoints_2d": _flat(body)}
            for name, key in OPENPOSE_KEYS.items():
                pts = getattr(track, name)[i]
                person[key] = _flat(pts) if (pts[:, 2] > 0).any() else []
            for key in ("pose_keypoints_3d", "face_keypoints_3d", "hand_left_keypoints_3d", "hand_right_keypoints_3d"):
                person[key] = []
            people.append(person)
        frames.append(
            {"version": 1.3, "people": people, "canvas_width": track.width, "canvas_height": track.height}
        )
    return frames


def save_openpose(
    track: PoseTrack, path: str | os.PathLike[str], *, body_format: str = "coco18", name: str | None = None
) -> Path:
    """Write OpenPose JSON: a folder of per-frame files if ``path`` has no ``.json`` suffix
    (``<name>_000000000000_keypoints.json``, ...), else one JSON array of per-frame objects."""
    path = Path(path)
    frames = to_openpose_frames(track, body_format=body_format)
    if path.suffix.lower() == ".json":
        return write_json_atomic(path, frames)
    path.mkdir(parents=True, exist_ok=True)
    stem = name or "frame"
    for i, frame in enumerate(frames):
        write_json_atomic(path / f"{stem}_{i:012d}_keypoints.json", frame)
    return path


# --- import -------------------------------------------------------------------------------------
def _person_to_candidate(person: Any, where: str) -> Candidate:
    if not isinstance(person, dict):
        raise InputError(f"{where}: a person entry is not an object; check the OpenPose JSON")
    raw = person.get("pose_keypoints_2d") or []
    if not isinstance(raw, list):
        raise InputError(f"{where}: pose_keypoints_2d is not a list; check the OpenPose JSON")
    if len(raw) == NUM_BODY25 * 3:
        body = body25_to_coco18(parse_points(raw, NUM_BODY25, where))
    elif len(raw) in (0, NUM_BODY * 3):
        body = parse_points(raw, NUM_BODY, where)
    else:
        raise InputError(
            f"{where}: pose_keypoints_2d has {len(raw)} numbers; expected 54 (COCO-18) or 75 "
            "(BODY_25) — other OpenPose body models are not supported"
        )
    rs, ls = body[R_SHOULDER], body[L_SHOULDER]
    if body[NECK, 2] <= 0 and rs[2] > 0 and ls[2] > 0:  # the neck is the shoulders' midpoint
        body[NECK] = ((rs[0] + ls[0]) / 2, (rs[1] + ls[1]) / 2, min(rs[2], ls[2]))
    cand: Candidate = {"body": body}
    for name, key in OPENPOSE_KEYS.items():
        k = NUM_FACE if name == "face" else NUM_HAND
        cand[name] = parse_points(person.get(key) or [], k, f"{where} {key}")
    return cand


def _frame_list(data: Any, source: str) -> list[Any]:
    if isinstance(data, dict) and "people" in data:
        return [data]
    if isinstance(data, list) and data and all(isinstance(f, dict) and "people" in f for f in data):
        return data
    raise InputError(
        f"{source} is neither kinemate pose JSON nor OpenPose JSON (no 'people' list); "
        "pass a file written by 'kinemate pose' or by OpenPose"
    )


def _canvas(frames: Sequence[Any]) -> tuple[int, int] | None:
    for f in frames:
        w, h = f.get("canvas_width"), f.get("canvas_height")
        try:
            w, h = int(w), int(h)
        except (TypeError, ValueError):
            continue
        if w > 0 and h > 0:
            return w, h
    return None


def openpose_frames_to_track(
    frames: Sequence[Any],
    *,
    source: str = "OpenPose JSON",
    image_size: tuple[int, int] | None = None,
    fps: float = 25.0,
    select: str | int = "largest",
    max_frames: int | None = None,
) -> PoseTrack:
    """Convert parsed OpenPose frame objects to a :class:`PoseTrack`.

    Several people in a frame: one is chosen and followed (``select``, see
    :mod:`kinemate.pose.people`). The image size comes from ``image_size``, else from
    ``canvas_width``/``canvas_height``, else it is inferred from the keypoints' extent (recorded
    in ``meta["image_size_inferred"]``). Coordinates all within [0, 1] are taken as normalised.
    """
    check_frame_count(len(frames), max_frames, source)
    cands: list[list[Candidate]] = []
    for i, frame in enumerate(frames):
        people = frame.get("people")
        if not isinstance(people, list):
            raise InputError(f"{source}: frame {i} has no 'people' list; check the OpenPose JSON")
        cands.append([_person_to_candidate(p, f"{source}: frame {i}") for p in people])
    size = image_size or _canvas(frames)
    if size is not None and not (0 < size[0] <= MAX_SIDE and 0 < size[1] <= MAX_SIDE):
        raise InputError(f"{source}: image size {size[0]}x{size[1]} is out of range (1..{MAX_SIDE}); "
                         "fix canvas_width/canvas_height")
    all_pts = [
        p[p[:, 2] > 0, :2] for fc in cands for c in fc for p in c.values() if (p[:, 2] > 0).any()
    ]
    xy = np.concatenate(all_pts) if all_pts else np.zeros((0, 2), np.float32)
    normalized = len(xy) > 0 and float(np.abs(xy).max()) <= 1.0
    inferred = False
    if size is None:
        if len(xy) == 0 or normalized:
            size = (512, 512)
        else:
            size = tuple(min(MAX_SIDE, max(8, int(math.ceil(float(v) * 1.05 / 8.0) * 8)))  # type: ignore[assignment]
                         for v in xy.max(axis=0))
        inferred = True
    if normalized:
        scale = np.array([size[0], size[1]], np.float32)
        for fc in cands:
            for c in fc:
                for p in c.values():
                    p[:, :2] *= scale
    chosen = follow_person(cands, size, select)  # type: ignore[arg-type]
    track = track_from_candidates(chosen, size[0], size[1], fps, source=source, imported="openpose")
    if inferred:
        track.meta["image_size_inferred"] = True
    return track


_FRAME_NUM = re.compile(r"(\d+)")


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in _FRAME_NUM.split(p.name)]


def load_openpose(
    path: str | os.PathLike[str],
    *,
    image_size: tuple[int, int] | None = None,
    fps: float = 25.0,
    select: str | int = "largest",
    max_frames: int | None = None,
) -> PoseTrack:
    """Read OpenPose JSON: a folder of per-frame files, one file, or one JSON array of frames.
    More than ``max_frames`` frames raises :class:`TooManyFrames` before they are parsed."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"), key=_natural_key)
        if not files:
            raise InputError(f"{path} holds no .json files; pass a folder of OpenPose per-frame JSON files")
        check_frame_count(len(files), max_frames, str(path))  # each file holds a frame or more
        frames = []
        for f in files:
            frames.extend(_frame_list(read_json(f), str(f)))
    else:
        frames = _frame_list(read_json(path), str(path))
    if not frames:
        raise InputError(f"{path} holds no frames; pass a pose file with at least one frame")
    return openpose_frames_to_track(frames, source=str(path), image_size=image_size, fps=fps, select=select,
                                    max_frames=max_frames)


def is_pose_file(path: str | os.PathLike[str]) -> bool:
    """True for a ``.json`` file or a folder holding ``.json`` files (not images)."""
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() == ".json"
    if p.is_dir():
        return any(p.glob("*.json")) and not any(
            q.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp") for q in p.iterdir()
        )
    return False


def load_pose(
    path: str | os.PathLike[str],
    *,
    image_size: tuple[int, int] | None = None,
    fps: float | None = None,
    select: str | int = "largest",
    max_frames: int | None = None,
) -> PoseTrack:
    """Read a pose file of any supported kind: kinemate JSON, an OpenPose JSON file or array,
    or a folder of OpenPose per-frame files. More than ``max_frames`` frames raises
    :class:`~kinemate.pose.track.TooManyFrames` (an :class:`InputError`) before any frame is
    parsed."""
    p = Path(path)
    if p.is_file():
        data = read_json(p)
        if isinstance(data, dict) and data.get("format") == FORMAT_NAME:
            track = PoseTrack.from_dict(data, source=str(p), max_frames=max_frames)
            if fps:
                track.fps = float(fps)
            return track
        frames = _frame_list(data, str(p))
        return openpose_frames_to_track(frames, source=str(p), image_size=image_size, fps=fps or 25.0, select=select,
                                        max_frames=max_frames)
    if p.is_dir():
        return load_openpose(p, image_size=image_size, fps=fps or 25.0, select=select, max_frames=max_frames)
    raise InputError(f"pose file {p} does not exist; check the path")
