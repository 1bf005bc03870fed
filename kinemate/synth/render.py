"""Rasterising one frame of a procedural person: RGB, part labels, surface coordinates, mask.

Every body part is a primitive with an exact signed distance function (tapered capsules for
limbs, a rounded convex polygon for the torso and skirt, a shaded sphere for the head), so
edges are anti-aliased analytically and the same evaluation yields the DensePose-like part
label and (u, v) surface coordinates. Primitives are painted back to front by depth (the
painter's algorithm), which puts far limbs behind the torso and near limbs in front of it.

All arrays are image-shaped: RGB float32 (H, W, 3) in [0, 1] while painting, part labels
uint8 (H, W) with 0 = background and 1..24 = the DensePose body-part indices, (u, v)
float32 (H, W) in [0, 1], and the person mask bool (H, W).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from kinemate.synth.appearance import Appearance, Material
from kinemate.synth.body import FACE_POINTS, J, BodyShape

# DensePose body-part indices (the 24 "fine segmentation" labels).
PART_NAMES: dict[int, str] = {
    1: "torso_back", 2: "torso_front", 3: "right_hand", 4: "left_hand", 5: "left_foot",
    6: "right_foot", 7: "right_upper_leg_back", 8: "left_upper_leg_back",
    9: "right_upper_leg_front", 10: "left_upper_leg_front", 11: "right_lower_leg_back",
    12: "left_lower_leg_back", 13: "right_lower_leg_front", 14: "left_lower_leg_front",
    15: "left_upper_arm_inside", 16: "right_upper_arm_inside", 17: "left_upper_arm_outside",
    18: "right_upper_arm_outside", 19: "left_lower_arm_inside", 20: "right_lower_arm_inside",
    21: "left_lower_arm_outside", 22: "right_lower_arm_outside", 23: "right_head",
    24: "left_head",
}
_UPPER_ARM = {"r": (16, 18), "l": (15, 17)}  # (inside, outside)
_LOWER_ARM = {"r": (20, 22), "l": (19, 21)}
_UPPER_LEG = {"r": (9, 7), "l": (10, 8)}  # (front, back)
_LOWER_LEG = {"r": (13, 11), "l": (14, 12)}
_HAND = {"r": 3, "l": 4}
_FOOT = {"r": 6, "l": 5}


class Canvas:
    """The frame being painted: colour, part labels, (u, v) and coverage."""

    def __init__(self, background: np.ndarray, light=(0.0, 0.0, 1.0), ambient: float = 0.72):
        """``light``: unit direction towards the light in camera space (x right, y down, z
        towards the viewer); ``ambient``: the share of light every surface gets."""
        h, w = background.shape[:2]
        self.light = np.asarray(light, np.float32)
        self.ambient = float(ambient)
        self.h, self.w = h, w
        self.rgb = background.copy()
        self.parts = np.zeros((h, w), np.uint8)
        self.u = np.zeros((h, w), np.float32)
        self.v = np.zeros((h, w), np.float32)
        self.cover = np.zeros((h, w), np.float32)

    def box(self, x0: float, y0: float, x1: float, y1: float):
        """Integer bounding box clipped to the image, or None if empty."""
        ix0, iy0 = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
        ix1, iy1 = min(int(np.ceil(x1)) + 2, self.w), min(int(np.ceil(y1)) + 2, self.h)
        if ix1 <= ix0 or iy1 <= iy0:
            return None
        return ix0, iy0, ix1, iy1

    def paint(self, box, alpha, colour, label, u=None, v=None) -> None:
        """Blend ``colour`` with coverage ``alpha`` (h, w) into ``box``; labels where alpha>0.5."""
        x0, y0, x1, y1 = box
        a = alpha[..., None]
        sl = (slice(y0, y1), slice(x0, x1))
        region = self.rgb[sl]
        region += (colour - region) * a
        np.maximum(self.cover[sl], alpha, out=self.cover[sl])
        on = alpha > 0.5
        if np.isscalar(label):
            self.parts[sl][on] = label
        else:
            self.parts[sl][on] = label[on]
        if u is not None:
            self.u[sl][on] = _clip(u, 0, 1)[on]
            self.v[sl][on] = _clip(v, 0, 1)[on]


def _clip(x, lo, hi):
    """np.clip without its Python overhead (a hot path: called ~100 times per frame)."""
    return np.minimum(np.maximum(x, lo), hi)


def _lambert(canvas: Canvas, nx, ny, nz, ambient: float | None = None) -> np.ndarray:
    """Shading factor (h, w, 1) of surface normals (camera space) under the canvas light."""
    a = canvas.ambient if ambient is None else ambient
    lx, ly, lz = (float(c) for c in canvas.light)
    d = np.maximum(nx * lx + ny * ly + nz * lz, 0.0)
    return (a + (1.0 - a) * d)[..., None]


def _grid(box):
    x0, y0, x1, y1 = box
    return (np.arange(x0, x1, dtype=np.float32)[None, :],
            np.arange(y0, y1, dtype=np.float32)[:, None])


def _coverage(sdf: np.ndarray) -> np.ndarray:
    """Analytic anti-aliasing: a one-pixel ramp across the edge."""
    return _clip(0.5 - sdf, 0.0, 1.0)


def _pattern(m: Material, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Colour (h, w, 3) of material ``m`` at surface coordinates (a, b) in body heights."""
    c1 = np.asarray(m.colour, np.float32)
    if m.pattern == "solid":
        return np.broadcast_to(c1, a.shape + (3,))
    c2 = np.asarray(m.colour2, np.float32)
    ca, sa = np.cos(m.angle), np.sin(m.angle)
    p, q = (a * ca + b * sa) / m.period, (b * ca - a * sa) / m.period
    if m.pattern == "stripes":
        t = _clip(np.sin(2 * np.pi * p) * 3.0 + 0.5, 0, 1)
    elif m.pattern == "checks":
        t = _clip(np.sin(2 * np.pi * p) * np.sin(2 * np.pi * q) * 4.0 + 0.5, 0, 1)
    else:  # dots
        d = np.hypot(p - np.round(p), q - np.round(q))
        t = _clip((0.28 - d) * 8.0 + 0.5, 0, 1)
    t = t[..., None].astype(np.float32)
    return c1 * (1 - t) + c2 * t


