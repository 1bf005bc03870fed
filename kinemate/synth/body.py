"""A procedural 2.5D body: proportions, joint angles and forward kinematics.

The body lives in a 3D *body frame* measured in body heights (head top to sole is about
1.0): ``x`` points to the person's **left**, ``y`` points **down**, ``z`` points forward
(out of the chest). A person facing the camera therefore has their right side on the image
left, as in a photo. Poses are joint angles (one array of shape ``(F,)`` per angle, so a
whole clip goes through the kinematics at once); forward kinematics turns them into 3D
joint positions, which are then rotated by the body's yaw and projected orthographically
(image ``x, y``; ``z`` is kept as depth for the painter's algorithm).

Every limb segment direction is given by two angles relative to the torso frame:
``abd`` (abduction, rotation in the frontal plane away from the body's midline) and
``flex`` (flexion, rotation in the sagittal plane towards the front). ``abd = flex = 0``
points straight down. Bone lengths are therefore exactly constant across a clip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# 3D joints produced by forward kinematics, in this order (J = len(JOINTS)).
JOINTS: tuple[str, ...] = (
    "pelvis", "neck", "head",
    "r_shoulder", "r_elbow", "r_wrist", "r_hand",
    "l_shoulder", "l_elbow", "l_wrist", "l_hand",
    "r_hip", "r_knee", "r_ankle", "r_toe",
    "l_hip", "l_knee", "l_ankle", "l_toe",
    "nose", "r_eye", "l_eye", "r_ear", "l_ear",
)
J = {name: i for i, name in enumerate(JOINTS)}

# OpenPose COCO-18 body keypoint order (what pose tracks and skeleton maps use).
COCO18: tuple[str, ...] = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear",
    "l_ear",
)
COCO18_FROM_JOINTS = np.array([J[n] for n in COCO18])

# Bones whose 3D length is fixed by the body shape (joint name pairs); used by tests.
BONES: tuple[tuple[str, str], ...] = (
    ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"), ("l_shoulder", "l_elbow"),
    ("l_elbow", "l_wrist"), ("r_hip", "r_knee"), ("r_knee", "r_ankle"), ("l_hip", "l_knee"),
    ("l_knee", "l_ankle"), ("neck", "head"), ("r_ankle", "r_toe"), ("l_ankle", "l_toe"),
)

# Names of the angle tracks a motion produces (all radians except root_* in body units).
ANGLES: tuple[str, ...] = (
    "root_x", "root_dy", "yaw", "lean", "pitch", "head_roll", "head_pitch", "head_yaw",
    "r_sh_abd", "r_sh_flex", "r_fa_abd", "r_fa_flex",
    "l_sh_abd", "l_sh_flex", "l_fa_abd", "l_fa_flex",
    "r_hip_abd", "r_hip_flex", "r_knee", "r_foot",
    "l_hip_abd", "l_hip_flex", "l_knee", "l_foot",
)

# Rest pose: arms hanging slightly away from the body, legs slightly apart.
REST: dict[str, float] = {name: 0.0 for name in ANGLES}
REST.update(
    r_sh_abd=0.12, l_sh_abd=0.12, r_fa_abd=0.08, l_fa_abd=0.08,
    r_fa_flex=0.1, l_fa_flex=0.1, r_hip_abd=0.05, l_hip_abd=0.05,
)


@dataclass(frozen=True)
class BodyShape:
    """Proportions (body heights) and thickness (radii, body heights) of one person."""

    head_r: float = 0.068
    neck_len: float = 0.04
    torso_len: float = 0.30
    shoulder_hw: float = 0.105
    hip_hw: float = 0.075
    chest_hd: float = 0.055  # half depth of the chest (seen in profile)
    upper_arm: float = 0.17
    forearm: float = 0.15
    hand: float = 0.055
    thigh: float = 0.235
    shin: float = 0.225
    foot: float = 0.08
    r_upper_arm: float = 0.032
    r_forearm: float = 0.026
    r_hand: float = 0.022
    r_thigh: float = 0.05
    r_shin: float = 0.036
    r_foot: float = 0.022
    r_neck: float = 0.026

    @classmethod
    def sample(cls, rng: np.random.Generator) -> BodyShape:
        """A random but plausible adult or teenager."""
        u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
        girth = u(0.8, 1.35)
        broad = u(0.85, 1.15)
        limbs = u(0.93, 1.07)
        return cls(
            head_r=u(0.060, 0.078),
            neck_len=u(0.03, 0.05),
            torso_len=u(0.27, 0.32),
            shoulder_hw=0.105 * broad * u(0.95, 1.05),
            hip_hw=0.072 * u(0.9, 1.15) * (0.5 + 0.5 * girth),
            chest_hd=0.05 * girth,
            upper_arm=0.165 * limbs,
            forearm=0.148 * limbs,
            hand=u(0.05, 0.06),
            thigh=0.235 * limbs,
            shin=0.225 * limbs,
            foot=u(0.07, 0.09),
            r_upper_arm=0.03 * girth,
            r_forearm=0.024 * girth,
            r_hand=u(0.02, 0.024),
            r_thigh=0.048 * girth,
            r_shin=0.034 * girth,
            r_foot=u(0.02, 0.025),
            r_neck=0.024 * (0.6 + 0.4 * girth),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _rot_x(a: np.ndarray) -> np.ndarray:
    """Rotation about x (pitch; positive tips +y towards +z): (F, 3, 3)."""
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1),
                     np.stack([z, s, c], -1)], -2)


def _rot_y(a: np.ndarray) -> np.ndarray:
    """Rotation about y (yaw; positive turns the chest (+z) towards image right (+x))."""
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1),
                     np.stack([-s, z, c], -1)], -2)


def _rot_z(a: np.ndarray) -> np.ndarray:
    """Rotation about z (roll in the image plane; positive is clockwise on screen)."""
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1),
                     np.stack([z, z, o], -1)], -2)


def _apply(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(F, 3, 3) @ (F, 3) or (3,) -> (F, 3)."""
    v = np.broadcast_to(v, r.shape[:-2] + (3,))
    return np.einsum("fij,fj->fi", r, v)


