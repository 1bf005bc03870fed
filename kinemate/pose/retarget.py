"""Retargeting: the driving motion, re-proportioned to the person in the reference photo.

Given a driving track D (F frames, driving-video pixels) and the reference pose R (one frame,
reference-photo pixels), :func:`retarget` returns a track in reference-photo pixels whose
bones have the reference person's lengths, positioned where that person stands. The algorithm
(docs/pose.md has the details):

1. Bone lengths, compared like with like. The reference is seen once, each bone foreshortened
   as it happens to be, so each driving bone is measured where the driving person holds the
   reference's pose: the median of its length over the quarter of the frames (at least 3)
   closest to the reference's pose (:func:`pose_distance`: bone vectors normalised by the
   pose's total length). The same person driving themselves thus gives scale 1 and factors 1
   up to detection noise; a different body is compared under the same foreshortening. A bone
   the reference does not show gets its unforeshortened driving length (:func:`rest_lengths`:
   the 90th percentile less what detection noise adds to it). Reference: measured on R.
2. Global scale ``s`` = total length of the bones seen in both / the same bones in the driving
   track; per-bone factor ``k_b = L_ref / (s * L_drv)`` (1 where the reference does not show
   the bone, clamped to [0.25, 4]).
3. Per frame, walk the kinematic tree from the neck: the neck moves like the driving neck
   (scaled by ``s``), on the reference neck in the frame closest to the reference's pose
   (:func:`matched_frame`), so that frame maps onto the reference; each child is
   ``parent' + s * k_b * (child - parent)`` — direction and foreshortening from the driving
   frame, length from the reference. A joint whose parent is missing hangs from its nearest
   seen ancestor. Hands hang from the wrists (forearm factor), the face from the nose (face
   width ratio).
4. Feet on the ground. If the reference shows an ankle, its lowest ankle defines the ground
   line. The driving ground is the 95th percentile of the per-frame lowest ankle (less what
   noise adds); each frame is shifted vertically so that its lowest ankle sits as far above
   the reference ground as the driving one is above the driving ground (times ``s``):
   standing feet stay on the line, jumps stay jumps. The shifts are taken relative to the
   matched frame's (it stays on the reference), so the rule corrects how the body moves
   rather than moving the whole track. Frames without a visible ankle keep the previous
   frame's shift.
5. Per-frame confidence: the mean over the 17 bones of min(end confidences) (0 for bones not
   seen), scaled by (1 + share of those bones with a measured reference length) / 2.
"""

from __future__ import annotations

import numpy as np

from kinemate.errors import NoPersonError
from kinemate.pose.skeleton import (
    BODY_LIMBS,
    BODY_PARENT,
    L_ANKLE,
    L_WRIST,
    NECK,
    NOSE,
    R_ANKLE,
    R_WRIST,
    tree_order,
)
from kinemate.pose.temporal import DEFAULT_MIN_CONF
from kinemate.pose.track import PoseTrack

K_MIN, K_MAX = 0.25, 4.0
_LIMB_INDEX = {limb: i for i, limb in enumerate(BODY_LIMBS)}


def bone_lengths(body: np.ndarray, min_conf: float = DEFAULT_MIN_CONF) -> np.ndarray:
    """(..., 18, 3) -> (..., 17) bone lengths in BODY_LIMBS order; NaN where an end is missing."""
    a = body[..., [p for p, _ in BODY_LIMBS], :]
    b = body[..., [c for _, c in BODY_LIMBS], :]
    length = np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)
    ok = (a[..., 2] >= min_conf) & (b[..., 2] >= min_conf)
    return np.where(ok, length, np.nan)


def _face_width(face: np.ndarray, min_conf: float) -> np.ndarray:
    """(..., 70, 3) -> (...,) distance between jaw points 0 and 16 (NaN if unseen)."""
    a, b = face[..., 0, :], face[..., 16, :]
    ok = (a[..., 2] >= min_conf) & (b[..., 2] >= min_conf)
    return np.where(ok, np.linalg.norm(a[..., :2] - b[..., :2], axis=-1), np.nan)


def _nanpercentile(x: np.ndarray, q: float, axis: int = 0) -> np.ndarray:
    with np.errstate(all="ignore"):
        allnan = np.isnan(x).all(axis=axis)
        filled = np.where(np.isnan(x).all(axis=axis, keepdims=True), 0.0, x)
        out = np.nanpercentile(filled, q, axis=axis)
    return np.where(allnan, np.nan, out)


