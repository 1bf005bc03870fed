"""Temporal clean-up of a pose track: confidence gating, gap filling, holding, smoothing.

All functions take a :class:`PoseTrack` and return a new one (the input is not changed). Every
part (body, hands, face) is processed keypoint by keypoint; a keypoint is *valid* in a frame
when its confidence is at least ``min_conf``.

* :func:`gate_confidence` — keypoints below ``min_conf`` become missing (confidence 0), so
  occluded or guessed joints are not drawn and do not steer retargeting.
* :func:`fix_left_right_swaps` — undoes sudden left/right label swaps of arms, legs or the
  two sides of the head (checked against the previous frame).
* :func:`fill_gaps` — a keypoint missing for at most ``max_gap`` frames *between* two valid
  frames is linearly interpolated (confidence: the smaller of the two ends).
* :func:`hold_person` — frames where the whole person is missing (left the picture, not found)
  repeat the nearest earlier frame with a person (or, before the first one, the first one), so
  a control video never goes blank; ``max_hold`` limits how long.
* :func:`keep_plausible_bodies` — what a pose estimator "finds" must look like one person's
  body to count: big enough, with proportions that stay consistent from frame to frame, and
  a face or a whole body (an estimator also "finds" people in lens flares, lamps and textures).
* :func:`one_euro` — the One-Euro filter (Casiez, Roussel, Vogel, CHI 2012): a low-pass filter
  whose cut-off frequency rises with speed, removing jitter at rest without lag in fast motion.
  Coordinates are filtered in units of the image height, so the parameters do not depend on
  resolution. The filter restarts after a keypoint has been missing. :func:`smooth_track` runs
  it forwards, then backwards over the result (``zero_phase``): the whole video is at hand, and
  the backward pass cancels the forward pass's lag and halves the jitter left (measured in
  docs/pose.md).
"""

from __future__ import annotations

import math

import numpy as np

from kinemate.pose.skeleton import BODY_LIMBS, NECK
from kinemate.pose.track import PARTS, PoseTrack

DEFAULT_MIN_CONF = 0.25

# What a detection must be to count as a person (see keep_plausible_bodies and docs/pose.md).
MIN_BODY_SIZE = 0.2  # diagonal of the keypoints' box, in units of the image's shorter side
MAX_BONE_CHANGE = 0.1  # median |log| change of the main bones' lengths from frame to frame
MIN_RUN = 3  # frames a person must be followed for (in a clip of at least that many frames)
MIN_FACE_SHARE = 0.2  # of a run's frames with a face found, when faces were looked for ...
MIN_BODY_BONES = 8  # ... else the median number of main bones seen (of the 13)
MAX_RUN_GAP = 2  # missing frames that do not break a run
# torso, arms, legs and neck-nose: long enough to measure, unlike the eye and ear "bones"
MAIN_BONES = tuple(limb for limb in BODY_LIMBS if max(limb) <= 13)


def gate_confidence(track: PoseTrack, min_conf: float = DEFAULT_MIN_CONF) -> PoseTrack:
    out = track.copy()
    for name in PARTS:
        arr = getattr(out, name)
        low = arr[..., 2] < min_conf
        arr[low] = 0.0
    return out


def _body_size(body: np.ndarray, min_conf: float, short_side: float) -> float:
    """Diagonal of the box around one frame's confident body keypoints / the shorter side."""
    xy = body[body[:, 2] >= min_conf, :2]
    if len(xy) < 2:
        return 0.0
    return float(np.hypot(*np.ptp(xy, axis=0))) / short_side


def _bone_change(a: np.ndarray, b: np.ndarray, min_conf: float) -> float | None:
    """Median over the main bones seen in both bodies (at least 3) of |log(length ratio)|;
    None when fewer are seen. Scale-free; 0 for the same body."""
    changes = []
    for p, c in MAIN_BONES:
        if min(a[p, 2], a[c, 2], b[p, 2], b[c, 2]) >= min_conf:
            la = float(np.hypot(*(a[c, :2] - a[p, :2])))
            lb = float(np.hypot(*(b[c, :2] - b[p, :2])))
            changes.append(abs(math.log((lb + 1.0) / (la + 1.0))))
    return float(np.median(changes)) if len(changes) >= 3 else None