def limb_dir(abd: np.ndarray, flex: np.ndarray, side: float) -> np.ndarray:
    """Unit direction (F, 3) of a limb segment; side is +1 for left limbs, -1 for right."""
    ca = np.cos(flex)
    return np.stack([side * np.sin(abd) * ca, np.cos(abd) * ca, np.sin(flex)], -1)


def forward_kinematics(shape: BodyShape, ang: dict[str, np.ndarray]) -> np.ndarray:
    """Joint positions (F, J, 3) in body units, pelvis at the origin, after yaw and lean.

    ``ang`` maps every name of :data:`ANGLES` to an array (F,). ``root_x``/``root_dy`` are
    not applied here (the renderer places the body in the frame).
    """
    F = len(ang["yaw"])
    out = np.zeros((F, len(JOINTS), 3))
    r_pitch = _rot_x(-ang["pitch"])  # bending forward tips the neck towards +z
    neck = _apply(r_pitch, np.array([0.0, -shape.torso_len, 0.0]))
    out[:, J["neck"]] = neck
    for side, s in (("r", -1.0), ("l", 1.0)):
        sh = neck + _apply(r_pitch, np.array([s * shape.shoulder_hw, 0.02, 0.0]))
        el = sh + _apply(r_pitch, limb_dir(ang[f"{side}_sh_abd"], ang[f"{side}_sh_flex"], s)
                         * shape.upper_arm)
        fa = _apply(r_pitch, limb_dir(ang[f"{side}_fa_abd"], ang[f"{side}_fa_flex"], s))
        wr = el + fa * shape.forearm
        out[:, J[f"{side}_shoulder"]] = sh
        out[:, J[f"{side}_elbow"]] = el
        out[:, J[f"{side}_wrist"]] = wr
        out[:, J[f"{side}_hand"]] = wr + fa * shape.hand
        hip = np.broadcast_to(np.array([s * shape.hip_hw, 0.0, 0.0]), (F, 3))
        th = limb_dir(ang[f"{side}_hip_abd"], ang[f"{side}_hip_flex"], s)
        kn = hip + th * shape.thigh
        sn = limb_dir(ang[f"{side}_hip_abd"], ang[f"{side}_hip_flex"] - ang[f"{side}_knee"], s)
        an = kn + sn * shape.shin
        # the foot points forward (and a little outward), tilted by the shin and by r_foot
        fp = ang[f"{side}_hip_flex"] - ang[f"{side}_knee"] + ang[f"{side}_foot"]
        fd = np.stack([np.full(F, s * 0.3), -np.sin(fp) * 0.2 + 0.25, np.cos(fp)], -1)
        fd /= np.linalg.norm(fd, axis=-1, keepdims=True)
        out[:, J[f"{side}_hip"]] = hip
        out[:, J[f"{side}_knee"]] = kn
        out[:, J[f"{side}_ankle"]] = an
        out[:, J[f"{side}_toe"]] = an + fd * shape.foot
    # head: centre above the neck; face landmarks on the head sphere
    r_head = r_pitch @ _rot_z(ang["head_roll"]) @ _rot_y(ang["head_yaw"]) @ _rot_x(
        -ang["head_pitch"])
    head = neck + _apply(r_head, np.array([0.0, -(shape.neck_len + shape.head_r), 0.0]))
    out[:, J["head"]] = head
    hr = shape.head_r
    for name, v in FACE_POINTS.items():
        out[:, J[name]] = head + _apply(r_head, np.asarray(v) * hr)
    # global lean (roll about the pelvis) and yaw
    r_glob = _rot_y(ang["yaw"]) @ _rot_z(ang["lean"])
    return np.einsum("fij,fkj->fki", r_glob, out)