def _noise_sd(x: np.ndarray) -> np.ndarray:
    """(F, B) series with NaN gaps -> (B,) the standard deviation of their frame-to-frame
    noise, from the median absolute second difference over runs of seen frames (white noise
    of sd σ gives second differences of sd σ√6; smooth motion hardly adds to them). NaN
    where fewer than three consecutive frames are seen."""
    d2 = x[2:] - 2 * x[1:-1] + x[:-2] if len(x) >= 3 else np.full((0,) + x.shape[1:], np.nan)
    with np.errstate(all="ignore"):
        allnan = np.isnan(d2).all(axis=0) if len(d2) else np.ones(x.shape[1:], bool)
        med = np.nanmedian(np.where(allnan, 0.0, np.abs(d2)), axis=0) if len(d2) else 0.0
    return np.where(allnan, np.nan, 1.4826 * med / np.sqrt(6.0))


def rest_lengths(lengths: np.ndarray, q: float = 90.0) -> np.ndarray:
    """(F, B) per-frame lengths (NaN = unseen) -> (B,) each one's unforeshortened length.

    Foreshortening only shortens a bone, so its full length is near the top of its lengths
    over the video (the ``q``-th percentile). Detection noise, though, makes that percentile
    too long: for a bone seen at full length in every frame with noise of sd σ, it is the
    length plus z_q·σ. So σ is estimated from the frame-to-frame noise (:func:`_noise_sd`)
    and z_q·σ is taken off, never going below the median: a still bone gets its median, a
    bone that is often foreshortened its longest seen length, the same person measured in
    one of its own frames scale ~1 rather than a few percent short.
    """
    from statistics import NormalDist

    top = _nanpercentile(lengths, q, axis=0)
    mid = _nanpercentile(lengths, 50, axis=0)
    sd = np.nan_to_num(_noise_sd(lengths), nan=0.0)
    z = NormalDist().inv_cdf(q / 100.0)
    return np.where(np.isfinite(top), np.maximum(top - z * sd, mid), np.nan)


def _bone_vectors(body: np.ndarray, min_conf: float) -> np.ndarray:
    """(..., 18, 3) -> (..., 17, 2) vectors parent -> child (NaN where an end is missing)."""
    a = body[..., [p for p, _ in BODY_LIMBS], :]
    b = body[..., [c for _, c in BODY_LIMBS], :]
    ok = (a[..., 2] >= min_conf) & (b[..., 2] >= min_conf)
    return np.where(ok[..., None], (b[..., :2] - a[..., :2]).astype(np.float64), np.nan)


def pose_distance(drv: np.ndarray, ref: np.ndarray, min_conf: float) -> np.ndarray:
    """(F, 18, 3) driving, (18, 3) reference -> (F,) how far each frame's pose is from the
    reference's, whatever the size and place of the person: over the bones both show, the
    mean distance between their vectors, each pose's divided by its total length of those
    bones (so a bone turned, or foreshortened against the others, counts). +inf for a frame
    sharing no bone with the reference or fewer than 3/4 of the most any frame shares (a
    frame showing one bone would match anything)."""
    v_d = _bone_vectors(drv, min_conf)  # (F, 17, 2)
    v_r = _bone_vectors(ref, min_conf)[None]  # (1, 17, 2)
    both = np.isfinite(v_d).all(-1) & np.isfinite(v_r).all(-1)  # (F, 17)
    v_d = np.where(both[..., None], v_d, 0.0)
    v_r = np.where(both[..., None], v_r, 0.0)
    with np.errstate(all="ignore"):
        n_d = np.linalg.norm(v_d, axis=-1).sum(-1, keepdims=True)[..., None]
        n_r = np.linalg.norm(v_r, axis=-1).sum(-1, keepdims=True)[..., None]
        dist = np.linalg.norm(v_d / n_d - v_r / n_r, axis=-1).sum(-1) / both.sum(-1)
    shared = both.sum(-1)
    ok = (shared > 0) & (shared >= 0.75 * shared.max()) & (n_d[:, 0, 0] > 1e-6) & (n_r[:, 0, 0] > 1e-6)
    return np.where(ok, np.nan_to_num(dist, nan=np.inf), np.inf)


