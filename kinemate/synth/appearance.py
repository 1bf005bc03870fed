"""Random appearance of a person (skin, hair, face, clothes) and of the scene behind them."""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass

import cv2
import numpy as np

# A spread of human skin tones (RGB, 0..1), light to deep.
SKIN_TONES = np.array([
    (255, 224, 196), (241, 194, 167), (234, 192, 134), (224, 172, 138), (198, 134, 103),
    (190, 140, 100), (161, 102, 74), (141, 85, 56), (110, 68, 45), (84, 52, 36),
]) / 255.0
HAIR_COLOURS = np.array([
    (20, 15, 12), (45, 30, 20), (80, 50, 30), (120, 80, 45), (170, 120, 60), (215, 180, 110),
    (140, 60, 30), (110, 110, 110), (220, 220, 215), (60, 40, 80),
]) / 255.0
HAIR_STYLES = ("short", "buzz", "long", "bun", "ponytail", "bald", "fringe", "afro")
PATTERNS = ("solid", "solid", "stripes", "checks", "dots")
SLEEVES = ("none", "short", "long")
BOTTOMS = ("pants", "shorts", "skirt")


@dataclass(frozen=True)
class Material:
    """A colour (RGB 0..1) with an optional pattern in a second colour.

    ``period`` is the pattern period in body heights; ``angle`` rotates stripes.
    """

    colour: tuple[float, float, float]
    pattern: str = "solid"
    colour2: tuple[float, float, float] = (1.0, 1.0, 1.0)
    period: float = 0.05
    angle: float = 0.0


@dataclass(frozen=True)
class Appearance:
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: str
    eyes: tuple[float, float, float]
    lips: tuple[float, float, float]
    top: Material
    sleeves: str
    bottom: Material
    bottom_kind: str
    shoes: tuple[float, float, float]
    dress: bool = False
    glasses: tuple[float, float, float] | None = None  # frame colour
    hat: tuple[float, float, float] | None = None  # beanie colour

    def to_dict(self) -> dict:
        return asdict(self)


def _random_colour(rng: np.random.Generator, *, sat=(0.2, 0.9), val=(0.2, 0.95)) -> tuple:
    h = rng.uniform(0, 1)
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))


def _cloth_colour(rng: np.random.Generator) -> tuple:
    r = rng.random()
    if r < 0.2:  # neutrals: black, white, grey, navy, beige
        neutrals = [(0.08, 0.08, 0.09), (0.93, 0.93, 0.92), (0.5, 0.5, 0.52), (0.1, 0.14, 0.3),
                    (0.8, 0.72, 0.58), (0.25, 0.3, 0.5)]
        return neutrals[int(rng.integers(len(neutrals)))]
    return _random_colour(rng)


def _material(rng: np.random.Generator) -> Material:
    pattern = str(rng.choice(PATTERNS))
    c1 = _cloth_colour(rng)
    c2 = _cloth_colour(rng)
    if np.abs(np.subtract(c1, c2)).sum() < 0.4:  # keep patterns visible
        c2 = tuple(1.0 - c for c in c1)
    return Material(colour=c1, pattern=pattern, colour2=c2,
                    period=float(rng.uniform(0.025, 0.07)),
                    angle=float(rng.choice([0.0, 0.0, np.pi / 2, np.pi / 4])))


def sample_appearance(rng: np.random.Generator) -> Appearance:
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))] * rng.uniform(0.93, 1.05)
    skin = tuple(float(c) for c in np.clip(skin, 0, 1))
    hair = HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))] * rng.uniform(0.85, 1.15)
    hair = tuple(float(c) for c in np.clip(hair, 0, 1))
    top = _material(rng)
    dress = rng.random() < 0.12
    bottom_kind = "skirt" if dress else str(rng.choice(BOTTOMS, p=[0.6, 0.22, 0.18]))
    if dress:
        bottom = top
    elif rng.random() < 0.75:
        bottom = Material(colour=_cloth_colour(rng))
    else:
        bottom = _material(rng)
    return Appearance(
        skin=skin,
        hair=hair,
        hair_style=str(rng.choice(HAIR_STYLES)),
        eyes=(0.08, 0.06, 0.05) if rng.random() < 0.8 else (0.15, 0.25, 0.35),
        lips=tuple(float(c) for c in np.clip(np.multiply(skin, (0.8, 0.55, 0.55)), 0, 1)),
        top=top,
        sleeves=str(rng.choice(SLEEVES, p=[0.2, 0.45, 0.35])),
        bottom=bottom,
        bottom_kind=bottom_kind,
        shoes=_cloth_colour(rng) if rng.random() < 0.5 else (0.1, 0.09, 0.08),
        dress=dress,
        glasses=(_random_colour(rng, sat=(0, 0.6), val=(0.05, 0.5)) if rng.random() < 0.2
                 else None),
        hat=_cloth_colour(rng) if rng.random() < 0.12 else None,
    )