@dataclass
class Prim:
    """One paintable part: its depth and the function that paints it."""

    z: float
    paint: Callable[[Canvas], None]


def capsule(canvas: Canvas, p0, p1, r0: float, r1: float, material: Material, label,
            scale: float, *, inside_ref=None, shade=True) -> None:
    """A tapered capsule from p0 to p1 (pixels), radii r0 -> r1 (pixels).

    ``label`` is an int or a pair (label for v<0 side, label for v>0 side); with
    ``inside_ref`` (a point) the pair is (inside, outside) relative to that point.
    """
    p0 = np.asarray(p0, np.float32)
    p1 = np.asarray(p1, np.float32)
    rmax = max(r0, r1)
    box = canvas.box(min(p0[0], p1[0]) - rmax, min(p0[1], p1[1]) - rmax,
                     max(p0[0], p1[0]) + rmax, max(p0[1], p1[1]) + rmax)
    if box is None:
        return
    X, Y = _grid(box)
    ex, ey = float(p1[0] - p0[0]), float(p1[1] - p0[1])
    L2 = ex * ex + ey * ey
    L = max(np.sqrt(L2), 1e-6)
    dx, dy = X - p0[0], Y - p0[1]
    t_raw = (dx * ex + dy * ey) / max(L2, 1e-6)
    t = _clip(t_raw, 0.0, 1.0)
    qx, qy = dx - t * ex, dy - t * ey
    r = r0 + (r1 - r0) * t
    sdf = np.sqrt(qx * qx + qy * qy) - r
    alpha = _coverage(sdf)
    if not alpha.any():
        return
    perp = (dx * ey - dy * ex) / L
    v = _clip(perp / np.maximum(r, 1e-3), -1, 1)
    col = _pattern(material, t_raw * L / scale, perp / scale)
    if shade:
        nz = np.sqrt(np.maximum(1 - v * v, 0))
        col = col * _lambert(canvas, v * (ey / L), -v * (ex / L), nz)
    if isinstance(label, tuple):
        lab_neg, lab_pos = label
        if inside_ref is not None:
            side = (inside_ref[0] - p0[0]) * ey - (inside_ref[1] - p0[1]) * ex
            if side > 0:  # the reference point is on the v>0 side: that side is inside
                lab_neg, lab_pos = lab_pos, lab_neg
        lab = np.where(v < 0, lab_neg, lab_pos).astype(np.uint8)
    else:
        lab = label
    canvas.paint(box, alpha, col, lab, t, 0.5 + 0.5 * v)


