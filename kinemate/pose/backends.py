"""Pose estimation backends: a small interface, a registry, and the bundled MediaPipe backend.

A backend turns one RGB image into a list of *candidates* (the people it found), each a dict
of ``(K, 3)`` arrays (x, y, confidence in pixels) in kinemate's skeleton (see
:mod:`kinemate.pose.skeleton`)::

    class PoseBackend(Protocol):
        name: str
        def detect(self, image: np.ndarray) -> list[Candidate]: ...   # uint8 (H, W, 3) RGB
        def reset(self) -> None: ...      # forget tracking state (a new video starts)
        def close(self) -> None: ...

Register another estimator with ``register_backend("name", factory)``; ``get_backend(name,
**options)`` builds one. Built in:

* ``mediapipe`` — MediaPipe 0.10.21 Holistic (pose + both hands + face mesh) with the models
  bundled in the wheel (pose landmark "full", complexity 1), CPU, offline; with
  ``hands=False, face=False`` the lighter Pose graph (body only). MediaPipe finds one
  person per pass; to see several people, the backend blanks out each person found and runs
  again (``max_people`` passes at most), which finds people that do not overlap much.
* ``dwpose`` — DWPose from user-supplied ONNX files. Checks that onnxruntime and the files are
  there and says what to install or where to put them; inference itself is not part of this
  version (see docs/pose.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kinemate.errors import UsageError, WeightsError
from kinemate.pose.people import Candidate, candidate_box
from kinemate.pose.skeleton import (
    COCO18_FROM_MEDIAPIPE33,
    FACE68_FROM_MEDIAPIPE468,
    FACE_LEFT_EYE,
    FACE_RIGHT_EYE,
    MEDIAPIPE_NECK_FROM,
    NECK,
    NUM_BODY,
    NUM_FACE,
    NUM_HAND,
)


@runtime_checkable
class PoseBackend(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Candidate]: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


_REGISTRY: dict[str, Callable[..., PoseBackend]] = {}


def register_backend(name: str, factory: Callable[..., PoseBackend]) -> None:
    """Make ``get_backend(name, **options)`` call ``factory(**options)``."""
    _REGISTRY[name] = factory


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def get_backend(name: str | PoseBackend = "mediapipe", **options: Any) -> PoseBackend:
    """Build the backend registered as ``name`` (an existing backend object is returned as is)."""
    if not isinstance(name, str):
        return name
    if name not in _REGISTRY:
        raise UsageError(f"unknown pose backend {name!r}; choose one of: {', '.join(available_backends())}")
    return _REGISTRY[name](**options)


# --- MediaPipe ----------------------------------------------------------------------------------
def _landmarks_xy(landmarks: Any, width: int, height: int) -> np.ndarray:
    lm = landmarks.landmark
    return np.array([(p.x * width, p.y * height) for p in lm], np.float32)


def _inside(xy: np.ndarray, width: int, height: int, margin: float = 0.02) -> np.ndarray:
    mx, my = margin * width, margin * height
    return (xy[:, 0] >= -mx) & (xy[:, 0] < width + mx) & (xy[:, 1] >= -my) & (xy[:, 1] < height + my)


def mediapipe_body(pose_landmarks: Any, width: int, height: int) -> np.ndarray:
    """MediaPipe's 33 pose landmarks -> (18, 3) COCO-18. Confidence = landmark visibility;
    landmarks MediaPipe places outside the image (guesses) get confidence 0."""
    xy = _landmarks_xy(pose_landmarks, width, height)
    vis = np.array([p.visibility for p in pose_landmarks.landmark], np.float32)
    vis = np.where(_inside(xy, width, height), vis, 0.0)
    body = np.zeros((NUM_BODY, 3), np.float32)
    for k, m in COCO18_FROM_MEDIAPIPE33.items():
        body[k] = (xy[m, 0], xy[m, 1], vis[m])
    a, b = MEDIAPIPE_NECK_FROM
    body[NECK] = ((xy[a, 0] + xy[b, 0]) / 2, (xy[a, 1] + xy[b, 1]) / 2, min(vis[a], vis[b]))
    return body


def mediapipe_hand(hand_landmarks: Any, width: int, height: int) -> np.ndarray:
    """21 MediaPipe hand landmarks (same order as OpenPose) -> (21, 3), confidence 1 inside."""
    if hand_landmarks is None:
        return np.zeros((NUM_HAND, 3), np.float32)
    xy = _landmarks_xy(hand_landmarks, width, height)
    conf = _inside(xy, width, height).astype(np.float32)
    return np.concatenate([xy, conf[:, None]], axis=1)


def mediapipe_face(face_landmarks: Any, width: int, height: int) -> np.ndarray:
    """468 face-mesh points -> (70, 3) OpenPose face-70 (see skeleton.FACE68_FROM_MEDIAPIPE468;
    pupils = centre of the six eye-contour points)."""
    if face_landmarks is None:
        return np.zeros((NUM_FACE, 3), np.float32)
    mesh = _landmarks_xy(face_landmarks, width, height)
    xy = np.zeros((NUM_FACE, 2), np.float32)
    xy[:68] = mesh[list(FACE68_FROM_MEDIAPIPE468)]
    xy[68] = xy[list(FACE_RIGHT_EYE)].mean(axis=0)
    xy[69] = xy[list(FACE_LEFT_EYE)].mean(axis=0)
    conf = _inside(xy, width, height).astype(np.float32)
    return np.concatenate([xy, conf[:, None]], axis=1)


@contextlib.contextmanager
def _native_logs_quiet():
    """Silence MediaPipe's C++ start-up lines (``W0000 ... inference_feedback_manager``, the
    XNNPACK delegate notice) that it writes straight to file descriptor 2, which users cannot
    act on. Kept when kinemate's debug logs are on (``-v``)."""
    if logging.getLogger("kinemate").isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr (embedded use): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class MediaPipeBackend:
    """MediaPipe Holistic (bundled models, CPU). See the module docstring."""

    name = "mediapipe"

    def __init__(
        self,
        *,
        max_people: int = 2,
        video: bool = True,
        hands: bool = True,
        face: bool = True,
        min_detection_confidence: float = 0.5,
        model_dir: object = None,  # unused: the MediaPipe models are bundled in the wheel
    ) -> None:
        try:
            import mediapipe as mp  # noqa: F401
        except ImportError as exc:  # pragma: no cover - mediapipe is a base requirement
            raise WeightsError(
                f"the mediapipe pose backend needs the 'mediapipe' package ({exc}); "
                "install it with 'pip install mediapipe==0.10.21'"
            ) from None
        if max_people < 1:
            raise UsageError(f"max_people must be at least 1, got {max_people}")
        self.max_people = int(max_people)
        self.video = video
        self.hands = hands
        self.face = face
        self.min_detection_confidence = float(min_detection_confidence)
        self._primary: Any = None
        self._extra: Any = None
        self._calls: dict[int, int] = {}

    def _holistic(self, static: bool) -> Any:
        with _native_logs_quiet():
            return self._new_graph(static)

    def _process(self, graph: Any, image: np.ndarray) -> Any:
        """``graph.process(image)``; the first frames of a graph quietly (its C++ side prints
        start-up notices on the first frame and on the first person it finds)."""
        seen = self._calls.get(id(graph), 0)
        if seen >= 3:
            return graph.process(image)
        self._calls[id(graph)] = seen + 1
        with _native_logs_quiet():
            return graph.process(image)

    def _new_graph(self, static: bool) -> Any:
        import mediapipe as mp

        if not (self.hands or self.face):  # body only: the pose graph alone is ~2-3x faster
            return mp.solutions.pose.Pose(
                static_image_mode=static,
                model_complexity=1,
                smooth_landmarks=True,
                min_detection_confidence=self.min_detection_confidence,
                min_tracking_confidence=0.5,
            )
        return mp.solutions.holistic.Holistic(
            static_image_mode=static,
            model_complexity=1,  # the only pose model bundled in the wheel ("full")
            smooth_landmarks=True,
            refine_face_landmarks=False,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=0.5,
        )

    def _to_candidate(self, result: Any, width: int, height: int) -> Candidate | None:
        if result.pose_landmarks is None:
            return None
        cand: Candidate = {"body": mediapipe_body(result.pose_landmarks, width, height)}
        # Holistic's left_hand is the person's left hand
        left = getattr(result, "left_hand_landmarks", None) if self.hands else None
        right = getattr(result, "right_hand_landmarks", None) if self.hands else None
        face = getattr(result, "face_landmarks", None) if self.face else None
        cand["hand_left"] = mediapipe_hand(left, width, height)
        cand["hand_right"] = mediapipe_hand(right, width, height)
        cand["face"] = mediapipe_face(face, width, height)
        return cand

    def detect(self, image: np.ndarray) -> list[Candidate]:
        """People in one uint8 (H, W, 3) RGB image, at most ``max_people``."""
        image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
        height, width = image.shape[:2]
        if self._primary is None:
            self._primary = self._holistic(static=not self.video)
        found: list[Candidate] = []
        cand = self._to_candidate(self._process(self._primary, image), width, height)
        if cand is None and self.video:
            # tracking lost in video mode: a static pass re-detects from scratch
            cand = self._to_candidate(self._process(self._static(), image), width, height)
        if cand is not None:
            found.append(cand)
        work = image
        while found and len(found) < self.max_people:
            box = candidate_box(found[-1])
            if box is None:
                break
            work = _blank_box(work, box)
            nxt = self._to_candidate(self._process(self._static(), work), width, height)
            if nxt is None or _overlaps(nxt, found):
                break
            found.append(nxt)
        return found

    def _static(self) -> Any:
        if self._extra is None:
            self._extra = self._holistic(static=True)
        return self._extra

    def reset(self) -> None:
        if self._primary is not None and self.video:
            self._primary.close()
            self._primary = None

    def close(self) -> None:
        for h in (self._primary, self._extra):
            if h is not None:
                h.close()
        self._primary = self._extra = None