def keep_plausible_bodies(track: PoseTrack, min_conf: float = DEFAULT_MIN_CONF, *,
                          faces: bool = False) -> tuple[PoseTrack, dict]:
    """Drop what does not look like one person's body; returns ``(track, report)``.

    A pose estimator also "finds" people in lens flares, lamps and textures: a few joints
    that happen to line up, usually small, and changing shape from frame to frame as no real
    body does. Frames where something was seen are grouped into *runs* (frames at most
    :data:`MAX_RUN_GAP` apart). A run is kept when its body is big enough (median diagonal of
    the keypoints' box at least :data:`MIN_BODY_SIZE` of the image's shorter side), it lasts
    :data:`MIN_RUN` frames or more, and shows a body whose main bones (torso, arms, legs,
    neck-nose) keep their lengths: between consecutive frames (at least half of them showing
    three such bones in both), the median |log ratio| of the lengths is at most
    :data:`MAX_BONE_CHANGE` (median over the run; a real body changes them only by
    foreshortening). With ``faces`` (the estimator looked for faces, as MediaPipe Holistic
    does), a run must also show a face in at least :data:`MIN_FACE_SHARE` of its frames, or
    more of a body (:data:`MIN_BODY_BONES` main bones): things that look like a head and
    shoulders have no face. In a clip shorter than :data:`MIN_RUN` frames (a photo),
    each frame needs the size and a body: the neck and at least three more joints. Frames of
    other runs become missing. ``report``: ``seen`` and ``kept`` frame counts, and per reason
    how many seen frames it removed: ``small``, ``short`` (a run under :data:`MIN_RUN`
    frames), ``fragment`` (too few joints to measure), ``inconsistent`` and ``faceless``."""
    out = track.copy()
    body = out.body
    seen = np.flatnonzero((body[..., 2] >= min_conf).sum(axis=1) >= 2)
    report = {"seen": int(len(seen)), "kept": 0, "small": 0, "short": 0, "fragment": 0,
              "inconsistent": 0, "faceless": 0}
    short_side = float(max(min(out.width, out.height), 1))
    runs: list[list[int]] = []
    for i in seen:
        if runs and i - runs[-1][-1] <= MAX_RUN_GAP + 1:
            runs[-1].append(int(i))
        else:
            runs.append([int(i)])
    drop: list[int] = []
    for run in runs:
        size = float(np.median([_body_size(body[i], min_conf, short_side) for i in run]))
        if len(out) < MIN_RUN:
            ok = body[run, :, 2] >= min_conf
            reason = "small" if size < MIN_BODY_SIZE else (
                None if (ok[:, NECK] & (ok.sum(axis=1) >= 4)).all() else "fragment")
        elif size < MIN_BODY_SIZE:
            reason = "small"
        elif len(run) < MIN_RUN:
            reason = "short"
        else:
            pairs = [_bone_change(body[a], body[b], min_conf) for a, b in zip(run, run[1:])]
            changes = [c for c in pairs if c is not None]
            if 2 * len(changes) < len(pairs):  # mostly too few joints for a body
                reason = "fragment"
            elif float(np.median(changes)) > MAX_BONE_CHANGE:
                reason = "inconsistent"
            elif faces and not _face_or_whole_body(out, run, min_conf):
                reason = "faceless"
            else:
                reason = None
        if reason is None:
            report["kept"] += len(run)
        else:
            report[reason] += len(run)
            drop.extend(run)
    if drop:
        for name in PARTS:
            getattr(out, name)[drop] = 0.0
        out.confidence[drop] = 0.0  # type: ignore[index]
    return out, report


def _face_or_whole_body(track: PoseTrack, run: list[int], min_conf: float) -> bool:
    """A face found in at least :data:`MIN_FACE_SHARE` of the run's frames, or (a person
    turned away, seen from the side, too far for the face model, or a DensePose render) more
    of a body than a head and shoulders: at least :data:`MIN_BODY_BONES` of the 13 main bones
    seen (median over the frames)."""
    if (track.face[run, :, 2] > 0).any(axis=1).mean() >= MIN_FACE_SHARE:
        return True
    ok = track.body[run][..., 2] >= min_conf
    bones = np.median([sum(bool(f[p] and f[c]) for p, c in MAIN_BONES) for f in ok])
    return bool(bones >= MIN_BODY_BONES)