def polygon(canvas: Canvas, pts: np.ndarray, radius: float, axis0, axis1, material: Material,
            label, scale: float, *, lower: tuple[float, Material] | None = None) -> None:
    """A convex polygon (pixels, any order) rounded by ``radius`` pixels.

    Surface coordinates run along ``axis0 -> axis1`` (u) and across it (v). With ``lower``
    = (fraction, material), the part beyond that fraction of the axis uses that material
    (a waistband / trousers top).
    """
    pts = np.asarray(pts, np.float32)
    hull = _convex_hull(pts)
    box = canvas.box(hull[:, 0].min() - radius, hull[:, 1].min() - radius,
                     hull[:, 0].max() + radius, hull[:, 1].max() + radius)
    if box is None:
        return
    X, Y = _grid(box)
    n = len(hull)
    dmin = None
    inside = None
    for i in range(n):
        a, b = hull[i], hull[(i + 1) % n]
        ex, ey = float(b[0] - a[0]), float(b[1] - a[1])
        dx, dy = X - a[0], Y - a[1]
        L2 = max(ex * ex + ey * ey, 1e-6)
        t = _clip((dx * ex + dy * ey) / L2, 0, 1)
        d = np.hypot(dx - t * ex, dy - t * ey)
        cross = ex * dy - ey * dx >= 0  # hull is counter-clockwise in image coordinates
        dmin = d if dmin is None else np.minimum(dmin, d)
        inside = cross if inside is None else inside & cross
    sdf = np.where(inside, -dmin, dmin) - radius
    alpha = _coverage(sdf)
    a0 = np.asarray(axis0, np.float32)
    a1 = np.asarray(axis1, np.float32)
    ax, ay = float(a1[0] - a0[0]), float(a1[1] - a0[1])
    L = max(np.hypot(ax, ay), 1e-6)
    dx, dy = X - a0[0], Y - a0[1]
    along = (dx * ax + dy * ay) / L
    across = (dx * ay - dy * ax) / L
    col = _pattern(material, along / scale, across / scale)
    halfw = max(float(np.abs((hull - a0) @ np.array([ay, -ax]) / L).max()), 1.0) + radius
    vv = _clip(across / halfw, -1, 1)
    if lower is not None:
        frac, mat2 = lower
        below = (along / L > frac)[..., None]
        col = np.where(below, _pattern(mat2, along / scale, across / scale), col)
    nz = np.sqrt(np.maximum(1 - vv * vv, 0))
    col = col * _lambert(canvas, 0.6 * vv * (ay / L), -0.6 * vv * (ax / L), nz,
                         ambient=min(canvas.ambient + 0.1, 1.0))
    canvas.paint(box, alpha, col, label, _clip(along / L, 0, 1), 0.5 + 0.5 * vv)


def _convex_hull(pts: np.ndarray) -> np.ndarray:
    """Counter-clockwise (in image coordinates, y down: cross >= 0 inside) hull of points."""
    import cv2

    hull = cv2.convexHull(pts.reshape(-1, 1, 2).astype(np.float32), clockwise=False)
    hull = hull.reshape(-1, 2)
    # cv2's orientation is defined for y-up; make it match the inside test above
    area = np.sum(hull[:, 0] * np.roll(hull[:, 1], -1) - np.roll(hull[:, 0], -1) * hull[:, 1])
    return hull if area > 0 else hull[::-1].copy()


# ---------------------------------------------------------------------------------------
# The head: a shaded sphere with face features and hair placed by surface normal

