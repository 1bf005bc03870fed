"""The pose track: one person's keypoints over the frames of a video, and its JSON format.

A :class:`PoseTrack` holds, for F frames, arrays of ``(x, y, confidence)`` in pixels of an
image of ``width x height``:

* ``body``       (F, 18, 3) — OpenPose COCO-18 (see :mod:`kinemate.pose.skeleton`)
* ``hand_left``  (F, 21, 3) — the person's left hand, OpenPose hand-21
* ``hand_right`` (F, 21, 3)
* ``face``       (F, 70, 3) — OpenPose face-70

A keypoint that is missing (not detected, occluded, out of the image) has confidence 0; its x
and y are then meaningless (0 on disk). ``confidence`` (F,) is a per-frame score in [0, 1]
(detection quality, or after retargeting how much of the skeleton could be fitted).

The JSON format (``format: "kinemate.pose"``, ``version: 1``) is documented in docs/pose.md.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kinemate.errors import InputError
from kinemate.io.atomic import write_json_atomic as _write_json
from kinemate.pose.skeleton import NUM_BODY, NUM_FACE, NUM_HAND

FORMAT_NAME = "kinemate.pose"
FORMAT_VERSION = 1
SKELETON = {"body": "openpose-coco18", "hand": "openpose-hand21", "face": "openpose-face70"}

MAX_SIDE = 16384  # largest image side a pose file may refer to

PARTS: dict[str, int] = {
    "body": NUM_BODY,
    "hand_left": NUM_HAND,
    "hand_right": NUM_HAND,
    "face": NUM_FACE,
}


def _empty(num_frames: int, num_points: int) -> np.ndarray:
    return np.zeros((num_frames, num_points, 3), np.float32)


@dataclass
class PoseTrack:
    """One person's 2-D keypoints over F frames (arrays ``(F, K, 3)`` of x, y, confidence)."""

    body: np.ndarray
    hand_left: np.ndarray
    hand_right: np.ndarray
    face: np.ndarray
    width: int
    height: int
    fps: float = 25.0
    confidence: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.body)
        for name, k in PARTS.items():
            arr = np.asarray(getattr(self, name), np.float32)
            if arr.shape != (n, k, 3):
                raise ValueError(f"PoseTrack.{name} must be ({n}, {k}, 3), got {arr.shape}")
            bad = ~np.isfinite(arr).all(axis=-1)
            if bad.any():  # a keypoint with a non-finite number is missing
                arr = arr.copy()
                arr[bad] = 0.0
            setattr(self, name, arr)
        if self.confidence is None:
            self.confidence = self.present().astype(np.float32)
        self.confidence = np.asarray(self.confidence, np.float32).reshape(n)
        self.width, self.height, self.fps = int(self.width), int(self.height), float(self.fps)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, num_frames: int, width: int, height: int, fps: float = 25.0) -> PoseTrack:
        """A track of ``num_frames`` frames with no keypoints at all."""
        return cls(
            body=_empty(num_frames, NUM_BODY),
            hand_left=_empty(num_frames, NUM_HAND),
            hand_right=_empty(num_frames, NUM_HAND),
            face=_empty(num_frames, NUM_FACE),
            width=width,
            height=height,
            fps=fps,
        )

    def copy(self) -> PoseTrack:
        return PoseTrack(
            body=self.body.copy(),
            hand_left=self.hand_left.copy(),
            hand_right=self.hand_right.copy(),
            face=self.face.copy(),
            width=self.width,
            height=self.height,
            fps=self.fps,
            confidence=None if self.confidence is None else self.confidence.copy(),
            meta=dict(self.meta),
        )

    def subset(self, index: slice | np.ndarray | list[int]) -> PoseTrack:
        """The frames selected by ``index`` (a slice or a list of frame numbers)."""
        return PoseTrack(
            body=self.body[index],
            hand_left=self.hand_left[index],
            hand_right=self.hand_right[index],
            face=self.face[index],
            width=self.width,
            height=self.height,
            fps=self.fps,
            confidence=self.confidence[index],  # type: ignore[index]
            meta=dict(self.meta),
        )

    # --- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.body)

    @property
    def num_frames(self) -> int:
        return len(self.body)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image the coordinates refer to."""
        return (self.width, self.height)

    def parts(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in PARTS}

    def present(self, min_conf: float = 0.0) -> np.ndarray:
        """(F,) bool: frames with at least two body keypoints above ``min_conf``."""
        return (self.body[..., 2] > min_conf).sum(axis=1) >= 2

    def bbox(self, frame: int, min_conf: float = 0.0) -> tuple[float, float, float, float] | None:
        """(x0, y0, x1, y1) around the confident body keypoints of one frame, or None."""
        pts = self.body[frame]
        ok = pts[:, 2] > min_conf
        if ok.sum() < 2:
            return None
        xy = pts[ok, :2]
        return (float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max()))

    # --- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        frames = []
        for i in range(len(self)):
            entry: dict[str, Any] = {"index": i, "confidence": _num(self.confidence[i])}  # type: ignore[index]
            for name in PARTS:
                pts = getattr(self, name)[i]
                if name != "body" and not (pts[:, 2] > 0).any():
                    entry[name] = None
                else:
                    entry[name] = [[_num(x), _num(y), _num(c)] if c > 0 else [0, 0, 0] for x, y, c in pts]
            frames.append(entry)
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "skeleton": dict(SKELETON),
            "image_size": [self.width, self.height],
            "fps": self.fps,
            "num_frames": len(self),
            "meta": _jsonable(self.meta),
            "frames": frames,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the track as kinemate JSON (atomically: a temporary file renamed when complete)."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "pose JSON",
                  max_frames: int | None = None) -> PoseTrack:
        """Parse kinemate pose JSON. Non-finite numbers mark a keypoint missing (documented).

        More than ``max_frames`` frames raises :class:`TooManyFrames` before any frame is
        parsed. Time and memory are linear in the number of frames.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise InputError(
                f"{source} is not a kinemate pose file (no \"format\": \"{FORMAT_NAME}\"); "
                "pass a file written by 'kinemate pose' or an OpenPose JSON file/folder"
            )
        version = data.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InputError(
                f"{source} has pose format version {version!r}; this kinemate reads version "
                f"{FORMAT_VERSION} — re-export it with this kinemate or upgrade kinemate"
            )
        try:
            width, height = (int(v) for v in data["image_size"])
            fps = float(data.get("fps") or 25.0)
            frames = data["frames"]
            if not isinstance(frames, list):
                raise TypeError("frames is not a list")
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"{source} is missing or has a malformed 'image_size'/'fps'/'frames' ({exc}); "
                "re-create it with 'kinemate pose'"
            ) from None
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE) or not math.isfinite(fps) or fps <= 0:
            raise InputError(
                f"{source} has an invalid image_size {width}x{height} or fps {fps}; "
                "fix these fields or re-create the file with 'kinemate pose'"
            )
        check_frame_count(len(frames), max_frames, source)
        track = cls.empty(len(frames), width, height, fps)
        conf = np.full(len(frames), np.nan, np.float32)  # NaN: not given, from the keypoints
        for i, entry in enumerate(frames):
            if not isinstance(entry, dict):
                raise InputError(f"{source}: frame {i} is not an object; re-create the file")
            for name, k in PARTS.items():
                getattr(track, name)[i] = parse_points(entry.get(name), k, f"{source}: frame {i} {name}")
            c = _finite_or(entry.get("confidence"), None)
            if c is not None:
                conf[i] = float(np.clip(c, 0, 1))
        given = np.isfinite(conf)
        track.confidence = np.where(given, conf, track.present()).astype(np.float32)
        meta = data.get("meta")
        track.meta = dict(meta) if isinstance(meta, dict) else {}
        return track

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, max_frames: int | None = None) -> PoseTrack:
        """Read kinemate pose JSON (for OpenPose JSON use :func:`kinemate.pose.load_pose`)."""
        return cls.from_dict(read_json(path), source=str(path), max_frames=max_frames)