def _blank_box(image: np.ndarray, box: tuple[float, float, float, float], pad: float = 0.15) -> np.ndarray:
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    px, py = pad * (x1 - x0 + 1), pad * (y1 - y0 + 1)
    xa, ya = max(0, int(x0 - px)), max(0, int(y0 - py))
    xb, yb = min(w, int(np.ceil(x1 + px))), min(h, int(np.ceil(y1 + py)))
    out = image.copy()
    out[ya:yb, xa:xb] = 0
    return out


def _overlaps(cand: Candidate, others: list[Candidate]) -> bool:
    b = candidate_box(cand)
    if b is None:
        return True
    for o in others:
        ob = candidate_box(o)
        if ob is None:
            continue
        ix = max(0.0, min(b[2], ob[2]) - max(b[0], ob[0]))
        iy = max(0.0, min(b[3], ob[3]) - max(b[1], ob[1]))
        area = max(b[2] - b[0], 1.0) * max(b[3] - b[1], 1.0)
        if ix * iy > 0.6 * area:
            return True
    return False


# --- DWPose (user-supplied ONNX) ----------------------------------------------------------------
DWPOSE_FILES = ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")


def dwpose_model_dir(model_dir: str | os.PathLike[str] | None = None) -> Path:
    if model_dir:
        return Path(model_dir)
    env = os.environ.get("KINEMATE_DWPOSE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "kinemate" / "dwpose"


def dwpose_backend(*, model_dir: str | os.PathLike[str] | None = None, **_: Any) -> PoseBackend:
    """The ``dwpose`` name: DWPose from user-supplied ONNX files (YOLOX-L detector + DWPose-L
    384). kinemate does not run DWPose inference yet; this says what is missing and what to
    use instead, so that asking for it never fails obscurely."""
    folder = dwpose_model_dir(model_dir)
    missing = [f for f in DWPOSE_FILES if not (folder / f).is_file()]
    if missing:
        raise WeightsError(
            f"the dwpose backend needs the ONNX files {', '.join(DWPOSE_FILES)} in {folder} "
            f"(missing: {', '.join(missing)}); download them from the DWPose release "
            "(e.g. the Hugging Face repo yzd-v/DWPose), put them there or set "
            "KINEMATE_DWPOSE_DIR to their folder — or use the bundled '--backend mediapipe'"
        )
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise WeightsError(
            "the dwpose backend needs onnxruntime, which is not installed; run "
            "'pip install onnxruntime' or use the bundled '--backend mediapipe'"
        ) from None
    raise WeightsError(
        f"found the DWPose files in {folder}, but DWPose inference is not part of this "
        "kinemate version; use '--backend mediapipe' (bundled), or convert your poses to "
        "OpenPose JSON and give that file as the driving input"
    )


register_backend("mediapipe", MediaPipeBackend)
register_backend("dwpose", dwpose_backend)