_HAIR_RULES = {
    # (top threshold on ny, back threshold on nz, lower limit ny for the back, volume)
    "short": (-0.45, -0.1, 0.35, 1.07),
    "buzz": (-0.6, -0.35, 0.15, 1.02),
    "long": (-0.4, -0.1, 0.6, 1.08),
    "bun": (-0.45, -0.1, 0.35, 1.05),
    "ponytail": (-0.45, -0.1, 0.4, 1.05),
    "fringe": (-0.2, -0.05, 0.5, 1.08),
    "afro": (-0.2, 0.1, 0.5, 1.38),
    "bald": None,
}


def _hair_test(style: str, n: tuple) -> np.ndarray:
    nx, ny, nz = n
    rule = _HAIR_RULES[style]
    if rule is None:
        return np.zeros_like(ny, dtype=bool)
    top, back, lowback, _ = rule
    return (ny < top) | ((nz < back) & (ny < lowback))


def head(canvas: Canvas, centre, radius: float, rot: np.ndarray, app: Appearance,
         labels=(23, 24)) -> None:
    """Paint the head sphere: skin, eyes, mouth, hair. ``rot`` maps head frame -> camera."""
    style = app.hair_style
    rule = _HAIR_RULES[style]
    vol = rule[3] if rule else 1.0
    R = radius * vol
    cx, cy = float(centre[0]), float(centre[1])
    box = canvas.box(cx - R, cy - R, cx + R, cy + R)
    if box is None:
        return
    X, Y = _grid(box)
    dx, dy = X - cx, Y - cy
    dist = np.sqrt(dx * dx + dy * dy)
    rt = rot.T

    def normals(rad):
        xn, yn = dx / rad, dy / rad
        zn = np.sqrt(np.maximum(1.0 - xn * xn - yn * yn, 0))
        # camera-space normal -> head-frame normal
        return (rt[0, 0] * xn + rt[0, 1] * yn + rt[0, 2] * zn,
                rt[1, 0] * xn + rt[1, 1] * yn + rt[1, 2] * zn,
                rt[2, 0] * xn + rt[2, 1] * yn + rt[2, 2] * zn), zn

    n, zn = normals(radius)
    xn_c, yn_c = dx / radius, dy / radius
    skin = np.asarray(app.skin, np.float32)
    col = np.broadcast_to(skin, dx.shape + (3,)).copy()
    # face features where the surface normal points at them
    ex, ey, ez = FACE_POINTS["r_eye"]
    en = np.linalg.norm([ex, ey, ez])
    eye_r = 0.13
    for sx in (-1.0, 1.0):
        dot = (n[0] * sx * abs(ex) + n[1] * ey + n[2] * ez) / en
        eye = _clip((dot - np.cos(eye_r)) * 400.0, 0, 1)[..., None]
        col = col * (1 - eye) + np.asarray(app.eyes, np.float32) * eye
        brow = (n[1] + 0.33) ** 2 / 0.004 + ((n[0] - sx * 0.36) ** 2) / 0.03
        browm = _clip(1.0 - brow, 0, 1)[..., None] * (n[2] > 0)[..., None]
        col = col * (1 - browm) + np.asarray(app.hair, np.float32) * 0.8 * browm
    if app.glasses is not None:  # round frames around the eyes and a bridge
        gc = np.asarray(app.glasses, np.float32)
        for sx in (-1.0, 1.0):
            dot = (n[0] * sx * abs(ex) + n[1] * ey + n[2] * ez) / en
            ang = np.arccos(np.clip(dot, -1.0, 1.0))
            ring = _clip(1.6 - np.abs(ang - 0.21) * 30.0, 0, 1)[..., None]
            col = col * (1 - ring) + gc * ring
        bridge = ((np.abs(n[0]) < 0.2) & (np.abs(n[1] + 0.06) < 0.025) & (n[2] > 0))
        col[bridge] = gc
    mouth = ((n[1] - 0.5) ** 2 / 0.0045 + n[0] ** 2 / 0.045 < 1.0) & (n[2] > 0)
    col[mouth] = app.lips
    nose = _clip(1.0 - ((n[0]) ** 2 + (n[1] - 0.22) ** 2) / 0.012, 0, 1)[..., None] * (
        n[2] > 0)[..., None]
    col = col * (1 - 0.18 * nose)
    col = col * _lambert(canvas, xn_c, yn_c, zn)
    lab = np.where(n[0] < 0, labels[0], labels[1]).astype(np.uint8)
    u = 0.5 + 0.5 * n[1]
    v = 0.5 + np.arctan2(n[0], n[2]) / (2 * np.pi)
    canvas.paint(box, _coverage(dist - radius), col, lab, u, v)
    if rule is None:
        return
    nb, znb = normals(R)
    hair = _hair_test(style, nb) & _hair_test(style, n) | (_hair_test(style, nb) & (dist > radius))
    hcol = np.asarray(app.hair, np.float32) * _lambert(canvas, dx / R, dy / R, znb)
    # a little strand texture
    hcol = hcol * (0.9 + 0.1 * np.sin(40.0 * nb[0] + 10.0 * nb[1]))[..., None]
    alpha = _coverage(dist - R) * hair
    canvas.paint(box, alpha, hcol, lab, u, v)