class TooManyFrames(InputError):
    """A pose file holds more frames than the caller allows (found before parsing them)."""

    def __init__(self, source: str, frames: int, limit: int):
        super().__init__(f"{source} has {frames} frames, above the limit of {limit} — "
                         "trim it (or split it) and try again")
        self.frames, self.limit = frames, limit


def check_frame_count(frames: int, max_frames: int | None, source: str) -> None:
    """Raise :class:`TooManyFrames` if ``frames`` is above ``max_frames`` (None: no limit)."""
    if max_frames is not None and frames > max_frames:
        raise TooManyFrames(source, frames, max_frames)


# --- helpers ------------------------------------------------------------------------------------
def parse_points(value: Any, count: int, where: str) -> np.ndarray:
    """Parse ``[[x, y, c], ...]`` (or a flat ``[x, y, c, ...]``) into (count, 3) float32.

    ``None`` / ``[]`` -> all missing. Non-finite values or negative confidences make that
    keypoint missing (confidence 0); confidences above 1 are clipped. A wrong number of points
    raises :class:`InputError`.
    """
    out = np.zeros((count, 3), np.float32)
    if value is None or (isinstance(value, list) and len(value) == 0):
        return out
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: keypoints are not numbers; re-create the pose file") from None
    if arr.ndim == 1 and arr.size == count * 3:
        arr = arr.reshape(count, 3)
    if arr.shape != (count, 3):
        raise InputError(
            f"{where}: expected {count} keypoints of [x, y, confidence], got shape {arr.shape}; "
            "re-create the pose file"
        )
    ok = np.isfinite(arr).all(axis=1) & (arr[:, 2] > 0)
    out[ok] = arr[ok]
    out[:, 2] = np.clip(out[:, 2], 0.0, 1.0)
    return out


def read_json(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"pose file {p} does not exist; check the path")
    try:
        with open(p, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{p} is not valid JSON ({exc}); pass a pose file written by 'kinemate pose' or OpenPose"
        ) from None


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write a pose JSON compactly (finite numbers only), atomically."""
    return _write_json(path, data, indent=None, allow_nan=False)


def _num(v: float) -> float:
    """A JSON number: 3 decimals, finite."""
    v = float(v)
    return round(v, 3) if math.isfinite(v) else 0.0


def _finite_or(v: Any, default: float | None) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if math.isfinite(f) else default


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return _num(obj)
    if isinstance(obj, (np.integer, int, bool)) or obj is None or isinstance(obj, str):
        return obj.item() if isinstance(obj, np.generic) else obj
    return str(obj)
