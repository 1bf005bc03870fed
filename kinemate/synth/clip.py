"""Synthetic clips: a procedural person performing a motion, with exact ground truth.

``generate_clip(seed, num_frames, size)`` is a pure function of its arguments: the same
arguments give bitwise identical arrays. The seed picks everything (body, appearance,
background, motion, framing) through independent sub-streams, so asking for a specific
``motion`` keeps the same person and scene.

Seed ranges: training uses seeds ``0 <= seed < 1_000_000`` (:data:`TRAIN_SEEDS`); held-out
evaluation uses seeds ``>= 1_000_000`` (:data:`EVAL_SEEDS`). :class:`SyntheticClips`
enforces the split so evaluation people and motions are never seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import cv2
import numpy as np

from kinemate.errors import UsageError
from kinemate.synth.appearance import render_background, sample_appearance
from kinemate.synth.body import (
    COCO18,
    COCO18_FROM_JOINTS,
    JOINTS,
    BodyShape,
    J,
    face_points,
    forward_kinematics,
    hand_points,
    head_rotation,
    hips_rotation,
    torso_rotation,
)
from kinemate.synth.motions import MOTIONS, sample_motion
from kinemate.synth.render import Canvas, person_prims, shadow

# Bumped whenever the same arguments would give different clips (people, motions, framing,
# rendering); recorded in every clip's meta and dataset.json so data can be traced to the code.
GENERATOR_VERSION = 1

TRAIN_SEEDS = range(0, 1_000_000)
EVAL_SEEDS = range(1_000_000, 2_000_000)
DEFAULT_FPS = 15.0


@dataclass
class Clip:
    """One synthetic clip and its ground truth (F frames of W x H pixels).

    * ``frames``   uint8 (F, H, W, 3) RGB
    * ``pose``     float32 (F, 18, 3) OpenPose COCO-18 body keypoints ``(x, y, conf)`` in
      pixels; conf is 1 for visible joints, 0 for joints outside the image and for face
      points on the far side of the head (see :data:`kinemate.synth.body.COCO18`)
    * ``hand_left``, ``hand_right`` float32 (F, 21, 3) OpenPose hand-21 keypoints of the
      person's left / right hand; ``face`` float32 (F, 70, 3) OpenPose face-70 keypoints
      (conf 0 where the face turns away or outside the image)
    * ``skeleton`` uint8 (F, H, W, 3) OpenPose control maps of the body, hands and face,
      drawn by :mod:`kinemate.pose.render` exactly as for driving videos (None if not
      requested)
    * ``parts``    uint8 (F, H, W) DensePose part index per pixel: 0 background, 1..24
      (:data:`kinemate.synth.render.PART_NAMES`)
    * ``iuv``      uint8 (F, H, W, 3) DensePose IUV image: (I, U*255, V*255)
    * ``uv``       float32 (F, 2, H, W) the exact DensePose U, V fields in [0, 1] (0 off the
      body), one ``(2, H, W)`` array per frame as DreamPose reads them (kinemate.pose.uv)
    * ``densepose`` uint8 (F, H, W, 3) the DensePose control map MagicAnimate uses (part
      index through the viridis colour map, background = viridis(0)); None if not requested
    * ``mask``     bool (F, H, W) person mask
    * ``background`` uint8 (H, W, 3) the empty scene (static over the clip)
    * ``joints3d`` float32 (F, len(JOINTS), 3) 3D joints in pixels (x, y image; z towards
      the camera) — the exact kinematic state; its bone lengths are constant
    """

    frames: np.ndarray
    pose: np.ndarray
    skeleton: np.ndarray | None
    parts: np.ndarray
    iuv: np.ndarray
    densepose: np.ndarray | None
    mask: np.ndarray
    background: np.ndarray
    joints3d: np.ndarray
    fps: float
    meta: dict = field(default_factory=dict)
    hand_left: np.ndarray | None = None
    hand_right: np.ndarray | None = None
    face: np.ndarray | None = None
    uv: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return (self.frames.shape[2], self.frames.shape[1])

    def pose_track(self):
        """The pose as a :class:`kinemate.pose.PoseTrack` (body, hands, face)."""
        return to_pose_track(self.pose, self.size, self.fps, self.meta,
                             hand_left=self.hand_left, hand_right=self.hand_right,
                             face=self.face)


def to_pose_track(pose: np.ndarray, size_wh: tuple[int, int], fps: float, meta: dict | None = None,
                  *, hand_left=None, hand_right=None, face=None):
    """Wrap (F, 18, 3) COCO-18 keypoints (and optionally (F, 21, 3) hands, (F, 70, 3) face)
    as a kinemate PoseTrack."""
    from kinemate.pose.track import PoseTrack

    track = PoseTrack.empty(len(pose), size_wh[0], size_wh[1], fps)
    track.body[:] = pose
    for name, arr in (("hand_left", hand_left), ("hand_right", hand_right), ("face", face)):
        if arr is not None:
            getattr(track, name)[:] = arr
    track.confidence = track.present().astype(np.float32)
    track.meta = {"source": "kinemate.synth", **({"seed": meta["seed"]} if meta else {})}
    return track


def parse_clip_size(size) -> tuple[int, int]:
    """(W, H) from an int (square), "WxH" or a pair; 16 to 4096 pixels a side."""
    from kinemate.io.framing import parse_size

    parsed = parse_size(size, multiple=1, min_side=16, max_side=4096)
    if parsed is None:
        raise UsageError("`size` is required for synthetic clips (e.g. 128x128)")
    return parsed


def render_skeleton_maps(pose: np.ndarray, size_wh: tuple[int, int], *, hand_left=None,
                         hand_right=None, face=None) -> np.ndarray:
    """OpenPose control maps (F, H, W, 3) for (F, 18, 3) body keypoints, plus hands (F, 21, 3)
    and face (F, 70, 3) when given — drawn by :func:`kinemate.pose.render.draw_pose`, the
    renderer used for driving videos, at its default line widths for this size."""
    w, h = size_wh
    out = np.zeros((len(pose), h, w, 3), np.uint8)
    try:
        from kinemate.pose.render import draw_pose
    except Exception:  # pragma: no cover - kinemate.pose always ships draw_pose
        draw_pose = None
    for i, body in enumerate(pose):
        if draw_pose is None:
            _draw_body_fallback(out[i], body, min(w, h) / 512.0)
            continue
        parts = {"body": body}
        for name, arr in (("hand_left", hand_left), ("hand_right", hand_right), ("face", face)):
            if arr is not None:
                parts[name] = arr[i]
        draw_pose(out[i], parts)
    return out


def _draw_body_fallback(canvas: np.ndarray, body: np.ndarray, scale: float) -> None:
    limbs = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
             (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
    colours = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0),
               (85, 255, 0), (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255),
               (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255), (170, 0, 255),
               (255, 0, 255), (255, 0, 170), (255, 0, 85)]
    stick = max(1, int(round(4 * scale)))
    ok = body[:, 2] > 0.5
    for i, (a, b) in enumerate(limbs):
        if ok[a] and ok[b]:
            (xa, ya), (xb, yb) = body[a, :2], body[b, :2]
            poly = cv2.ellipse2Poly((int((xa + xb) / 2), int((ya + yb) / 2)),
                                    (int(np.hypot(xa - xb, ya - yb) / 2), stick),
                                    int(np.degrees(np.arctan2(yb - ya, xb - xa))), 0, 360, 1)
            cv2.fillConvexPoly(canvas, poly, [int(c * 0.6) for c in colours[i]])
    for k in range(18):
        if ok[k]:
            cv2.circle(canvas, (int(body[k, 0]), int(body[k, 1])), stick, colours[k], -1)


def densepose_map(parts: np.ndarray) -> np.ndarray:
    """MagicAnimate-style DensePose control map(s) from part indices (..., H, W) -> (..., H, W, 3).

    The part index I (0..24) is scaled by 255/24 and coloured with viridis, as DensePose's
    fine-segmentation visualiser does; the background is viridis(0) (dark purple).
    """
    flat = (parts.reshape(-1, parts.shape[-1]).astype(np.float32) * (255.0 / 24.0)).astype(np.uint8)
    rgb = cv2.applyColorMap(flat, cv2.COLORMAP_VIRIDIS)[..., ::-1]
    return np.ascontiguousarray(rgb.reshape(parts.shape + (3,)))


def _face_visibility(j3: np.ndarray, head_r: float) -> np.ndarray:
    """(F, 18) bool: face keypoints on the visible side of the head."""
    vis = np.ones(j3.shape[:1] + (len(COCO18),), bool)
    hz = j3[:, J["head"], 2]
    for name, thresh in (("nose", 0.3), ("r_eye", 0.25), ("l_eye", 0.25), ("r_ear", -0.35),
                         ("l_ear", -0.35)):
        vis[:, COCO18.index(name)] = (j3[:, J[name], 2] - hz) > thresh * head_r
    return vis


def generate_clip(seed: int, num_frames: int = 16, size=(128, 128), motion: str | None = None,
                  *, fps: float = DEFAULT_FPS, skeleton: bool = True,
                  densepose: bool = True, skeleton_hands: bool = True,
                  skeleton_face: bool = True) -> Clip:
    """Generate one synthetic clip (see :class:`Clip`). ``size`` is (W, H), an int or "WxH".

    ``motion``: one of :data:`kinemate.synth.motions.MOTIONS` (None: drawn from the seed).
    ``skeleton`` / ``densepose``: also render those control maps (cheap; off saves time).
    ``skeleton_hands`` / ``skeleton_face``: draw hands / face into the skeleton maps (as the
    driving-video renderer does by default); the keypoints are in the clip either way.
    """
    if num_frames < 1:
        raise UsageError(f"num_frames must be at least 1, got {num_frames}")
    if not fps > 0:
        raise UsageError(f"fps must be positive, got {fps}")
    w, h = parse_clip_size(size)
    seed = int(seed)
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    rng_body = np.random.default_rng([seed, 1])
    rng_motion = np.random.default_rng([seed, 2])
    rng_scene = np.random.default_rng([seed, 3])
    rng_background = np.random.default_rng([seed, 4])

    shape = BodyShape.sample(rng_body)
    app = sample_appearance(rng_body)
    t = np.arange(num_frames, dtype=np.float64) / fps
    motion_name, ang, mparams = sample_motion(motion, t, rng_motion)

    # --- kinematics in body units; feet pinned to the floor (y = 0), jumps lift the body
    j3 = forward_kinematics(shape, ang)  # (F, J, 3)
    feet = j3[:, [J["r_ankle"], J["l_ankle"], J["r_toe"], J["l_toe"]], 1] + shape.r_foot * 1.1
    lift = feet.max(axis=1) + ang["root_dy"]
    j3[..., 1] -= lift[:, None]
    j3[..., 0] += ang["root_x"][:, None]

    # --- framing: scale and place the whole clip's extent inside the image
    hair_vol = 1.4 if app.hair_style == "afro" else 1.1
    top = (j3[:, J["head"], 1] - shape.head_r * hair_vol).min()
    top = min(top, (j3[:, [J["r_hand"], J["l_hand"]], 1]).min() - shape.r_hand)
    pad = max(shape.r_thigh, shape.r_upper_arm, shape.hip_hw) + 0.03
    xmin = j3[..., 0].min() - pad
    xmax = j3[..., 0].max() + pad
    ext_h, ext_w = -top + 0.01, xmax - xmin
    close_up = rng_scene.random() < 0.15
    frac_u, ground_u, ox_u = rng_scene.random(3)  # always drawn: streams stay aligned
    frac = 1.15 + 0.35 * frac_u if close_up else 0.6 + 0.32 * frac_u
    s = frac * h / ext_h
    s = min(s, 0.96 * w / ext_w)
    margin = 0.02 * h
    if close_up and ext_h * s > h - 2 * margin:
        ground = margin + ext_h * s  # head at the top, legs leave the frame
    else:
        lo, hi = margin + ext_h * s, h - margin
        ground = lo + (hi - lo) * ground_u if hi > lo else 0.5 * (lo + hi)
    lo, hi = 0.02 * w - xmin * s, 0.98 * w - xmax * s
    ox = lo + (hi - lo) * ox_u if hi > lo else 0.5 * (lo + hi)
    jp = j3 * s
    jp[..., 0] += ox
    jp[..., 1] += ground

    # --- hands and face keypoints (3D, pixels)
    rot_head, rot_torso, rot_hips = head_rotation(ang), torso_rotation(ang), hips_rotation(ang)
    hands = {
        side: hand_points(jp[:, J[f"{side}_wrist"]], jp[:, J[f"{side}_elbow"]],
                          rot_torso[:, :, 2], shape.hand * s, shape.r_hand * s)
        for side in "rl"
    }
    face3, face_vis = face_points(jp[:, J["head"]], rot_head, shape.head_r * s)

    # --- background (static) and per-frame painting
    bg, bg_meta = render_background(rng_background, w, h, ground)
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    parts = np.empty((num_frames, h, w), np.uint8)
    iuv = np.empty((num_frames, h, w, 3), np.uint8)
    uv = np.zeros((num_frames, 2, h, w), np.float32)
    mask = np.empty((num_frames, h, w), bool)
    shadow_strength = 0.15 + 0.25 * float(rng_background.random())
    # lighting of the clip: a key light from the front-left/right and above, ambient share,
    # and a colour temperature / exposure applied to the whole frame
    az, el, amb, temp, expo = rng_background.random(5)
    az, el = (az - 0.5) * 1.6, el * 0.6
    light = (np.sin(az) * np.cos(el), -np.sin(el), np.cos(az) * np.cos(el))
    ambient = 0.5 + 0.25 * amb
    t = (temp - 0.5) * 0.12
    grade = np.array([1.0 + t, 1.0, 1.0 - t], np.float32) * (0.9 + 0.2 * expo)
    feet_ids = [J["r_ankle"], J["l_ankle"], J["r_toe"], J["l_toe"]]
    for f in range(num_frames):
        canvas = Canvas(bg, light, ambient)
        fx = jp[f, feet_ids, 0]
        air = ang["root_dy"][f]
        shadow(canvas.rgb, float(fx.mean()), ground,
               float(max(fx.max() - fx.min(), shape.hip_hw * 3 * s) * 0.7 + 2),
               shadow_strength * max(0.0, 1.0 - 6.0 * air))
        thumbs = {side: (hands[side][f, 1], hands[side][f, 4]) for side in "rl"}
        for prim in person_prims(jp[f, :, :2], jp[f, :, 2], s, shape, app, rot_head[f],
                                 rot_torso[f], rot_hips[f], thumbs=thumbs):
            prim.paint(canvas)
        frames[f] = np.clip(canvas.rgb * (grade * 255.0) + 0.5, 0, 255).astype(np.uint8)
        parts[f] = canvas.parts
        mask[f] = canvas.parts > 0
        iuv[f, ..., 0] = canvas.parts
        iuv[f, ..., 1] = (canvas.u * 255.0 + 0.5).astype(np.uint8)
        iuv[f, ..., 2] = (canvas.v * 255.0 + 0.5).astype(np.uint8)
        body = canvas.parts > 0
        uv[f, 0][body] = canvas.u[body]
        uv[f, 1][body] = canvas.v[body]

    # --- keypoints (COCO-18)
    kp = np.zeros((num_frames, len(COCO18), 3), np.float32)
    kp[..., :2] = jp[:, COCO18_FROM_JOINTS, :2]
    inside = ((kp[..., 0] >= 0) & (kp[..., 0] <= w - 1) & (kp[..., 1] >= 0)
              & (kp[..., 1] <= h - 1))
    vis = inside & _face_visibility(jp / s, shape.head_r)
    kp[..., 2] = vis.astype(np.float32)
    kp[~vis, :2] = 0.0

    def keypoints(p3: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
        out = np.zeros(p3.shape[:2] + (3,), np.float32)
        out[..., :2] = p3[..., :2]
        ok = ((out[..., 0] >= 0) & (out[..., 0] <= w - 1) & (out[..., 1] >= 0)
              & (out[..., 1] <= h - 1))
        if visible is not None:
            ok &= visible
        out[..., 2] = ok
        out[~ok, :2] = 0.0
        return out

    hand_r, hand_l = keypoints(hands["r"]), keypoints(hands["l"])
    face_kp = keypoints(face3, face_vis)

    meta = {
        "seed": seed,
        "generator": "kinemate.synth",
        "generator_version": GENERATOR_VERSION,
        "motion": motion_name,
        "motion_params": mparams,
        "body": shape.to_dict(),
        "appearance": app.to_dict(),
        "background": bg_meta,
        "light": {"direction": [float(c) for c in light], "ambient": float(ambient),
                  "grade": [float(c) for c in grade]},
        "scale_px": float(s),
        "ground_y": float(ground),
        "close_up": bool(close_up),
        "fps": float(fps),
    }
    return Clip(
        frames=frames,
        pose=kp,
        skeleton=render_skeleton_maps(
            kp, (w, h), hand_left=hand_l if skeleton_hands else None,
            hand_right=hand_r if skeleton_hands else None,
            face=face_kp if skeleton_face else None) if skeleton else None,
        parts=parts,
        iuv=iuv,
        densepose=densepose_map(parts) if densepose else None,
        mask=mask,
        background=np.clip(bg * (grade * 255.0) + 0.5, 0, 255).astype(np.uint8),
        joints3d=jp.astype(np.float32),
        fps=float(fps),
        meta=meta,
        hand_left=hand_l,
        hand_right=hand_r,
        face=face_kp,
        uv=uv,
    )


def split_seeds(split: str) -> range:
    """The seed range of a split: "train" or "eval"."""
    if split == "train":
        return TRAIN_SEEDS
    if split == "eval":
        return EVAL_SEEDS
    raise UsageError(f"unknown split {split!r}; use 'train' or 'eval'")


class SyntheticClips(Sequence):
    """A torch-free, map-style and iterable collection of synthetic clips.

    Clip ``i`` is ``generate_clip(split_start + start + i, ...)``; the seeds stay inside the
    split's range (:func:`split_seeds`), so train and eval never share a person.
    ``num_clips`` None means the whole rest of the split's range.
    """

    def __init__(self, num_clips: int | None = None, *, split: str = "train", start: int = 0,
                 num_frames: int = 16, size=(128, 128), fps: float = DEFAULT_FPS,
                 motions: Sequence[str] | None = None, skeleton: bool = True,
                 densepose: bool = True):
        seeds = split_seeds(split)
        if start < 0 or start >= len(seeds):
            raise UsageError(f"start {start} is outside the {split} split (0..{len(seeds) - 1})")
        avail = len(seeds) - start
        if num_clips is not None and num_clips > avail:
            raise UsageError(f"the {split} split has only {avail} seeds from start {start}")
        for m in motions or ():
            if m not in MOTIONS:
                raise UsageError(f"unknown motion {m!r}; choose from {', '.join(sorted(MOTIONS))}")
        self.split = split
        self.first_seed = seeds.start + start
        self.num_clips = avail if num_clips is None else int(num_clips)
        self.kwargs = dict(num_frames=num_frames, size=parse_clip_size(size), fps=fps,
                           skeleton=skeleton, densepose=densepose)
        self.motions = list(motions) if motions else None

    def seed(self, i: int) -> int:
        return self.first_seed + i

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        seed = self.seed(i)
        motion = self.motions[seed % len(self.motions)] if self.motions else None
        return generate_clip(seed, motion=motion, **self.kwargs)

    def __iter__(self) -> Iterator[Clip]:
        for i in range(len(self)):
            yield self[i]


__all__ = [
    "GENERATOR_VERSION", "Clip", "generate_clip", "SyntheticClips", "TRAIN_SEEDS", "EVAL_SEEDS", "JOINTS",
    "densepose_map", "render_skeleton_maps", "split_seeds", "to_pose_track",
]
