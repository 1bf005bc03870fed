"""A rig of the person in one photo: one rigid piece per bone, posed by body keypoints.

:class:`PhotoRig` is built once per video from the (framed) reference photo, its COCO-18 body
keypoints and a soft person mask; :meth:`PhotoRig.render` then moves the person to one pose
(COCO-18 keypoints in the same pixels) with one ``cv2.warpAffine`` per piece, at the photo's
resolution.

How (numpy and OpenCV; nothing is learned):

* **Bones.** The torso (neck, shoulders, hips: an affine fit by ``cv2.estimateAffine2D``),
  the head (a similarity fit of neck, nose, eyes, ears, at the body's scale) and eight limb
  bones (upper arm, forearm, thigh, shin), each an affine map from the reference to the pose:
  rotated onto the new bone direction, stretched along the bone (foreshortening, bounded) and
  scaled across it with the body. A bone whose keypoints the pose lacks follows its parent.
* **Pieces.** Pixels of the person belong softly to the bone nearest to them (distance to
  the bone's axis, or the torso's quadrilateral, counted in bone radii; a softmax), and each
  bone's share of the person becomes a premultiplied RGBA piece. Where two pieces join, the
  one drawn behind also carries the other's share near the joint, so a bending joint is
  covered from behind instead of opening a gap. Pieces are drawn back to front (legs, torso,
  head, right arm, left arm): an arm crossing the body is drawn over it, the torso over the
  tops of the legs.
* **What was hidden.** The background behind the person is filled once (``cv2.inpaint`` at a
  reduced scale); so is the part of the torso the arms covered in the photo (filled from the
  torso around them), which the torso piece shows when an arm moves away. Piece edges are
  feathered (soft seams).

An earlier version drew five layers with inverse linear-blend skinning (a smooth backward map
per layer, ``cv2.remap``); where a bent joint brought two bones of a layer close, the map
jumped between them and the upsampled map smeared streaks across the limb. Rigid pieces with
covered joints do not, and cost one small warp each.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kinemate.pose.skeleton import (L_ANKLE, L_EAR, L_ELBOW, L_EYE, L_HIP, L_KNEE, L_SHOULDER,
                                    L_WRIST, NECK, NOSE, R_ANKLE, R_EAR, R_ELBOW, R_EYE, R_HIP,
                                    R_KNEE, R_SHOULDER, R_WRIST)

# limb bones: name -> (joint a, joint b, parent bone, layer)
LIMBS: dict[str, tuple[int, int, str, str]] = {
    "r_upper_arm": (R_SHOULDER, R_ELBOW, "torso", "arm_r"),
    "r_forearm": (R_ELBOW, R_WRIST, "r_upper_arm", "arm_r"),
    "l_upper_arm": (L_SHOULDER, L_ELBOW, "torso", "arm_l"),
    "l_forearm": (L_ELBOW, L_WRIST, "l_upper_arm", "arm_l"),
    "r_thigh": (R_HIP, R_KNEE, "torso", "leg_r"),
    "r_shin": (R_KNEE, R_ANKLE, "r_thigh", "leg_r"),
    "l_thigh": (L_HIP, L_KNEE, "torso", "leg_l"),
    "l_shin": (L_KNEE, L_ANKLE, "l_thigh", "leg_l"),
}
HEAD_POINTS = (NECK, NOSE, R_EYE, L_EYE, R_EAR, L_EAR)
TORSO_POINTS = (NECK, R_SHOULDER, L_SHOULDER, R_HIP, L_HIP)
# the pieces, drawn back to front: legs behind the body, arms in front of it
PIECES = ("r_thigh", "r_shin", "l_thigh", "l_shin", "torso", "head",
          "r_upper_arm", "r_forearm", "l_upper_arm", "l_forearm")
LAYER_OF = {"torso": "body", "head": "body", **{k: v[3] for k, v in LIMBS.items()}}
# where two pieces join: child -> (joint, parent)
JOINTS = {"head": (NECK, "torso"), **{k: (v[0], v[2]) for k, v in LIMBS.items()}}

MIN_CONF = 0.05  # a keypoint with confidence above this is present
# softmax temperature of the bone weights, in bone radii: which bone a pixel of the photo
# belongs to (soft only near the boundary between two bones)
MEMBERSHIP_TEMPERATURE = 0.2
# a bone's radius as a share of its length (the torso's: of its size), for its distance
RADIUS = {"torso": 0.1, "head": 0.9, "upper_arm": 0.22, "forearm": 0.22, "thigh": 0.25,
          "shin": 0.2}
# the hand beyond the wrist and the foot beyond the ankle: the end bones reach on (a share of
# their length)
BEYOND = {"forearm": 0.45, "shin": 0.2}
INSET = (0.12, 0.05)  # the torso's corners moved inwards: at the shoulders, at the hips
STRETCH = (0.3, 1.6)  # bounds of a limb's stretch along itself (foreshortening)
BORDER_REACH = 0.25  # how far a piece cut by the photo's border is continued past it (share)


def _present(body: np.ndarray, *joints: int) -> bool:
    return all(body[j, 2] > MIN_CONF and np.isfinite(body[j, :2]).all() for j in joints)


def _fit(src: np.ndarray, dst: np.ndarray, kind: str) -> np.ndarray | None:
    """A 2x3 map taking ``src`` (N, 2) points onto ``dst``: an affine (3+ points) or
    similarity fit by OpenCV (``estimateAffine2D`` / ``estimateAffinePartial2D``, every point
    an inlier, refined by least squares), a translation for one point; None if degenerate."""
    if len(src) == 0:
        return None
    if len(src) == 1:
        return np.array([[1.0, 0.0, dst[0, 0] - src[0, 0]], [0.0, 1.0, dst[0, 1] - src[0, 1]]])
    a, b = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    spread = float(np.ptp(np.concatenate([a, b]), axis=0).max()) + 1.0
    options = {"method": cv2.LMEDS if len(src) > 3 else cv2.RANSAC,
               "ransacReprojThreshold": 10 * spread, "refineIters": 20}
    if kind == "affine" and len(src) >= 3:
        m, _ = cv2.estimateAffine2D(a, b, **options)
        if m is not None:
            sv = np.linalg.svd(m[:, :2], compute_uv=False)
            if sv[1] > 1e-3 and sv[0] / sv[1] < 4.0:  # not collapsed, not wildly sheared
                return m
    m, _ = cv2.estimateAffinePartial2D(a, b, **options)
    if m is not None and np.isfinite(m).all() and abs(np.linalg.det(m[:, :2])) > 1e-6:
        return m
    return None


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _limb_map(a: np.ndarray, b: np.ndarray, a2: np.ndarray, b2: np.ndarray,
              scale: float) -> np.ndarray | None:
    """The map of a limb bone a->b onto a2->b2: rotated onto the new direction, stretched
    along the bone by the change of its length (bounded) and scaled across by ``scale``."""
    d, d2 = b - a, b2 - a2
    n, n2 = float(np.hypot(*d)), float(np.hypot(*d2))
    if n < 1e-3 or n2 < 1e-3:
        return None
    u, u2 = d / n, d2 / n2
    v, v2 = np.array([-u[1], u[0]]), np.array([-u2[1], u2[0]])
    stretch = float(np.clip(n2 / n, STRETCH[0] * scale, STRETCH[1] * scale))
    lin = stretch * np.outer(u2, u) + scale * np.outer(v2, v)
    return np.concatenate([lin, (a2 - lin @ a)[:, None]], axis=1)


def _segment_distance(pts: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Distance of (N, 2) points to the segment p-q."""
    d = q - p
    denom = float(d @ d)
    t = np.zeros(len(pts)) if denom < 1e-9 else np.clip(((pts - p) @ d) / denom, 0.0, 1.0)
    closest = p + t[:, None] * d
    return np.hypot(*(pts - closest).T)


