"""The person to move: a soft mask from MediaPipe Pose's segmentation, for one chosen person.

MediaPipe Pose (``mp.solutions.pose``, bundled model, CPU, offline) returns a person
segmentation with ``enable_segmentation=True``. It sees one person per pass; to get the person
kinemate's extractor chose (the largest, or ``--person``), it runs on a crop around that
person's keypoints, and only the parts of the mask connected to their skeleton are kept: a
second person beside them stays in the picture, unmoved.
"""

from __future__ import annotations

import cv2
import numpy as np

from kinemate.errors import NoPersonError
from kinemate.pose.skeleton import BODY_LIMBS

MIN_CONF = 0.05
SMALL = 256  # photos with a shorter long side are enlarged for the segmenter


def _box(body: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """The region around the person's keypoints where their body can be: the keypoints' box
    grown by half its size sideways and below, and by most of its height above (hair, hats);
    a body cut off at the hips reaches to the bottom of the photo."""
    ok = body[:, 2] > MIN_CONF
    xy = body[ok, :2]
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    size = max(bw, bh)
    x0, x1 = x0 - 0.5 * size, x1 + 0.5 * size
    y0, y1 = y0 - 0.6 * size, y1 + 0.6 * size
    legs = body[[9, 10, 12, 13], 2] > MIN_CONF
    if not legs.any():
        y1 = height
    return (max(0, int(x0)), max(0, int(y0)), min(width, int(np.ceil(x1))),
            min(height, int(np.ceil(y1))))


def _skeleton_mask(body: np.ndarray, shape: tuple[int, int], thickness: int) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    ok = body[:, 2] > MIN_CONF
    for a, b in BODY_LIMBS:
        if ok[a] and ok[b]:
            cv2.line(canvas, tuple(int(v) for v in body[a, :2]),
                     tuple(int(v) for v in body[b, :2]), 1, thickness)
    for k in np.nonzero(ok)[0]:
        cv2.circle(canvas, tuple(int(v) for v in body[k, :2]), thickness, 1, -1)
    return canvas > 0


def segment(image: np.ndarray) -> np.ndarray | None:
    """MediaPipe Pose's person segmentation of one uint8 RGB image: float (H, W) in [0, 1], or
    None when it finds no person."""
    import mediapipe as mp

    from kinemate.pose.backends import _native_logs_quiet

    with _native_logs_quiet():
        with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                    enable_segmentation=True,
                                    min_detection_confidence=0.3) as pose:
            result = pose.process(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
    mask = result.segmentation_mask
    return None if mask is None else np.clip(np.asarray(mask, np.float32), 0.0, 1.0)


def person_mask(image: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Soft mask (float (H, W) in [0, 1]) of the person whose COCO-18 keypoints are ``body``
    ((18, 3), pixels of ``image``). Raises :class:`NoPersonError` when the segmentation finds
    nobody there."""
    h, w = image.shape[:2]
    body = np.asarray(body, np.float32)
    if max(h, w) < SMALL:  # too small for the segmenter (a 64 px frame): cut out enlarged
        k = -(-SMALL // max(h, w))
        big = cv2.resize(image, (w * k, h * k), interpolation=cv2.INTER_CUBIC)
        scaled = body.copy()
        scaled[:, :2] = (body[:, :2] + 0.5) * k - 0.5
        mask = person_mask(big, scaled)
        return cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA)
    if (body[:, 2] > MIN_CONF).sum() < 2:
        raise NoPersonError("the reference photo's pose has fewer than two keypoints; use a photo "
                            "where the person is clearly visible")
    x0, y0, x1, y1 = _box(body, w, h)
    crop = segment(image[y0:y1, x0:x1])
    if crop is None:  # the crop can confuse the detector (a face filling it): the whole photo
        whole = segment(image)
        if whole is None:
            raise NoPersonError(
                "MediaPipe found the person's pose in the reference photo but could not cut the "
                "person out of it; use a photo where the whole person stands out from the "
                "background, or a diffusion model (`model` kinemate-tiny)")
        mask = whole
    else:
        mask = np.zeros((h, w), np.float32)
        mask[y0:y1, x0:x1] = crop
    # keep what is connected to this person's skeleton (not a second person, not clutter)
    size = max(float(np.ptp(body[body[:, 2] > MIN_CONF, 1])), 16.0)
    bones = _skeleton_mask(body, (h, w), max(2, int(0.03 * size)))
    count, labels = cv2.connectedComponents((mask > 0.5).astype(np.uint8))
    keep = np.unique(labels[bones & (mask > 0.5)])
    keep = keep[keep > 0]
    if len(keep) == 0:
        raise NoPersonError(
            "the person cut out of the reference photo does not cover their pose; use a photo "
            "where the person stands out from the background, or a diffusion model (`model` "
            "kinemate-tiny)")
    region = np.isin(labels, keep).astype(np.uint8)
    grow = max(3, int(0.03 * size))
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    return mask * region


__all__ = ["person_mask", "segment"]
