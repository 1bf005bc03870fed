"""Aspect-preserving framing of images onto a target size, with point mapping, and grids.

A :class:`Framing` is computed once from the source size and the target size and then applied to
the reference photo and to every control frame alike, so that a person never gets stretched and
pose keypoints can be carried across with :meth:`Framing.map_points`.

Coordinates are continuous pixel coordinates: the top-left corner of the image is ``(0, 0)`` and
pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``; a point maps as ``x' = x * sx + ox``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from PIL import Image

from kinemate.errors import UsageError

FitMode = Literal["crop", "letterbox"]

_RESAMPLE = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) image, got shape {arr.shape}")
    return arr[..., :3]


def resize(image: np.ndarray, size_wh: tuple[int, int], resample: str = "lanczos") -> np.ndarray:
    """Resize a uint8 ``(H, W, C)`` image to ``size_wh`` = (W, H) (no aspect preservation)."""
    w, h = int(size_wh[0]), int(size_wh[1])
    if image.shape[1] == w and image.shape[0] == h:
        return np.ascontiguousarray(image)
    if resample not in _RESAMPLE:
        raise UsageError(f"unknown resample {resample!r}; use one of {', '.join(_RESAMPLE)}.")
    return np.asarray(Image.fromarray(image).resize((w, h), _RESAMPLE[resample]))


@dataclass(frozen=True)
class Framing:
    """Fit of a ``src_wh`` image onto ``dst_wh``: scale, then crop or letterbox.

    ``scaled_wh`` is the size the source is resized to and ``offset_xy`` where its top-left corner
    lands in the target (negative when cropping). Letterbox bars are black.
    """

    src_wh: tuple[int, int]
    dst_wh: tuple[int, int]
    mode: str
    scaled_wh: tuple[int, int]
    offset_xy: tuple[int, int]

    @classmethod
    def compute(
        cls,
        src_wh: tuple[int, int],
        dst_wh: tuple[int, int],
        mode: FitMode = "crop",
        *,
        focus_xy: tuple[float, float] | None = None,
        keep_box: tuple[float, float, float, float] | None = None,
    ) -> "Framing":
        """Aspect-preserving fit of ``src_wh`` onto ``dst_wh``.

        ``mode="crop"`` fills the target and cuts the overflow (centred, or centred on
        ``focus_xy`` in source pixels, e.g. the person's box centre, kept inside the image);
        ``mode="letterbox"`` shows the whole source and pads with black bars.

        ``keep_box`` = (x0, y0, x1, y1) in source pixels (``mode="crop"`` only), e.g. the box
        around a person: the crop is centred on the box as far as the image allows and never
        cuts into it. When the box does not fit into a crop that fills the target, the source
        is scaled down just enough for it to fit, and black bars fill the rest of that axis
        (:attr:`letterboxed` says so); never further down than ``mode="letterbox"`` would.
        """
        sw, sh = (int(v) for v in src_wh)
        dw, dh = (int(v) for v in dst_wh)
        if min(sw, sh, dw, dh) <= 0:
            raise UsageError(f"cannot frame {sw}x{sh} onto {dw}x{dh}: sizes must be positive.")
        if keep_box is not None and mode == "crop":
            return cls._keeping(sw, sh, dw, dh, keep_box)
        if mode == "crop":
            scale = max(dw / sw, dh / sh)
        elif mode == "letterbox":
            scale = min(dw / sw, dh / sh)
        else:
            raise UsageError(f"unknown fit mode {mode!r}; use 'crop' or 'letterbox'.")
        # The scaled size never falls short of the target on the filling axis (rounding).
        scaled_w = max(1, round(sw * scale))
        scaled_h = max(1, round(sh * scale))
        if mode == "crop":
            scaled_w, scaled_h = max(scaled_w, dw), max(scaled_h, dh)
        else:
            scaled_w, scaled_h = min(scaled_w, dw), min(scaled_h, dh)
        if mode == "crop" and focus_xy is not None:
            fx = focus_xy[0] * scaled_w / sw
            fy = focus_xy[1] * scaled_h / sh
            ox = int(round(dw / 2 - fx))
            oy = int(round(dh / 2 - fy))
            ox = min(0, max(dw - scaled_w, ox))
            oy = min(0, max(dh - scaled_h, oy))
        else:
            ox = (dw - scaled_w) // 2
            oy = (dh - scaled_h) // 2
        return cls((sw, sh), (dw, dh), mode, (scaled_w, scaled_h), (ox, oy))

    @classmethod
    def _keeping(cls, sw: int, sh: int, dw: int, dh: int,
                 box: tuple[float, float, float, float]) -> "Framing":
        """``mode="crop"`` that keeps ``box`` whole (see :meth:`compute`)."""
        x0, x1 = sorted((min(max(float(box[0]), 0.0), sw), min(max(float(box[2]), 0.0), sw)))
        y0, y1 = sorted((min(max(float(box[1]), 0.0), sh), min(max(float(box[3]), 0.0), sh)))
        fill, fit = max(dw / sw, dh / sh), min(dw / sw, dh / sh)
        scale = max(fit, min(fill, dw / max(x1 - x0, 1.0), dh / max(y1 - y0, 1.0)))
        scaled, offset = [], []
        for size, dst, lo, hi in ((sw, dw, x0, x1), (sh, dh, y0, y1)):
            n = max(1, round(size * scale))
            if scale == fill or abs(n - dst) <= 1:  # this axis is filled (no 1-px bars)
                n = max(n, dst)
            if n >= dst:  # cropped: centred on the box, kept inside the image
                o = min(0, max(dst - n, int(round(dst / 2 - (lo + hi) / 2 * n / size))))
            else:  # bars on this axis
                o = (dst - n) // 2
            scaled.append(n)
            offset.append(o)
        return cls((sw, sh), (dw, dh), "crop", (scaled[0], scaled[1]), (offset[0], offset[1]))

    @property
    def letterboxed(self) -> bool:
        """Whether black bars show: the scaled source does not cover the whole target."""
        return self.scaled_wh[0] < self.dst_wh[0] or self.scaled_wh[1] < self.dst_wh[1]

    @property
    def scale_xy(self) -> tuple[float, float]:
        return self.scaled_wh[0] / self.src_wh[0], self.scaled_wh[1] / self.src_wh[1]

    def apply(self, image: np.ndarray, *, resample: str = "lanczos") -> np.ndarray:
        """Frame one uint8 ``(H, W, 3)`` image of size ``src_wh`` -> uint8 ``(dh, dw, 3)``.

        Use ``resample="nearest"`` for label-like control maps (DensePose IUV) whose values must
        not be blended.
        """
        arr = _as_rgb_uint8(image)
        h, w = arr.shape[:2]
        if (w, h) != self.src_wh:
            raise ValueError(f"this Framing is for {self.src_wh[0]}x{self.src_wh[1]} images, got {w}x{h}")
        scaled = resize(arr, self.scaled_wh, resample)
        dw, dh = self.dst_wh
        out = np.zeros((dh, dw, 3), dtype=np.uint8)
        ox, oy = self.offset_xy
        # Intersection of the placed scaled image with the target canvas.
        x0, y0 = max(0, ox), max(0, oy)
        x1, y1 = min(dw, ox + self.scaled_wh[0]), min(dh, oy + self.scaled_wh[1])
        out[y0:y1, x0:x1] = scaled[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        return out

    def map_points(self, xy: np.ndarray) -> np.ndarray:
        """Map points ``(..., 2)`` from source pixels to target pixels (float64)."""
        pts = np.asarray(xy, dtype=np.float64)
        if pts.shape[-1] != 2:
            raise ValueError(f"points must have shape (..., 2), got {pts.shape}")
        sx, sy = self.scale_xy
        return pts * np.array([sx, sy]) + np.array(self.offset_xy, dtype=np.float64)

    def unmap_points(self, xy: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`map_points`: target pixels -> source pixels."""
        pts = np.asarray(xy, dtype=np.float64)
        sx, sy = self.scale_xy
        return (pts - np.array(self.offset_xy, dtype=np.float64)) / np.array([sx, sy])


def fit_image(
    image: np.ndarray, dst_wh: tuple[int, int], mode: FitMode = "crop", *, resample: str = "lanczos"
) -> np.ndarray:
    """Shortcut: ``Framing.compute((W, H) of image, dst_wh, mode).apply(image)``."""
    arr = _as_rgb_uint8(image)
    framing = Framing.compute((arr.shape[1], arr.shape[0]), dst_wh, mode)
    return framing.apply(arr, resample=resample)


def side_by_side(images: Sequence[np.ndarray], *, height: int | None = None) -> np.ndarray:
    """A horizontal grid of panels (e.g. reference | control | result) at one height.

    Each uint8 ``(H, W, 3)`` (or ``(H, W)`` gray) panel is scaled, aspect preserved, to
    ``height`` (default: the smallest panel height, so no panel is upscaled) and the panels are
    concatenated left to right. Returns uint8 ``(height, sum of widths, 3)``.
    """
    panels = [_as_rgb_uint8(im) for im in images]
    if not panels:
        raise ValueError("side_by_side needs at least one image")
    target_h = int(height) if height else min(p.shape[0] for p in panels)
    if target_h <= 0:
        raise ValueError(f"height must be positive, got {target_h}")
    scaled = []
    for p in panels:
        h, w = p.shape[:2]
        new_w = max(1, round(w * target_h / h))
        scaled.append(resize(p, (new_w, target_h), "lanczos" if h > target_h else "bicubic"))
    return np.concatenate(scaled, axis=1)


_SIZE = re.compile(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*")


def parse_size(size, *, multiple: int = 8, min_side: int = 8,
               max_side: int | None = None) -> tuple[int, int] | None:
    """The one parser of sizes for every front end: ``"512x768"`` (or a ``(W, H)`` pair, or an
    int for a square) -> ``(512, 768)`` (W, H). ``None``, ``""``, ``"auto"`` and ``"default"``
    mean "the model's size" (None). Sides must be multiples of ``multiple`` within
    [``min_side``, ``max_side``]; anything else is a :class:`UsageError` naming `size`."""
    if size is None:
        return None
    if isinstance(size, str):
        if size.strip().lower() in ("", "auto", "default"):
            return None
        m = _SIZE.fullmatch(size)
        if not m:
            raise UsageError(f"`size` {size[:40]!r} must look like 512x512 (width x height)")
        w, h = int(m.group(1)), int(m.group(2))
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        w = h = int(size)
    else:
        try:
            w, h = (int(v) for v in size)
        except (TypeError, ValueError):
            raise UsageError(f"`size` {size!r} must be WIDTHxHEIGHT (e.g. 512x512)") from None
    too_big = max_side is not None and max(w, h) > max_side
    if w < min_side or h < min_side or too_big or w % multiple or h % multiple:
        rule = f"multiples of {multiple} " if multiple > 1 else ""
        top = f" and at most {max_side}" if max_side is not None else ""
        raise UsageError(f"`size` {w}x{h}: width and height must be {rule}from {min_side}{top} "
                         "(e.g. 512x512)")
    return w, h