def _polygon_distance(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance of (N, 2) points to a polygon (0 inside)."""
    from matplotlib.path import Path

    dist = np.min([_segment_distance(pts, poly[i], poly[(i + 1) % len(poly)])
                   for i in range(len(poly))], axis=0)
    return np.where(Path(poly).contains_points(pts), 0.0, dist)


@dataclass
class Shape:
    """Where a bone is, for the distance that weights it: a segment (the bone's axis) or a
    polygon (the torso), and its ``radius``: distances are counted in radii, so that a pixel
    beside a thin forearm is not taken by a thick thigh whose axis is about as far."""

    points: np.ndarray  # (2, 2) segment or (K, 2) polygon
    polygon: bool = False
    radius: float = 1.0

    def distance(self, pts: np.ndarray) -> np.ndarray:
        if self.polygon:
            return _polygon_distance(pts, self.points) / self.radius
        return _segment_distance(pts, self.points[0], self.points[1]) / self.radius


def _softmax_weights(dists: np.ndarray, tau: float) -> np.ndarray:
    """(B, N) distances -> (B, N) weights summing to 1 over B (nearest bones dominate)."""
    z = -(dists - dists.min(axis=0, keepdims=True)) / max(tau, 1e-6)
    w = np.exp(z)
    return w / w.sum(axis=0, keepdims=True)


def _grid(x0: int, y0: int, w: int, h: int, step: int) -> tuple[np.ndarray, int, int]:
    """Coarse sample positions over the box, placed where ``cv2.resize`` (linear) reads its
    source pixels when it upsamples a (gh, gw) grid to (h, w): upsampling is exact there."""
    gw, gh = max(2, -(-w // step)), max(2, -(-h // step))
    xs = x0 + (np.arange(gw) + 0.5) * w / gw - 0.5
    ys = y0 + (np.arange(gh) + 0.5) * h / gh - 0.5
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1), gw, gh


def fill_hole(image: np.ndarray, hole: np.ndarray, max_side: int = 320,
              radius: int = 5) -> np.ndarray:
    """``image`` with the pixels under ``hole`` (bool (H, W)) filled by ``cv2.inpaint``
    (Telea) at a reduced scale (long side ``max_side``), upsampled and softened; pixels outside
    the hole are kept exactly."""
    h, w = hole.shape
    if not hole.any():
        return image.copy()
    f = min(1.0, max_side / max(h, w))
    small_wh = (max(8, round(w * f)), max(8, round(h * f)))
    small = cv2.resize(image, small_wh, interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole.astype(np.uint8), small_wh, interpolation=cv2.INTER_NEAREST)
    small_hole = cv2.dilate(small_hole, np.ones((3, 3), np.uint8))
    filled = cv2.inpaint(small, small_hole, radius, cv2.INPAINT_TELEA)
    filled = cv2.GaussianBlur(filled, (0, 0), 1.0)
    up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    soft = cv2.GaussianBlur(hole.astype(np.float32), (0, 0), max(1.0, 1.5 / f))
    soft = np.maximum(soft, hole)[..., None]
    return (image * (1 - soft) + up * soft).round().astype(np.uint8)


class PhotoRig:
    """The person of one photo, ready to be posed (see the module docstring).

    ``image``: uint8 (H, W, 3) RGB; ``body``: (18, 3) COCO-18 keypoints (x, y, confidence)
    in its pixels; ``mask``: float (H, W) in [0, 1], the person to move (a soft mask, e.g.
    :func:`kinemate.models.photo.segment.person_mask`). Everything that does not depend on the
    pose is computed here, once."""

    def __init__(self, image: np.ndarray, body: np.ndarray, mask: np.ndarray):
        image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
        self.height, self.width = image.shape[:2]
        self.image = image
        self.ref = np.asarray(body, np.float64)
        self.mask = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
        if self.mask.shape != (self.height, self.width):
            raise ValueError(f"mask {self.mask.shape} and image {image.shape[:2]} differ")
        self.shapes = self._reference_shapes()
        self.scale_px = self._body_size()
        self.step = int(max(3, round(max(self.height, self.width) / 160)))
        self.background = self._background()
        self.textures, self.boxes = self._layers()

    # -- once per video ----------------------------------------------------------------
    def _torso_polygon(self, body: np.ndarray) -> np.ndarray | None:
        if not _present(body, R_SHOULDER, L_SHOULDER):
            return None
        rs, ls = body[R_SHOULDER, :2], body[L_SHOULDER, :2]
        # the shoulder keypoints sit on the arms' axes: the torso's top is narrower, so
        # that arms hanging beside it belong to the arms
        rs, ls = rs + INSET[0] * (ls - rs), ls + INSET[0] * (rs - ls)
        if _present(body, R_HIP, L_HIP):
            rh, lh = body[R_HIP, :2], body[L_HIP, :2]
            rh, lh = rh + INSET[1] * (lh - rh), lh + INSET[1] * (rh - lh)
            return np.array([rs, ls, lh, rh])
        # hips not in the photo: the torso runs from the shoulders away from the head
        across = ls - rs
        down = np.array([-across[1], across[0]])
        if _present(body, NOSE) and (body[NOSE, :2] - (rs + ls) / 2) @ down > 0:
            down = -down
        down *= 1.6
        return np.array([rs, ls, ls + down, rs + down])

    def _reference_shapes(self) -> dict[str, Shape]:
        ref = self.ref
        shapes: dict[str, Shape] = {}
        poly = self._torso_polygon(ref)
        if poly is not None:
            extent = float(np.max(np.ptp(poly, axis=0)))
            shapes["torso"] = Shape(poly, polygon=True, radius=RADIUS["torso"] * extent)
        elif _present(ref, NECK):
            below = ref[NECK, :2] + [0.0, 0.25 * self.height]
            shapes["torso"] = Shape(np.array([ref[NECK, :2], below]),
                                    radius=RADIUS["torso"] * 0.25 * self.height)
        for name, (a, b, parent, _layer) in (("head", (NECK, NOSE, "torso", "body")),
                                              *LIMBS.items()):
            if parent in shapes and _present(ref, a, b):
                seg = ref[[a, b], :2].copy()
                length = max(float(np.hypot(*(seg[1] - seg[0]))), 2.0)
                seg[1] += BEYOND.get(name.split("_", 1)[-1], 0.0) * (seg[1] - seg[0])
                shapes[name] = Shape(seg, radius=RADIUS[name.split("_", 1)[-1]] * length)
        if "torso" not in shapes:
            raise ValueError("the reference pose has no neck: nothing to hold the rig")
        return shapes

    def _body_size(self) -> float:
        pts = self.shapes["torso"].points
        size = float(np.max(np.ptp(pts, axis=0)))
        if "head" in self.shapes:
            size = max(size, 2.0 * float(np.hypot(*np.diff(self.shapes["head"].points, axis=0)[0])))
        return max(size, 0.05 * max(self.height, self.width), 8.0)

    def _background(self) -> np.ndarray:
        grow = max(3, int(round(0.02 * max(self.height, self.width))))
        hole = cv2.dilate((self.mask > 0.05).astype(np.uint8),
                          cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
        return fill_hole(self.image, hole > 0)

    def _membership(self) -> dict[str, np.ndarray]:
        """Per bone, the share (H, W) of each pixel that belongs to it (sums to 1)."""
        pts, gw, gh = _grid(0, 0, self.width, self.height, self.step)
        names = list(self.shapes)
        w = _softmax_weights(np.stack([self.shapes[n].distance(pts) for n in names]),
                             MEMBERSHIP_TEMPERATURE)
        return {n: cv2.resize(w[i].reshape(gh, gw).astype(np.float32),
                              (self.width, self.height), interpolation=cv2.INTER_LINEAR)
                for i, n in enumerate(names)}

    def _layers(self) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, int, int, int]]]:
        """Premultiplied RGBA textures (uint8, cropped to the piece) of the bones' pieces and
        the reference box (x0, y0, x1, y1) each was cropped from."""
        # the mask's edge, eroded a little and feathered: no background halo around a piece
        edge = max(1.0, 0.0025 * max(self.height, self.width))
        core = cv2.erode(self.mask, np.ones((3, 3), np.uint8))
        person = cv2.GaussianBlur(core, (0, 0), edge)
        share = self._membership()
        arms = sum((share[n] for n in share if LAYER_OF[n].startswith("arm")),
                   np.zeros_like(self.mask))
        body_image = self.image
        hidden = None
        if self.shapes["torso"].polygon:
            # the torso the arms hid in the photo (filled from the torso around the arms, not
            # from the arms): shown when an arm moves away
            inside = np.zeros((self.height, self.width), np.uint8)
            cv2.fillPoly(inside, [np.round(self.shapes["torso"].points).astype(np.int32)], 1)
            hidden = inside * np.clip(arms, 0.0, 1.0)
            body_image = fill_hole(self.image, (arms > 0.5) & (self.mask > 0.05))
        # alphas: each piece its share of the person; where two pieces join, the one drawn
        # behind also takes the other's share near the joint, so the seam is covered from
        # behind when the joint bends
        alphas = {n: person * part for n, part in share.items()}
        yy, xx = np.mgrid[0:self.height, 0:self.width].astype(np.float32)
        order = {n: i for i, n in enumerate(PIECES)}
        for child, (joint, parent) in JOINTS.items():
            if child not in share or parent not in share:
                continue
            seg = self.shapes[child].points
            reach = 0.5 * float(np.hypot(*(seg[1] - seg[0])))
            d2 = ((xx - self.ref[joint, 0]) ** 2 + (yy - self.ref[joint, 1]) ** 2) / reach ** 2
            near = np.exp(-d2)
            back, front = sorted((child, parent), key=order.__getitem__)
            alphas[back] = alphas[back] + person * share[front] * near
        if hidden is not None:
            alphas["torso"] = np.maximum(alphas["torso"], person * hidden)
        textures, boxes = {}, {}
        for name in PIECES:
            if name not in alphas:
                continue
            alpha = np.clip(alphas[name], 0.0, 1.0)
            ys, xs = np.nonzero(alpha > 1.0 / 255)
            if len(xs) == 0:
                continue
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            a = alpha[y0:y1, x0:x1, None]
            src = (body_image if name == "torso" else self.image)[y0:y1, x0:x1]
            rgba = np.empty((y1 - y0, x1 - x0, 4), np.uint8)
            rgba[..., :3] = (src * a).round().astype(np.uint8)
            rgba[..., 3:] = (a * 255).round().astype(np.uint8)
            # a piece the photo's border cuts (hair at the top, a body at the bottom) goes on
            # past it with its edge pixels, so that turned or moved it shows no straight cut
            m = max(2, int(BORDER_REACH * max(x1 - x0, y1 - y0)))
            pad = (m if y0 == 0 else 0, m if y1 == self.height else 0,
                   m if x0 == 0 else 0, m if x1 == self.width else 0)
            if any(pad):
                rgba = np.pad(rgba, ((pad[0], pad[1]), (pad[2], pad[3]), (0, 0)), mode="edge")
                x0, y0, x1, y1 = x0 - pad[2], y0 - pad[0], x1 + pad[3], y1 + pad[1]
            textures[name] = rgba
            boxes[name] = (x0, y0, x1, y1)
        return textures, boxes

    def bone_maps(self, body: np.ndarray) -> dict[str, np.ndarray]:
        """The 2x3 map (reference -> pose) of every bone of the rig for one pose."""
        body = np.asarray(body, np.float64)
        ref = self.ref
        ok = [j for j in TORSO_POINTS if _present(ref, j) and _present(body, j)]
        torso = _fit(ref[ok, :2], body[ok, :2], "affine")
        if torso is None:
            torso = np.array([[1.0, 0, 0], [0, 1.0, 0]])
        scale = self._scale(body)
        maps = {"torso": torso}
        if "head" in self.shapes:
            hp = [j for j in HEAD_POINTS if _present(ref, j) and _present(body, j)]
            head = _fit(ref[hp, :2], body[hp, :2], "similarity") if len(hp) >= 2 else None
            if head is not None:  # its turn and place, at the body's scale (a face seen
                k = float(np.sqrt(abs(np.linalg.det(head[:, :2]))))  # from the side is narrow)
                lin = head[:, :2] * (scale / max(k, 1e-6))
                centre = ref[hp, :2].mean(axis=0)
                head = np.concatenate([lin, (_apply(head, centre[None])[0] - lin @ centre)[:, None]],
                                      axis=1)
            maps["head"] = head if head is not None else torso
        for name, (a, b, parent, _layer) in LIMBS.items():
            if name not in self.shapes:
                continue
            m = None
            if _present(body, a, b):
                m = _limb_map(ref[a, :2], ref[b, :2], body[a, :2], body[b, :2], scale)
            maps[name] = m if m is not None else maps[parent]
        return maps

    def _scale(self, body: np.ndarray) -> float:
        """How much larger the posed body is than the photo's: the larger of the shoulder
        width's and the torso length's ratios (turning narrows one, bending shortens the
        other), within [0.5, 2]; 1 when neither can be measured."""
        ratios = []
        for a, b in ((R_SHOULDER, L_SHOULDER), (NECK, R_HIP), (NECK, L_HIP)):
            if _present(self.ref, a, b) and _present(body, a, b):
                n = float(np.hypot(*(self.ref[a, :2] - self.ref[b, :2])))
                if n > 1e-3:
                    ratios.append(float(np.hypot(*(body[a, :2] - body[b, :2]))) / n)
        return float(np.clip(max(ratios), 0.5, 2.0)) if ratios else 1.0

    def render(self, body: np.ndarray) -> np.ndarray:
        """The photo with the person moved to ``body`` ((18, 3) COCO-18 keypoints in the
        photo's pixels): uint8 (H, W, 3). Each piece is one ``cv2.warpAffine`` of its small
        texture into the box it lands in, composited back to front."""
        maps = self.bone_maps(body)
        out = self.background.astype(np.float32)
        for name in PIECES:
            if name not in self.textures:
                continue
            m = maps[name]
            x0, y0, x1, y1 = self.boxes[name]
            corners = _apply(m, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64))
            bx0, by0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 1, 0)
            bx1 = min(self.width, int(np.ceil(corners[:, 0].max())) + 1)
            by1 = min(self.height, int(np.ceil(corners[:, 1].max())) + 1)
            if bx1 - bx0 < 1 or by1 - by0 < 1:
                continue
            # texture pixels (offset x0, y0) -> output box pixels (offset bx0, by0)
            local = m.copy()
            local[:, 2] = _apply(m, np.array([[x0, y0]], np.float64))[0] - (bx0, by0)
            rgba = cv2.warpAffine(self.textures[name], local, (bx1 - bx0, by1 - by0),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0).astype(np.float32)
            alpha = rgba[..., 3:] * (1.0 / 255)
            view = out[by0:by1, bx0:bx1]
            view *= 1.0 - alpha
            view += rgba[..., :3]
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


__all__ = ["LIMBS", "PIECES", "PhotoRig", "fill_hole"]