# Face landmarks as multiples of the head radius in the head frame (x = person's left).
FACE_POINTS: dict[str, tuple[float, float, float]] = {
    "nose": (0.0, 0.22, 0.92),
    "r_eye": (-0.36, -0.05, 0.86),
    "l_eye": (0.36, -0.05, 0.86),
    "r_ear": (-0.85, 0.05, -0.05),
    "l_ear": (0.85, 0.05, -0.05),
}


def head_rotation(ang: dict[str, np.ndarray]) -> np.ndarray:
    """Full rotation (F, 3, 3) of the head frame into camera space (yaw, lean, pitch, head)."""
    return (_rot_y(ang["yaw"]) @ _rot_z(ang["lean"]) @ _rot_x(-ang["pitch"])
            @ _rot_z(ang["head_roll"]) @ _rot_y(ang["head_yaw"]) @ _rot_x(-ang["head_pitch"]))


def torso_rotation(ang: dict[str, np.ndarray]) -> np.ndarray:
    """Rotation (F, 3, 3) of the torso frame into camera space."""
    return _rot_y(ang["yaw"]) @ _rot_z(ang["lean"]) @ _rot_x(-ang["pitch"])


def hips_rotation(ang: dict[str, np.ndarray]) -> np.ndarray:
    """Rotation (F, 3, 3) of the pelvis frame into camera space."""
    return _rot_y(ang["yaw"]) @ _rot_z(ang["lean"])


# ---------------------------------------------------------------------------------------
# Hands (OpenPose hand-21) and face (OpenPose face-70) keypoints

