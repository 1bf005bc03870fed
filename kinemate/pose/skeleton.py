"""Keypoint conventions: kinemate's internal skeleton and the mappings into it.

kinemate stores every pose in the OpenPose layout that pose ControlNets were trained on:

* **body** — OpenPose COCO-18 (``BODY_NAMES``): nose, neck, right arm, left arm, right leg,
  left leg, eyes, ears. "Right" is the *person's* right (on the image's left when the person
  faces the camera).
* **hands** — OpenPose / MediaPipe hand-21 (``HAND_NAMES``): wrist, then four joints per
  finger from thumb to little finger. Both conventions use the same order.
* **face** — OpenPose face-70 (the iBUG 68 points + two pupils), approximated from the
  MediaPipe face mesh with ``FACE68_FROM_MEDIAPIPE468`` (see docs/pose.md).

The tables here are data, not code: drawing, retargeting and format conversion all read them.
"""

from __future__ import annotations

import colorsys

BODY_NAMES: tuple[str, ...] = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
NUM_BODY = 18
NUM_HAND = 21
NUM_FACE = 70

NOSE, NECK = 0, 1
R_SHOULDER, R_ELBOW, R_WRIST = 2, 3, 4
L_SHOULDER, L_ELBOW, L_WRIST = 5, 6, 7
R_HIP, R_KNEE, R_ANKLE = 8, 9, 10
L_HIP, L_KNEE, L_ANKLE = 11, 12, 13
R_EYE, L_EYE, R_EAR, L_EAR = 14, 15, 16, 17

# The 17 limbs OpenPose draws, in its drawing order (0-based pairs); limb i is drawn in
# BODY_COLORS[i]. They form a tree rooted at the neck, which retargeting walks.
BODY_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7),
    (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

# The standard 18 OpenPose colours (RGB): keypoint i is drawn in BODY_COLORS[i], limb i in
# BODY_COLORS[i] at 60 % intensity.
BODY_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
LIMB_INTENSITY = 0.6

HAND_NAMES: tuple[str, ...] = ("wrist",) + tuple(
    f"{finger}_{joint}"
    for finger in ("thumb", "index", "middle", "ring", "pinky")
    for joint in (1, 2, 3, 4)
)

# The 20 hand edges in OpenPose drawing order: per finger, wrist->base->...->tip.
HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    pair
    for base in (1, 5, 9, 13, 17)
    for pair in ((0, base), (base, base + 1), (base + 1, base + 2), (base + 2, base + 3))
)
# Hand edge i is drawn in the hue i / 20 (full saturation and value), as OpenPose does.
HAND_EDGE_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))  # type: ignore[misc]
    for i in range(len(HAND_EDGES))
)
HAND_POINT_COLOR = (0, 0, 255)
FACE_POINT_COLOR = (255, 255, 255)

# --- OpenPose BODY_25 <-> COCO-18 -------------------------------------------------------------
# BODY_25 order: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist, mid-hip,
# r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear, l-big-toe,
# l-small-toe, l-heel, r-big-toe, r-small-toe, r-heel.
BODY25_FROM_COCO18: dict[int, int] = {  # BODY_25 index -> COCO-18 index
    0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7,
    9: 8, 10: 9, 11: 10, 12: 11, 13: 12, 14: 13,
    15: 14, 16: 15, 17: 16, 18: 17,
}  # fmt: skip
BODY25_MID_HIP = 8
NUM_BODY25 = 25

# --- MediaPipe -> kinemate --------------------------------------------------------------------
# MediaPipe pose has 33 landmarks; COCO-18 index -> MediaPipe index. The neck (1) has no
# MediaPipe landmark: it is the midpoint of the shoulders (11, 12), with the smaller of their
# two confidences.
COCO18_FROM_MEDIAPIPE33: dict[int, int] = {
    0: 0,  # nose
    2: 12, 3: 14, 4: 16,  # right shoulder, elbow, wrist
    5: 11, 6: 13, 7: 15,  # left shoulder, elbow, wrist
    8: 24, 9: 26, 10: 28,  # right hip, knee, ankle
    11: 23, 12: 25, 13: 27,  # left hip, knee, ankle
    14: 5, 15: 2,  # right eye, left eye (the eye centres, not the corners)
    16: 8, 17: 7,  # right ear, left ear
}
MEDIAPIPE_NECK_FROM = (11, 12)

# OpenPose face-70 = iBUG-68 + right pupil (68) + left pupil (69), approximated by MediaPipe
# face-mesh (468 points) indices. Pupils are the centres of the six eye-contour points.
FACE68_FROM_MEDIAPIPE468: tuple[int, ...] = (
    # 0-16 jaw line, from the person's right (image left) over the chin to the left
    127, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 356,
    # 17-21 right eyebrow (outer to inner), 22-26 left eyebrow (inner to outer)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # 27-30 nose bridge (top to tip), 31-35 nostrils (right to left)
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    # 36-41 right eye, 42-47 left eye (from the outer/inner corner over the upper lid)
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # 48-59 outer lips (from the right corner, over the upper lip), 60-67 inner lips
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    78, 81, 13, 311, 308, 402, 14, 178,
)  # fmt: skip
FACE_RIGHT_EYE = tuple(range(36, 42))
FACE_LEFT_EYE = tuple(range(42, 48))

assert len(BODY_NAMES) == NUM_BODY == len(BODY_COLORS)
assert len(BODY_LIMBS) == 17
assert len(HAND_NAMES) == NUM_HAND and len(HAND_EDGES) == 20
assert len(set(FACE68_FROM_MEDIAPIPE468)) == 68


def tree_order() -> list[tuple[int, int]]:
    """The body limbs as (parent, child), ordered so that every parent comes before its children.

    The tree is rooted at the neck: neck -> shoulders -> elbows -> wrists, neck -> hips ->
    knees -> ankles, neck -> nose -> eyes -> ears.
    """
    order: list[tuple[int, int]] = []
    reached = {NECK}
    pending = list(BODY_LIMBS)
    while pending:
        for limb in list(pending):
            if limb[0] in reached:
                order.append(limb)
                reached.add(limb[1])
                pending.remove(limb)
    return order


BODY_PARENT: dict[int, int] = {child: parent for parent, child in BODY_LIMBS}