def matched_lengths(drv: np.ndarray, ref: np.ndarray, min_conf: float,
                    share: float = 0.25) -> np.ndarray:
    """(F, 18, 3) driving, (18, 3) reference -> (17,) each driving bone's length in the
    frames whose pose is closest to the reference's.

    A 2-D length mixes the bone's true length with its foreshortening, and the reference is
    seen once, foreshortened as it happens to be. So each driving bone is measured where the
    driving person holds the reference's pose (:func:`pose_distance`; the median over the
    closest ``share`` of the frames showing the bone, at least 3): the same person gives
    back the reference's lengths (scale 1, up to detection noise), a different body is
    compared under the same foreshortening. Bones the reference does not show get their
    unforeshortened length (:func:`rest_lengths`).
    """
    lengths = bone_lengths(drv, min_conf)  # (F, 17)
    out = rest_lengths(lengths)
    dist = pose_distance(drv, ref, min_conf)
    l_ref = bone_lengths(ref, min_conf)
    for b in range(lengths.shape[1]):
        seen = np.flatnonzero(np.isfinite(lengths[:, b]) & np.isfinite(dist))
        if len(seen) == 0 or not np.isfinite(l_ref[b]):
            continue
        n = min(len(seen), max(3, int(round(share * len(seen)))))
        nearest = seen[np.argsort(dist[seen], kind="stable")[:n]]
        out[b] = float(np.median(lengths[nearest, b]))
    return out


def matched_frame(drv: np.ndarray, ref: np.ndarray, usable: np.ndarray, min_conf: float) -> int:
    """The usable driving frame whose pose is closest to the reference's
    (:func:`pose_distance`; the first on ties, the first usable frame if none compares)."""
    dist = np.where(usable, pose_distance(drv, ref, min_conf), np.inf)
    if not np.isfinite(dist).any():
        return int(np.flatnonzero(usable)[0])
    return int(np.argmin(dist))


def _lowest_ankle(body: np.ndarray, min_conf: float) -> np.ndarray:
    """(F, 18, 3) -> (F,) the largest y of the seen ankles (NaN if none)."""
    ys = np.stack([body[:, R_ANKLE, 1], body[:, L_ANKLE, 1]], axis=1)
    ok = np.stack([body[:, R_ANKLE, 2], body[:, L_ANKLE, 2]], axis=1) >= min_conf
    ys = np.where(ok, ys, -np.inf)
    low = ys.max(axis=1)
    return np.where(np.isfinite(low), low, np.nan)