def hat(canvas: Canvas, centre, radius: float, rot: np.ndarray, app: Appearance,
        labels=(23, 24)) -> None:
    """A beanie: the top of a slightly larger sphere, in the hat colour."""
    R = radius * 1.12
    cx, cy = float(centre[0]), float(centre[1])
    box = canvas.box(cx - R, cy - R, cx + R, cy + R)
    if box is None:
        return
    X, Y = _grid(box)
    dx, dy = X - cx, Y - cy
    xn, yn = dx / R, dy / R
    zn = np.sqrt(np.maximum(1.0 - xn * xn - yn * yn, 0))
    rt = rot.T
    nx = rt[0, 0] * xn + rt[0, 1] * yn + rt[0, 2] * zn
    ny = rt[1, 0] * xn + rt[1, 1] * yn + rt[1, 2] * zn
    on = ny < -0.32
    rib = 0.9 + 0.1 * np.sin(60.0 * nx)  # knit ribs
    col = np.asarray(app.hat, np.float32) * (rib[..., None] * _lambert(canvas, xn, yn, zn))
    band = (ny >= -0.42)[..., None]  # a folded brim, a little darker
    col = np.where(band, col * 0.85, col)
    alpha = _coverage(np.sqrt(dx * dx + dy * dy) - R) * on
    lab = np.where(nx < 0, labels[0], labels[1]).astype(np.uint8)
    canvas.paint(box, alpha, col, lab, 0.5 + 0.5 * ny, 0.5 + np.arctan2(nx, zn) / (2 * np.pi))


# ---------------------------------------------------------------------------------------
# The whole person