def _fill_series(arr: np.ndarray, max_gap: int, min_conf: float) -> None:
    """In place on one keypoint's series (F, 3)."""
    valid = arr[:, 2] >= min_conf
    idx = np.flatnonzero(valid)
    if len(idx) < 2:
        return
    for a, b in zip(idx[:-1], idx[1:]):
        gap = b - a - 1
        if 0 < gap <= max_gap:
            t = (np.arange(1, gap + 1, dtype=np.float32) / (gap + 1))[:, None]
            arr[a + 1 : b, :2] = arr[a, :2] * (1 - t) + arr[b, :2] * t
            arr[a + 1 : b, 2] = min(arr[a, 2], arr[b, 2])


def fill_gaps(track: PoseTrack, max_gap: int = 5, min_conf: float = DEFAULT_MIN_CONF) -> PoseTrack:
    out = track.copy()
    if max_gap <= 0 or len(out) < 3:
        return out
    before = out.present()
    for name in PARTS:
        arr = getattr(out, name)
        for k in range(arr.shape[1]):
            _fill_series(arr[:, k], max_gap, min_conf)
    after = out.present()
    # frames that gained a person get the mean confidence of their keypoints
    gained = after & ~before
    if gained.any():
        out.confidence[gained] = out.body[gained, :, 2].mean(axis=1)  # type: ignore[index]
    return out


def hold_person(track: PoseTrack, max_hold: int | None = None) -> PoseTrack:
    """Fill frames without a person by repeating the nearest earlier (else later) person frame.

    ``max_hold`` = None holds without limit. Held frames keep the keypoints' confidences but the
    per-frame ``confidence`` is halved, marking them as guesses. Raises nothing: a track with
    nobody at all is returned unchanged (callers decide; see :func:`require_person`).
    """
    out = track.copy()
    present = out.present()
    if present.all() or not present.any():
        return out
    limit = len(out) if max_hold is None else max_hold
    idx = np.flatnonzero(present)
    for i in np.flatnonzero(~present):
        earlier = idx[idx < i]
        src = int(earlier[-1]) if len(earlier) else int(idx[0])
        if abs(i - src) > limit:
            continue
        for name in PARTS:
            getattr(out, name)[i] = getattr(out, name)[src]
        out.confidence[i] = 0.5 * float(out.confidence[src])  # type: ignore[index]
    return out


# Left/right partner groups of the body, swapped as a whole (arm, leg, head sides).
SWAP_GROUPS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((2, 5), (3, 6), (4, 7)),  # shoulders, elbows, wrists
    ((8, 11), (9, 12), (10, 13)),  # hips, knees, ankles
    ((14, 15), (16, 17)),  # eyes, ears
)


def fix_left_right_swaps(track: PoseTrack, min_conf: float = DEFAULT_MIN_CONF, ratio: float = 0.4) -> PoseTrack:
    """Undo sudden left/right swaps (a classic single-frame estimator error, e.g. the legs of a
    dancer trading labels for a few frames).

    For each frame and each group (arms, legs, head sides), the group's joints are compared with
    the previous frame's (after fixing) as they are and with left and right exchanged; if the
    exchanged labelling is much closer (distance below ``ratio`` times the other, and the jump
    larger than 5 % of the person's height), the group is swapped back. A gradual turn never
    triggers it: its frame-to-frame jumps are small. The hand matching the swapped arm goes with it.
    """
    out = track.copy()
    body = out.body
    swapped = np.zeros((len(out), len(SWAP_GROUPS)), bool)
    for t in range(1, len(out)):
        prev, cur = body[t - 1], body[t]
        ys = prev[prev[:, 2] >= min_conf, 1]
        if len(ys) < 2:
            continue
        min_jump = 0.05 * max(float(ys.max() - ys.min()), 1.0)  # 5 % of the person's height
        for g, group in enumerate(SWAP_GROUPS):
            same, swap, n = 0.0, 0.0, 0
            for a, b in group:
                if min(prev[a, 2], prev[b, 2], cur[a, 2], cur[b, 2]) < min_conf:
                    continue
                same += np.hypot(*(cur[a, :2] - prev[a, :2])) + np.hypot(*(cur[b, :2] - prev[b, :2]))
                swap += np.hypot(*(cur[b, :2] - prev[a, :2])) + np.hypot(*(cur[a, :2] - prev[b, :2]))
                n += 1
            if n == 0 or same / n < 2 * min_jump or swap >= ratio * same:
                continue
            _swap_group(out, t, g)
            swapped[t, g] = True
    # the labelling most frames had wins: if the first frame was the wrong one, flip them all
    for g in range(len(SWAP_GROUPS)):
        if swapped[:, g].mean() > 0.5:
            for t in range(len(out)):
                _swap_group(out, t, g)
    return out