# Face landmarks (iBUG 68 + right and left pupil) as (x, y) on the unit head sphere seen from the
# front (x = person's left, y down; z = sqrt(1 - x^2 - y^2)). Point 0 is on the person's right.
def _face_template() -> np.ndarray:
    pts: list[tuple[float, float]] = []
    for i in range(17):  # jaw, right ear -> chin -> left ear
        a = np.pi * i / 16
        pts.append((-0.8 * np.cos(a), -0.02 + 0.74 * np.sin(a) ** 1.2))
    for x in np.linspace(-0.6, -0.16, 5):  # right brow
        pts.append((x, -0.3 - 0.06 * np.sin(np.pi * (x + 0.6) / 0.44)))
    for x in np.linspace(0.16, 0.6, 5):  # left brow
        pts.append((x, -0.3 - 0.06 * np.sin(np.pi * (x - 0.16) / 0.44)))
    for y in np.linspace(-0.18, 0.16, 4):  # nose bridge
        pts.append((0.0, y))
    for x in np.linspace(-0.14, 0.14, 5):  # nostrils
        pts.append((x, 0.27 - 0.02 * (1 - abs(x) / 0.14)))
    for cx, outer_first in ((-0.386, True), (0.386, False)):  # eyes, iBUG order
        hw, hh = 0.11, 0.045
        if outer_first:  # right eye: outer corner, upper outer, upper inner, inner, lower ...
            ring = [(-hw, 0), (-hw / 2, -hh), (hw / 2, -hh), (hw, 0), (hw / 2, hh), (-hw / 2, hh)]
        else:  # left eye: inner corner, upper inner, upper outer, outer, lower ...
            ring = [(-hw, 0), (-hw / 2, -hh), (hw / 2, -hh), (hw, 0), (hw / 2, hh), (-hw / 2, hh)]
        pts.extend((cx + dx, -0.054 + dy) for dx, dy in ring)
    outer = [(-0.2, 0.5), (-0.13, 0.46), (-0.06, 0.445), (0.0, 0.455), (0.06, 0.445),
             (0.13, 0.46), (0.2, 0.5), (0.13, 0.54), (0.06, 0.56), (0.0, 0.565), (-0.06, 0.56),
             (-0.13, 0.54)]
    inner = [(-0.15, 0.5), (-0.06, 0.49), (0.0, 0.49), (0.06, 0.49), (0.15, 0.5), (0.06, 0.51),
             (0.0, 0.515), (-0.06, 0.51)]
    pts.extend(outer + inner)
    pts.extend([(-0.386, -0.054), (0.386, -0.054)])  # pupils
    xy = np.array(pts)
    z = np.sqrt(np.clip(1.0 - (xy ** 2).sum(-1), 0.0, None))
    return np.concatenate([xy, z[:, None]], -1)


FACE70 = _face_template()  # (70, 3) unit-sphere points in the head frame


def face_points(head: np.ndarray, rot_head: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Face-70 keypoints (F, 70, 3) in the units of ``head`` (F, 3), and (F, 70) visibility
    (the landmark's surface faces the camera)."""
    n = np.einsum("fij,kj->fki", rot_head, FACE70)
    return head[:, None, :] + n * radius, n[..., 2] > 0.2


def hand_points(wrist: np.ndarray, elbow: np.ndarray, forward: np.ndarray, length: float,
                width: float) -> np.ndarray:
    """Hand-21 keypoints (F, 21, 3) of a mitten-like hand: ``wrist``/``elbow`` (F, 3), the
    torso's forward axis ``forward`` (F, 3) (the thumb side when the palm faces the thigh),
    hand ``length`` and half ``width`` in the same units."""
    fa = wrist - elbow
    fa /= np.maximum(np.linalg.norm(fa, axis=-1, keepdims=True), 1e-9)
    lat = forward - (forward * fa).sum(-1, keepdims=True) * fa
    ln = np.linalg.norm(lat, axis=-1, keepdims=True)
    fallback = np.cross(fa, np.array([0.0, 0.0, 1.0]))
    lat = np.where(ln > 1e-3, lat / np.maximum(ln, 1e-9), fallback)
    lat /= np.maximum(np.linalg.norm(lat, axis=-1, keepdims=True), 1e-9)
    out = np.zeros(wrist.shape[:1] + (21, 3))
    out[:, 0] = wrist

    def at(along, across):
        return wrist + fa * (along * length) + lat * (across * width)

    # thumb: CMC, MCP, IP, tip
    for k, (a, c) in enumerate(((0.12, 0.6), (0.3, 0.95), (0.48, 1.15), (0.64, 1.25))):
        out[:, 1 + k] = at(a, c)
    # fingers: index, middle, ring, pinky; MCP, PIP, DIP, tip
    for f, (spread, reach) in enumerate(((0.55, 1.0), (0.18, 1.06), (-0.18, 1.0), (-0.55, 0.9))):
        for k, t in enumerate((0.0, 0.38, 0.7, 1.0)):
            along = 0.45 + (reach - 0.45) * t
            out[:, 5 + 4 * f + k] = at(along, spread * (1.0 + 0.25 * t))
    return out