def retarget(
    track: PoseTrack,
    reference_pose: PoseTrack,
    *,
    ground: bool = True,
    min_conf: float = DEFAULT_MIN_CONF,
) -> PoseTrack:
    """Re-proportion ``track`` to the person of ``reference_pose`` (a 1-frame track in
    reference-photo pixels). Returns a track in reference-photo pixels, same fps and length,
    ``confidence`` = per-frame retargeting confidence. See the module docstring.

    Raises :class:`NoPersonError` if the reference shows no neck or the driving track has no
    frame with a neck and one more joint.
    """
    ref = reference_pose.body[0]
    ref_ok = ref[:, 2] >= min_conf
    if not ref_ok[NECK] or ref_ok.sum() < 3:
        raise NoPersonError(
            "the reference photo's pose is too incomplete to retarget to (need the neck/shoulders "
            "and a few more joints); use a photo showing the person's upper body, or pass "
            "`retarget=false`"
        )
    drv = track.body
    drv_ok = drv[..., 2] >= min_conf
    usable = drv_ok[:, NECK] & (drv_ok.sum(axis=1) >= 2)
    if not usable.any():
        raise NoPersonError(
            "no frame of the driving motion shows a person's neck/shoulders; use a driving video "
            "with a clearly visible person"
        )

    # 1-2. lengths, global scale, per-bone factors
    l_drv = matched_lengths(drv, ref, min_conf)  # (17,)
    l_ref = bone_lengths(ref, min_conf)  # (17,)
    common = np.isfinite(l_drv) & np.isfinite(l_ref) & (l_drv > 1e-6)
    if common.any():
        s = float(np.nansum(l_ref[common]) / np.nansum(l_drv[common]))
    else:
        s = _box_scale(ref, drv[np.flatnonzero(usable)[0]], min_conf)
    with np.errstate(all="ignore"):
        k = np.where(common, l_ref / (s * l_drv), 1.0)
    k = np.clip(np.nan_to_num(k, nan=1.0), K_MIN, K_MAX)
    k_of = {child: float(k[_LIMB_INDEX[(parent, child)]]) for child, parent in BODY_PARENT.items()}

    fw_ref = float(_face_width(reference_pose.face[0], min_conf))
    fw_drv = float(rest_lengths(_face_width(track.face, min_conf)[:, None])[0])
    if np.isfinite(fw_ref) and np.isfinite(fw_drv) and fw_drv > 1e-6:
        k_face = float(np.clip(fw_ref / (s * fw_drv), K_MIN, K_MAX))
    else:
        k_face = float(np.mean([k_of[c] for c in (NOSE, 14, 15, 16, 17)]))

    out = PoseTrack.empty(len(track), reference_pose.width, reference_pose.height, track.fps)
    first = matched_frame(drv, ref, usable, min_conf)
    neck0 = drv[first, NECK, :2]
    order = tree_order()

    # 3. walk the tree per frame
    for t in range(len(track)):
        if not usable[t]:
            continue
        d, ok = drv[t], drv_ok[t]
        pos = np.zeros((18, 2), np.float64)
        pos[NECK] = ref[NECK, :2] + s * (d[NECK, :2] - neck0)
        placed = np.zeros(18, bool)
        placed[NECK] = True
        for parent, child in order:
            if not ok[child]:
                continue
            anchor, chain = parent, [k_of[child]]
            while not (ok[anchor] and placed[anchor]) and anchor != NECK:
                chain.append(k_of[anchor])
                anchor = BODY_PARENT[anchor]
            pos[child] = pos[anchor] + s * float(np.mean(chain)) * (d[child, :2] - d[anchor, :2])
            placed[child] = True
        out.body[t, :, :2] = pos
        out.body[t, :, 2] = np.where(placed, d[:, 2], 0.0)

        def attach(points: np.ndarray, joint: int, factor: float) -> np.ndarray:
            res = points.copy()
            if not (points[:, 2] > 0).any():
                return res
            base = joint if placed[joint] else NECK
            res[:, :2] = pos[base] + s * factor * (points[:, :2] - d[base, :2])
            return res

        out.hand_left[t] = attach(track.hand_left[t], L_WRIST, k_of[L_WRIST])
        out.hand_right[t] = attach(track.hand_right[t], R_WRIST, k_of[R_WRIST])
        out.face[t] = attach(track.face[t], NOSE, k_face)

    # 4. feet on the ground
    shifts = np.zeros(len(track))
    ref_ground = _lowest_ankle(ref[None], min_conf)[0]
    if ground and np.isfinite(ref_ground):
        low_drv = _lowest_ankle(drv, min_conf)
        if np.isfinite(low_drv).any():
            drv_ground = float(rest_lengths(low_drv[:, None], 95)[0])  # noise taken off
            low_out = _lowest_ankle(out.body, min_conf)
            have = np.isfinite(low_drv) & np.isfinite(low_out) & usable
            target = ref_ground - s * (drv_ground - low_drv)
            raw = np.where(have, target - low_out, np.nan)
            shifts = _hold_fill(raw)
            if have[first]:  # the frame matching the reference stays where it was anchored
                shifts = shifts - shifts[first]
            for name in ("body", "hand_left", "hand_right", "face"):
                getattr(out, name)[:, :, 1] += shifts[:, None].astype(np.float32)

    # 5. per-frame confidence
    bones_conf = np.minimum(
        drv[:, [p for p, _ in BODY_LIMBS], 2], drv[:, [c for _, c in BODY_LIMBS], 2]
    )  # (F, 17)
    bones_seen = (drv_ok[:, [p for p, _ in BODY_LIMBS]] & drv_ok[:, [c for _, c in BODY_LIMBS]])
    bones_conf = np.where(bones_seen, bones_conf, 0.0)
    measured = np.where(bones_seen, np.isfinite(l_ref)[None, :], False).sum(axis=1)
    share = measured / np.maximum(bones_seen.sum(axis=1), 1)
    conf = bones_conf.mean(axis=1) * (1 + share) / 2
    out.confidence = np.where(usable, conf, 0.0).astype(np.float32)
    out.meta = dict(track.meta)
    out.meta["retargeted"] = {
        "scale": round(s, 5),
        "bone_factors": [round(float(v), 4) for v in k],
        "grounded": bool(ground and np.isfinite(ref_ground)),
        "anchor_frame": first,  # the frame closest to the reference's pose, put on it
        "reference_size": [reference_pose.width, reference_pose.height],
    }
    return out


def _hold_fill(raw: np.ndarray) -> np.ndarray:
    """NaN entries take the previous finite value (the first finite one before any)."""
    out = raw.copy()
    finite = np.flatnonzero(np.isfinite(out))
    if len(finite) == 0:
        return np.zeros_like(out)
    out[: finite[0]] = out[finite[0]]
    for i in range(finite[0] + 1, len(out)):
        if not np.isfinite(out[i]):
            out[i] = out[i - 1]
    return out


def _box_scale(ref: np.ndarray, drv: np.ndarray, min_conf: float) -> float:
    def height(b: np.ndarray) -> float:
        ys = b[b[:, 2] >= min_conf, 1]
        return float(ys.max() - ys.min()) if len(ys) >= 2 else 0.0

    hr, hd = height(ref), height(drv)
    return hr / hd if hr > 1e-6 and hd > 1e-6 else 1.0