def person_prims(j2: np.ndarray, jz: np.ndarray, scale: float, shape: BodyShape,
                 app: Appearance, rot_head: np.ndarray, rot_torso: np.ndarray,
                 rot_hips: np.ndarray, thumbs: dict | None = None) -> list[Prim]:
    """The paintable parts of one person in one frame, sorted back to front.

    ``j2`` (J, 2) joint pixel positions, ``jz`` (J,) depths in pixels (towards the camera
    positive), ``scale`` pixels per body height, the rotations (3, 3) map the head / torso
    / pelvis frames into camera space (for profile widths and facing). ``thumbs`` maps
    "r"/"l" to the (base, tip) 3D pixel positions of each thumb.
    """
    s = scale
    prims: list[Prim] = []
    facing = rot_torso[2, 2] >= 0  # chest towards the camera
    pelvis2 = j2[J["pelvis"]]
    neck2 = j2[J["neck"]]
    centre = 0.5 * (pelvis2 + neck2)
    skin = Material(colour=app.skin)
    shoes = Material(colour=app.shoes)

    def zof(*names, bias=0.0):
        return float(np.mean([jz[J[n]] for n in names])) + bias * s

    # torso: projected corners of a box between the shoulder line and the hip line
    def proj(rot, origin, v):
        p = rot @ np.asarray(v) * s
        return origin + p[:2]

    hw_s = shape.shoulder_hw + shape.r_upper_arm * 0.6
    hw_h = shape.hip_hw + shape.r_thigh * 0.7
    d_c, d_h = shape.chest_hd, shape.chest_hd * 0.9
    corners = []
    for x in (-hw_s, hw_s):
        for z in (-d_c, d_c):
            corners.append(proj(rot_torso, neck2, (x, 0.015, z)))
    for x in (-hw_h, hw_h):
        for z in (-d_h, d_h):
            corners.append(proj(rot_hips, pelvis2, (x, 0.02, z)))
    corners = np.array(corners)
    lower = None
    if app.bottom_kind != "skirt" or not app.dress:
        lower = (0.88, app.bottom)
    torso_label = 2 if facing else 1
    prims.append(Prim(zof("pelvis", "neck"), lambda c: polygon(
        c, corners, 0.02 * s, neck2, pelvis2, app.top, torso_label, s, lower=lower)))

    # neck and head
    head2 = j2[J["head"]]
    prims.append(Prim(zof("head", bias=0.02), lambda c: capsule(
        c, neck2 + (head2 - neck2) * 0.1, head2, shape.r_neck * s, shape.r_neck * s, skin,
        (23, 24), s, shade=True)))
    prims.append(Prim(zof("head", bias=0.05), lambda c: head(
        c, head2, shape.head_r * s, rot_head, app)))
    if app.hat is not None:
        prims.append(Prim(zof("head", bias=0.051), lambda c: hat(
            c, head2, shape.head_r * s, rot_head, app)))
    hair = Material(colour=app.hair)
    hr = shape.head_r
    if app.hair_style == "long":
        top = proj(rot_head, head2, (0, -0.2 * hr, -0.3 * hr))
        bot = proj(rot_head, head2, (0, 2.6 * hr, -0.6 * hr))
        zb = float((rot_head @ np.array([0, 0, -0.8 * hr]))[2] * s + jz[J["head"]])
        prims.append(Prim(zb - 0.06 * s, lambda c: capsule(
            c, top, bot, 1.05 * hr * s, 0.95 * hr * s, hair, (23, 24), s)))
    elif app.hair_style in ("bun", "ponytail"):
        if app.hair_style == "bun":
            a = proj(rot_head, head2, (0, -0.75 * hr, -0.6 * hr))
            b, r0, r1 = a, 0.5 * hr, 0.5 * hr
        else:
            a = proj(rot_head, head2, (0, -0.2 * hr, -1.0 * hr))
            b = proj(rot_head, head2, (0, 1.8 * hr, -1.3 * hr))
            r0, r1 = 0.35 * hr, 0.2 * hr
        zb = float((rot_head @ np.array([0, 0, -1.0 * hr]))[2] * s + jz[J["head"]])
        prims.append(Prim(zb, lambda c: capsule(c, a, b, r0 * s, r1 * s, hair, (23, 24), s)))

    # arms
    for side in "rl":
        upper = app.top if app.sleeves in ("short", "long") else skin
        lower_m = app.top if app.sleeves == "long" else skin
        sh, el, wr, hd = (j2[J[f"{side}_{n}"]] for n in ("shoulder", "elbow", "wrist", "hand"))

        def up_arm(c, sh=sh, el=el, side=side, upper=upper):
            capsule(c, sh, el, shape.r_upper_arm * s, shape.r_upper_arm * 0.85 * s, upper,
                    _UPPER_ARM[side], s, inside_ref=centre)
            if app.sleeves == "short":  # skin below the sleeve
                mid = sh + (el - sh) * 0.5
                capsule(c, mid, el, shape.r_upper_arm * 0.8 * s, shape.r_upper_arm * 0.8 * s,
                        skin, _UPPER_ARM[side], s, inside_ref=centre)

        prims.append(Prim(zof(f"{side}_shoulder", f"{side}_elbow", bias=0.01), up_arm))
        prims.append(Prim(zof(f"{side}_elbow", f"{side}_wrist", bias=0.012),
                          lambda c, el=el, wr=wr, side=side, m=lower_m: capsule(
                              c, el, wr, shape.r_forearm * s, shape.r_forearm * 0.8 * s, m,
                              _LOWER_ARM[side], s, inside_ref=centre)))
        prims.append(Prim(zof(f"{side}_wrist", f"{side}_hand", bias=0.014),
                          lambda c, wr=wr, hd=hd, side=side: capsule(
                              c, wr, hd, shape.r_hand * s, shape.r_hand * 1.1 * s, skin,
                              _HAND[side], s)))
        if thumbs is not None:
            t0, t1 = thumbs[side]
            prims.append(Prim(float(0.5 * (t0[2] + t1[2])) + 0.0141 * s,
                              lambda c, t0=t0, t1=t1, side=side: capsule(
                                  c, t0[:2], t1[:2], shape.r_hand * 0.45 * s,
                                  shape.r_hand * 0.4 * s, skin, _HAND[side], s)))

    # legs
    legs_front = 0 if facing else 1
    leg_bias = -0.14 if app.bottom_kind == "skirt" else -0.06  # legs stay under a skirt
    for side in "rl":
        hip, kn, an, toe = (j2[J[f"{side}_{n}"]] for n in ("hip", "knee", "ankle", "toe"))
        thigh_m = app.bottom if app.bottom_kind in ("pants", "shorts") else skin
        shin_m = app.bottom if app.bottom_kind == "pants" else skin
        prims.append(Prim(zof(f"{side}_hip", f"{side}_knee", bias=leg_bias),
                          lambda c, hip=hip, kn=kn, side=side, m=thigh_m: capsule(
                              c, hip, kn, shape.r_thigh * s, shape.r_shin * 1.1 * s, m,
                              _UPPER_LEG[side][legs_front], s)))
        prims.append(Prim(zof(f"{side}_knee", f"{side}_ankle", bias=leg_bias - 0.001),
                          lambda c, kn=kn, an=an, side=side, m=shin_m: capsule(
                              c, kn, an, shape.r_shin * 1.05 * s, shape.r_shin * 0.7 * s, m,
                              _LOWER_LEG[side][legs_front], s)))
        prims.append(Prim(zof(f"{side}_ankle", f"{side}_toe", bias=leg_bias - 0.002),
                          lambda c, an=an, toe=toe, side=side: capsule(
                              c, an, toe, shape.r_foot * 1.1 * s, shape.r_foot * s, shoes,
                              _FOOT[side], s)))
    if app.bottom_kind == "shorts":
        pass  # shorts: thighs in the bottom material, shins bare (above)
    if app.bottom_kind == "skirt":
        flare = shape.hip_hw + shape.r_thigh
        pts = []
        for x, y, k in ((-1, 0.0, 1.0), (1, 0.0, 1.0), (-1, 0.75, 1.5), (1, 0.75, 1.5)):
            for z in (-shape.chest_hd * k, shape.chest_hd * k):
                pts.append(proj(rot_hips, pelvis2, (x * flare * k, y * shape.thigh, z)))
        pts = np.array(pts)
        bottom_mid = proj(rot_hips, pelvis2, (0, 0.75 * shape.thigh, 0))
        prims.append(Prim(zof("pelvis", "neck", bias=0.001), lambda c: polygon(
            c, pts, 0.01 * s, pelvis2, bottom_mid, app.bottom, torso_label, s)))

    prims.sort(key=lambda p: p.z)
    return prims


def shadow(rgb: np.ndarray, centre_x: float, ground_y: float, width: float, strength: float):
    """Darken a soft ellipse on the floor under the feet (in place)."""
    h, w = rgb.shape[:2]
    hh = max(width * 0.12, 1.0)
    x0, x1 = int(max(centre_x - width, 0)), int(min(centre_x + width + 1, w))
    y0, y1 = int(max(ground_y - hh * 2, 0)), int(min(ground_y + hh * 2 + 1, h))
    if x1 <= x0 or y1 <= y0:
        return
    X = np.arange(x0, x1, dtype=np.float32)[None, :]
    Y = np.arange(y0, y1, dtype=np.float32)[:, None]
    d = ((X - centre_x) / width) ** 2 + ((Y - ground_y) / hh) ** 2
    k = 1.0 - strength * _clip(1.0 - d, 0, 1) ** 1.5
    rgb[y0:y1, x0:x1] *= k[..., None]