# ---------------------------------------------------------------------------------------
# Backgrounds (static within a clip)

BACKGROUNDS = ("gradient", "noise", "room", "shapes")


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1], (h, w): a coarse random grid upsampled smoothly."""
    g = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def render_background(rng: np.random.Generator, w: int, h: int, ground_y: float,
                      kind: str | None = None) -> tuple[np.ndarray, dict]:
    """A float32 (h, w, 3) RGB background in [0, 1] and its description.

    ``ground_y`` is the image row of the floor line under the person's feet; room scenes
    put the wall/floor edge a little above it.
    """
    kind = kind or str(rng.choice(BACKGROUNDS))
    yy = (np.arange(h, dtype=np.float32) / max(h - 1, 1))[:, None, None]
    c1 = np.array(_random_colour(rng, sat=(0.05, 0.6), val=(0.3, 0.95)), np.float32)
    c2 = np.array(_random_colour(rng, sat=(0.05, 0.6), val=(0.2, 0.9)), np.float32)
    if kind == "gradient":
        img = c1 * (1 - yy) + c2 * yy
        img = np.broadcast_to(img, (h, w, 3)).copy()
    elif kind == "noise":
        n1 = _smooth_noise(rng, h, w, int(rng.integers(3, 8)))[..., None]
        n2 = _smooth_noise(rng, h, w, int(rng.integers(12, 24)))[..., None]
        n = 0.7 * n1 + 0.3 * n2
        img = c1 * (1 - n) + c2 * n
    elif kind == "room":
        wall = c1 * (0.9 + 0.1 * (1 - yy))
        img = np.broadcast_to(wall, (h, w, 3)).copy()
        horizon = int(np.clip(ground_y - rng.uniform(0.05, 0.2) * h, 0.2 * h, h - 2))
        floor = c2 * 0.8
        fy = np.arange(horizon, h, dtype=np.float32)[:, None, None]
        shade = 0.75 + 0.25 * (fy - horizon) / max(h - horizon, 1)
        img[horizon:] = floor * shade
        if rng.random() < 0.6:  # floor boards / tiles: lines converging to a vanishing point
            vx = rng.uniform(0.3, 0.7) * w
            col = tuple(float(c) for c in (floor * 0.75))
            for k in range(-8, 9):
                x1 = vx + k * w * 0.18
                cv2.line(img, (int(vx + k * w * 0.06), horizon), (int(x1), h), col, 1,
                         cv2.LINE_AA)
        # baseboard
        bb = max(1, h // 60)
        img[max(horizon - bb, 0):horizon] = np.array(_random_colour(rng, sat=(0, 0.2)),
                                                      np.float32)
        for _ in range(int(rng.integers(0, 3))):  # frames / windows / doors on the wall
            rw, rh = rng.uniform(0.1, 0.3) * w, rng.uniform(0.1, 0.35) * h
            x0, y0 = rng.uniform(0, w - rw), rng.uniform(0.05 * h, max(horizon - rh, 0.06 * h))
            fill = np.array(_random_colour(rng), np.float32)
            cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + rw), int(y0 + rh)),
                          tuple(float(c) for c in fill), -1)
            cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + rw), int(y0 + rh)),
                          tuple(float(c) for c in fill * 0.4), max(1, h // 90))
    else:  # shapes
        img = np.broadcast_to(c1 * (1 - yy) + c1 * 0.8 * yy, (h, w, 3)).copy()
        for _ in range(int(rng.integers(4, 14))):
            col = tuple(float(c) for c in _random_colour(rng, sat=(0.1, 0.7), val=(0.3, 0.95)))
            cx, cy = int(rng.uniform(0, w)), int(rng.uniform(0, h))
            r = int(rng.uniform(0.04, 0.2) * max(w, h))
            if rng.random() < 0.5:
                cv2.circle(img, (cx, cy), r, col, -1, cv2.LINE_AA)
            else:
                ang = rng.uniform(0, 180)
                box = cv2.boxPoints(((cx, cy), (r * 2.0, r * rng.uniform(0.3, 1.5)), ang))
                cv2.fillPoly(img, [np.round(box).astype(np.int32)], col, cv2.LINE_AA)
        img = cv2.GaussianBlur(img, (0, 0), max(w, h) / 200.0)
    # light film grain so backgrounds are not perfectly flat
    grain = rng.normal(0, 0.012, (h, w, 1)).astype(np.float32)
    img = np.clip(img + grain, 0, 1).astype(np.float32)
    return img, {"kind": kind}
