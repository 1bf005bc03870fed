"""Choosing one person among several per frame, and keeping the same one over time.

A *candidate* is one detected person in one frame: a dict ``{"body": (18, 3), "hand_left":
(21, 3), "hand_right": (21, 3), "face": (70, 3)}`` of x, y, confidence in pixels (parts may be
absent). :func:`follow_person` picks the person to animate in the first frame where anyone is
seen (the largest, the most central, or the n-th from the left) and then, frame by frame, the
candidate closest to where that person was last seen (box overlap and keypoint distance). If
the tracked person is not seen for ``relock_after`` frames, it picks again by the rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kinemate.errors import UsageError
from kinemate.pose.skeleton import NUM_BODY, NUM_FACE, NUM_HAND
from kinemate.pose.track import PoseTrack

Candidate = dict[str, np.ndarray]
SELECT_RULES = ("largest", "central")


def candidate_box(cand: Candidate, min_conf: float = 0.05) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) around a candidate's confident body (and hand/face) keypoints."""
    pts = [p[p[:, 2] > min_conf, :2] for p in cand.values() if p is not None and len(p)]
    pts = [p for p in pts if len(p)]
    if not pts:
        return None
    xy = np.concatenate(pts)
    if len(xy) < 2:
        return None
    return (float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max()))


def person_box(track: PoseTrack, frame: int = 0, *, min_conf: float = 0.25,
               margin: float = 0.1) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) that holds the whole person of one frame, in the track's pixels and
    clipped to its image, or None if fewer than two keypoints are seen. The box around the
    confident keypoints (body, hands, face) misses what no keypoint marks, so it grows by
    ``margin`` of its size on every side and, above the head, by half the nose-to-neck
    distance more (the top of the head lies above the eyes and ears)."""
    pts = [arr[frame] for arr in track.parts().values()]
    xy = np.concatenate([p[p[:, 2] >= min_conf, :2] for p in pts])
    if len(xy) < 2:
        return None
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    body = track.body[frame]
    head = 0.0
    if min(body[0, 2], body[1, 2]) >= min_conf:  # nose and neck
        head = 0.5 * float(np.hypot(*(body[0, :2] - body[1, :2])))
    return (max(0.0, float(x0 - mx)), max(0.0, float(y0 - my - head)),
            min(float(track.width), float(x1 + mx)), min(float(track.height), float(y1 + my)))


def _area(box: tuple[float, float, float, float]) -> float:
    return max(box[2] - box[0], 1.0) * max(box[3] - box[1], 1.0)


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (_area(a) + _area(b) - inter + 1e-9)


def rank_candidates(
    cands: Sequence[Candidate], size_wh: tuple[int, int], select: str | int = "largest"
) -> list[int]:
    """Indices of ``cands`` best first by the rule: "largest" (box area), "central" (box
    centre nearest the image centre), or an int n (the n-th person counted from the left, 0
    first; past the last person, the rightmost)."""
    boxes = [candidate_box(c) for c in cands]
    valid = [i for i, b in enumerate(boxes) if b is not None]
    if isinstance(select, (int, np.integer)) and not isinstance(select, bool):
        order = sorted(valid, key=lambda i: (boxes[i][0] + boxes[i][2]) / 2)  # type: ignore[index]
        if not order:
            return []
        n = min(max(int(select), 0), len(order) - 1)  # past the last person: the rightmost
        return [order[n]] + [i for i in order if i != order[n]]
    if select == "largest":
        return sorted(valid, key=lambda i: -_area(boxes[i]))  # type: ignore[arg-type]
    if select == "central":
        cx, cy = size_wh[0] / 2, size_wh[1] / 2

        def dist(i: int) -> float:
            b = boxes[i]
            return float(np.hypot((b[0] + b[2]) / 2 - cx, (b[1] + b[3]) / 2 - cy))  # type: ignore[index]

        return sorted(valid, key=dist)
    raise UsageError(f"unknown person selection {select!r}; use 'largest', 'central' or a number (0 = leftmost)")


def parse_select(value: str | int) -> str | int:
    """'largest' | 'central' | '2' -> the rule accepted by :func:`rank_candidates`."""
    if isinstance(value, int):
        return value
    if value in SELECT_RULES:
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(
            f"`person` {value!r} is not valid; use 'largest', 'central' or a number (0 = leftmost)"
        ) from None


def _similarity(prev: Candidate, prev_box: tuple, cand: Candidate, box: tuple) -> float:
    """Higher is more alike: box IoU minus normalised mean distance of shared body keypoints."""
    a, b = prev["body"], cand["body"]
    both = (a[:, 2] > 0.05) & (b[:, 2] > 0.05)
    scale = max(np.sqrt(_area(prev_box)), 1.0)
    dist = float(np.linalg.norm(a[both, :2] - b[both, :2], axis=1).mean()) / scale if both.any() else 1.0
    return _iou(prev_box, box) - dist


def follow_person(
    frames: Sequence[Sequence[Candidate]],
    size_wh: tuple[int, int],
    select: str | int = "largest",
    *,
    relock_after: int = 30,
) -> list[Candidate | None]:
    """For each frame, the candidate that continues the chosen person (None where not seen)."""
    out: list[Candidate | None] = []
    prev: Candidate | None = None
    prev_box = None
    missing = 0
    for cands in frames:
        boxed = [(c, candidate_box(c)) for c in cands]
        boxed = [(c, b) for c, b in boxed if b is not None]
        chosen = None
        if boxed:
            if prev is None or missing > relock_after:
                order = rank_candidates([c for c, _ in boxed], size_wh, select)
                if order:
                    chosen = boxed[order[0]]
            else:
                scores = [_similarity(prev, prev_box, c, b) for c, b in boxed]
                best = int(np.argmax(scores))
                if scores[best] > -0.75:  # otherwise it is someone else: keep waiting
                    chosen = boxed[best]
        if chosen is None:
            out.append(None)
            missing += 1
        else:
            prev, prev_box = chosen
            out.append(prev)
            missing = 0
    return out


def track_from_candidates(
    chosen: Sequence[Candidate | None], width: int, height: int, fps: float, **meta: object
) -> PoseTrack:
    """Stack per-frame chosen candidates (or None) into a :class:`PoseTrack`."""
    track = PoseTrack.empty(len(chosen), width, height, fps)
    sizes = {"body": NUM_BODY, "hand_left": NUM_HAND, "hand_right": NUM_HAND, "face": NUM_FACE}
    for i, cand in enumerate(chosen):
        if cand is None:
            continue
        for name, k in sizes.items():
            pts = cand.get(name)
            if pts is not None and len(pts) == k:
                getattr(track, name)[i] = pts
    track.confidence = np.array(
        [float(np.mean(track.body[i, :, 2])) if c is not None else 0.0 for i, c in enumerate(chosen)],
        np.float32,
    )
    track.meta.update(meta)
    return track