def _swap_group(track: PoseTrack, t: int, g: int) -> None:
    for a, b in SWAP_GROUPS[g]:
        track.body[t, [a, b]] = track.body[t, [b, a]]
    if g == 0:  # the arms: the hands follow them
        left, right = track.hand_left[t].copy(), track.hand_right[t].copy()
        track.hand_left[t], track.hand_right[t] = right, left


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / dt)


def one_euro(
    track: PoseTrack,
    *,
    min_cutoff: float = 2.0,
    beta: float = 20.0,
    d_cutoff: float = 1.0,
    min_conf: float = DEFAULT_MIN_CONF,
) -> PoseTrack:
    """One-Euro filter each valid keypoint over time (see the module docstring).

    ``min_cutoff`` (Hz): cut-off at rest — lower removes more jitter. ``beta``: how fast the
    cut-off grows with speed (speed in image heights per second) — higher reduces lag.
    """
    out = track.copy()
    dt = 1.0 / max(out.fps, 1e-3)
    unit = float(max(out.height, 1))
    a_d = _alpha(d_cutoff, dt)
    for name in PARTS:
        arr = getattr(out, name)  # (F, K, 3)
        k = arr.shape[1]
        x_prev = np.zeros((k, 2))
        dx_prev = np.zeros((k, 2))
        alive = np.zeros(k, bool)
        for t in range(len(arr)):
            valid = arr[t, :, 2] >= min_conf
            x = arr[t, :, :2].astype(np.float64) / unit
            start = valid & ~alive
            x_prev[start] = x[start]
            dx_prev[start] = 0.0
            run = valid & alive
            if run.any():
                dx = (x[run] - x_prev[run]) / dt
                dx_hat = a_d * dx + (1 - a_d) * dx_prev[run]
                cutoff = min_cutoff + beta * np.linalg.norm(dx_hat, axis=1)
                a = _alpha(cutoff, dt)[:, None]
                x_hat = a * x[run] + (1 - a) * x_prev[run]
                x_prev[run] = x_hat
                dx_prev[run] = dx_hat
                arr[t, run, :2] = (x_hat * unit).astype(np.float32)
            alive = valid
    return out


def smooth_track(
    track: PoseTrack,
    *,
    min_conf: float = DEFAULT_MIN_CONF,
    max_gap: int = 5,
    smooth: bool = True,
    min_cutoff: float = 2.0,
    beta: float = 20.0,
    zero_phase: bool = True,
) -> PoseTrack:
    """The default clean-up: gate low confidences, undo left/right swaps, fill short gaps, then
    One-Euro smoothing — forwards, then (``zero_phase``) backwards over the result, which
    cancels the lag of the forward pass (a filter run both ways delays nothing)."""
    out = fix_left_right_swaps(gate_confidence(track, min_conf), min_conf)
    out = fill_gaps(out, max_gap, min_conf)
    if smooth and len(out) > 1:
        out = one_euro(out, min_cutoff=min_cutoff, beta=beta, min_conf=min_conf)
        if zero_phase:
            back = list(range(len(out) - 1, -1, -1))
            meta = out.meta
            out = one_euro(out.subset(back), min_cutoff=min_cutoff, beta=beta,
                           min_conf=min_conf).subset(back)
            out.meta = meta
    out.meta["processing"] = {
        "min_conf": min_conf,
        "max_gap": max_gap,
        "one_euro": ({"min_cutoff": min_cutoff, "beta": beta, "zero_phase": zero_phase}
                     if smooth else None),
    }
    return out
