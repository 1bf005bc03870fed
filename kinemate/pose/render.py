"""OpenPose-style control maps: the skeleton images pose ControlNets were trained on.

The drawing follows the OpenPose annotator used to train SD ControlNet-openpose (v1.1) and
Animate Anyone's DWPose maps, on a black canvas:

* body: the 17 limbs of :data:`~kinemate.pose.skeleton.BODY_LIMBS` in order, each a filled
  ellipse (half-width ``stick``) in its colour at 60 % intensity, then the 18 keypoints as
  filled circles (radius 4) in full colour;
* hands: 20 edges as 2-px lines in the hues i/20, then the 21 keypoints as blue circles
  (radius 4);
* face: 70 white dots (radius 3).

At 512 px (the shorter side) the sizes are exactly the annotator's; at other resolutions they
scale with the shorter side (``scale``), so a map at 1024 looks like a 512 map upsampled.
No anti-aliasing: every pixel is either black or one of the standard colours.

``style="v1.0"`` draws the body as ControlNet **v1.0**'s annotator did (the maps
``control_sd15_openpose`` / ``lllyasviel/sd-controlnet-openpose`` was trained on): keypoints
first, then each limb blended over the canvas (``0.4 * canvas + 0.6 * limb colour``, so a limb
on black has the same 60 % colour, but limbs over joints and over each other mix). That
ControlNet saw bodies only: its family renders without hands and face (docs/pose.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np

from kinemate.pose.skeleton import (
    BODY_COLORS,
    BODY_LIMBS,
    FACE_POINT_COLOR,
    HAND_EDGE_COLORS,
    HAND_EDGES,
    HAND_POINT_COLOR,
    LIMB_INTENSITY,
)
from kinemate.pose.temporal import DEFAULT_MIN_CONF
from kinemate.pose.track import PoseTrack


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(x), int(y)


def _finite(p: np.ndarray) -> bool:
    return bool(np.isfinite(p[:2]).all()) and abs(p[0]) < 1e6 and abs(p[1]) < 1e6


STYLES = ("v1.1", "v1.0")


def draw_body(canvas: np.ndarray, body: np.ndarray, *, min_conf: float = DEFAULT_MIN_CONF,
              scale: float = 1.0, style: str = "v1.1") -> None:
    """Draw an (18, 3) body in place on a uint8 (H, W, 3) RGB canvas (``style``: see the
    module docstring)."""
    if style not in STYLES:
        raise ValueError(f"unknown OpenPose drawing style {style!r}; use one of {STYLES}")
    stick = max(1, int(round(4 * scale)))
    radius = max(1, int(round(4 * scale)))
    ok = (body[:, 2] >= min_conf) & np.array([_finite(p) for p in body])
    if style == "v1.0":
        _draw_body_v10(canvas, body, ok, stick, radius)
        return
    for i, (a, b) in enumerate(BODY_LIMBS):
        if not (ok[a] and ok[b]):
            continue
        (xa, ya), (xb, yb) = body[a, :2], body[b, :2]
        mx, my = (xa + xb) / 2, (ya + yb) / 2
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(yb - ya, xb - xa))
        poly = cv2.ellipse2Poly(_pt(mx, my), (int(length / 2), stick), int(angle), 0, 360, 1)
        color = [int(c * LIMB_INTENSITY) for c in BODY_COLORS[i]]
        cv2.fillConvexPoly(canvas, poly, color)
    for k in range(len(body)):
        if ok[k]:
            cv2.circle(canvas, _pt(*body[k, :2]), radius, BODY_COLORS[k], thickness=-1)


def _limb_polygon(body: np.ndarray, a: int, b: int, stick: int) -> np.ndarray:
    """The v1.0 annotator's ellipse: its angle measured from the second joint to the first
    (``int()`` of it, so where truncation toward zero falls on the other side the ellipse
    turns by 1° against the v1.1 drawing above)."""
    (xa, ya), (xb, yb) = body[a, :2], body[b, :2]
    length = math.hypot(xa - xb, ya - yb)
    angle = math.degrees(math.atan2(ya - yb, xa - xb))
    return cv2.ellipse2Poly(_pt((xa + xb) / 2, (ya + yb) / 2), (int(length / 2), stick),
                            int(angle), 0, 360, 1)


def _draw_body_v10(canvas: np.ndarray, body: np.ndarray, ok: np.ndarray, stick: int,
                   radius: int) -> None:
    """ControlNet v1.0's order: keypoints, then every limb blended 0.4 / 0.6 over them."""
    for k in range(len(body)):
        if ok[k]:
            cv2.circle(canvas, _pt(*body[k, :2]), radius, BODY_COLORS[k], thickness=-1)
    for i, (a, b) in enumerate(BODY_LIMBS):
        if not (ok[a] and ok[b]):
            continue
        limb = canvas.copy()
        cv2.fillConvexPoly(limb, _limb_polygon(body, a, b, stick), BODY_COLORS[i])
        cv2.addWeighted(canvas, 0.4, limb, 0.6, 0, dst=canvas)


def draw_hand(canvas: np.ndarray, hand: np.ndarray, *, min_conf: float = DEFAULT_MIN_CONF, scale: float = 1.0) -> None:
    """Draw a (21, 3) hand in place."""
    ok = (hand[:, 2] >= min_conf) & np.array([_finite(p) for p in hand])
    if not ok.any():
        return
    thick = max(1, int(round(2 * scale)))
    radius = max(1, int(round(4 * scale)))
    for i, (a, b) in enumerate(HAND_EDGES):
        if ok[a] and ok[b]:
            cv2.line(canvas, _pt(*hand[a, :2]), _pt(*hand[b, :2]), HAND_EDGE_COLORS[i], thickness=thick)
    for k in range(len(hand)):
        if ok[k]:
            cv2.circle(canvas, _pt(*hand[k, :2]), radius, HAND_POINT_COLOR, thickness=-1)


