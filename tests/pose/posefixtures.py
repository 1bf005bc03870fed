"""Synthetic skeletons with known bone lengths, shared by the pose tests (no mediapipe)."""

from __future__ import annotations

import math

import numpy as np

from kinemate.pose.skeleton import BODY_PARENT, NECK, tree_order
from kinemate.pose.track import PoseTrack

# direction (degrees, image coordinates: 0 = +x, 90 = down) of each body keypoint from its
# parent in a standing, front-facing person
STANDING_ANGLES = {
    2: 180, 5: 0,  # shoulders
    3: 100, 4: 95, 6: 80, 7: 85,  # arms hanging
    8: 100, 11: 80,  # hips
    9: 90, 10: 90, 12: 90, 13: 90,  # legs
    0: -90, 14: -120, 15: -60, 16: 180, 17: 0,  # head
}


def skeleton(lengths: dict[int, float], neck=(256.0, 150.0), angles=None) -> np.ndarray:
    """(18, 3) body: each child at ``lengths[child]`` from its parent along ``angles[child]``."""
    angles = {**STANDING_ANGLES, **(angles or {})}
    body = np.zeros((18, 3), np.float32)
    body[NECK] = (neck[0], neck[1], 1.0)
    for parent, child in tree_order():
        a = math.radians(angles[child])
        body[child, 0] = body[parent, 0] + lengths[child] * math.cos(a)
        body[child, 1] = body[parent, 1] + lengths[child] * math.sin(a)
        body[child, 2] = 1.0
    return body


def lengths(scale: float = 1.0, legs: float = 1.0, arms: float = 1.0) -> dict[int, float]:
    base = {2: 40, 5: 40, 3: 55, 4: 50, 6: 55, 7: 50, 8: 95, 11: 95,
            9: 80, 10: 80, 12: 80, 13: 80, 0: 45, 14: 12, 15: 12, 16: 14, 17: 14}  # fmt: skip
    for k in (9, 10, 12, 13):
        base[k] *= legs
    for k in (3, 4, 6, 7):
        base[k] *= arms
    return {k: v * scale for k, v in base.items()}


def track_of(bodies: list[np.ndarray], width: int = 512, height: int = 512, fps: float = 25.0) -> PoseTrack:
    t = PoseTrack.empty(len(bodies), width, height, fps)
    t.body[:] = np.stack(bodies)
    t.confidence = t.present().astype(np.float32)
    return t


def parents() -> dict[int, int]:
    return dict(BODY_PARENT)