def draw_face(canvas: np.ndarray, face: np.ndarray, *, min_conf: float = DEFAULT_MIN_CONF, scale: float = 1.0) -> None:
    """Draw a (70, 3) face as white dots in place."""
    radius = max(1, int(round(3 * scale)))
    for p in face:
        if p[2] >= min_conf and _finite(p):
            cv2.circle(canvas, _pt(*p[:2]), radius, FACE_POINT_COLOR, thickness=-1)


def draw_pose(
    canvas: np.ndarray,
    parts: dict[str, np.ndarray],
    *,
    hands: bool = True,
    face: bool = True,
    min_conf: float = DEFAULT_MIN_CONF,
    scale: float | None = None,
    style: str = "v1.1",
) -> np.ndarray:
    """Draw one frame's parts (``body``, ``hand_left``, ``hand_right``, ``face``; pixel
    coordinates of ``canvas``) in place on a uint8 (H, W, 3) RGB canvas; returns the canvas.
    ``style``: "v1.1" (ControlNet 1.1 / DWPose) or "v1.0" (ControlNet 1.0's body drawing)."""
    if scale is None:
        scale = min(canvas.shape[:2]) / 512.0
    if "body" in parts:
        draw_body(canvas, parts["body"], min_conf=min_conf, scale=scale, style=style)
    if hands:
        for name in ("hand_left", "hand_right"):
            if name in parts:
                draw_hand(canvas, parts[name], min_conf=min_conf, scale=scale)
    if face and "face" in parts:
        draw_face(canvas, parts["face"], min_conf=min_conf, scale=scale)
    return canvas


def map_parts(parts: dict[str, np.ndarray], framing: object | None) -> dict[str, np.ndarray]:
    """Carry keypoints through a :class:`kinemate.io.Framing` (None: unchanged)."""
    if framing is None:
        return parts
    out = {}
    for name, pts in parts.items():
        q = pts.copy()
        q[:, :2] = framing.map_points(pts[:, :2])  # type: ignore[attr-defined]
        out[name] = q
    return out


def frame_parts(track: PoseTrack, i: int) -> dict[str, np.ndarray]:
    return {name: arr[i] for name, arr in track.parts().items()}


def render_openpose(
    track: PoseTrack,
    size_wh: tuple[int, int] | None = None,
    *,
    framing: object | None = None,
    fit: str = "crop",
    hands: bool = True,
    face: bool = True,
    min_conf: float = DEFAULT_MIN_CONF,
    scale: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield one uint8 (H, W, 3) RGB control map per frame of ``track``, black background.

    The track's coordinates (pixels of a ``track.width x track.height`` image) are carried onto
    the ``size_wh`` = (W, H) canvas by ``framing`` (a :class:`kinemate.io.Framing` from the
    track's image size), or, if none is given, by an aspect-preserving ``fit`` ("crop" or
    "letterbox") — the same fit used for the reference photo. ``size_wh`` None: the track's size.
    """
    dst = tuple(size_wh) if size_wh is not None else track.size
    yield from ControlFrames(track, dst, framing=framing, fit=fit, hands=hands, face=face,  # type: ignore[arg-type]
                             min_conf=min_conf, scale=scale)  # fmt: skip


class ControlFrames:
    """Lazily rendered control maps of a track: a sequence (``len``, ``frames[i]``, slices give
    lists) that renders a frame when asked (bounded memory for long videos), and also an
    iterator (``next(frames)`` walks it once), so it can be used wherever either is expected."""

    def __init__(self, track: PoseTrack, size_wh: tuple[int, int], framing: object | None = None,
                 **draw: object) -> None:  # fmt: skip
        self.track = track
        self.size_wh = (int(size_wh[0]), int(size_wh[1]))
        if framing is None and self.size_wh != track.size:
            from kinemate.io import Framing

            framing = Framing.compute(track.size, self.size_wh, str(draw.pop("fit", "crop")))  # type: ignore[arg-type]
        draw.pop("fit", None)
        self.framing = framing
        self.draw = draw
        self._cursor = 0

    def __len__(self) -> int:
        return len(self.track)

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]  # type: ignore[misc]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"control frame {index} out of range (0..{len(self) - 1})")
        w, h = self.size_wh
        canvas = np.zeros((h, w, 3), np.uint8)
        return draw_pose(canvas, map_parts(frame_parts(self.track, i), self.framing), **self.draw)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]  # type: ignore[misc]

    def __next__(self) -> np.ndarray:
        if self._cursor >= len(self):
            raise StopIteration
        self._cursor += 1
        return self[self._cursor - 1]  # type: ignore[return-value]


def overlay(image: np.ndarray, parts: dict[str, np.ndarray], *, min_conf: float = DEFAULT_MIN_CONF) -> np.ndarray:
    """The skeleton drawn over a copy of ``image`` (dimmed to 60 % so the skeleton stands out)."""
    canvas = (image.astype(np.float32) * 0.6).astype(np.uint8)
    return draw_pose(np.ascontiguousarray(canvas), parts, min_conf=min_conf)
