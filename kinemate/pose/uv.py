"""DensePose UV fields: the pose input of UV-conditioned models (DreamPose).

Folder format (what the official DreamPose code reads): one ``.npy`` file per frame, each a
float array ``(2, H, W)`` holding DensePose's U and V coordinates in [0, 1] (0 where there is
no body), every file the same size. Files are ordered by the last number in their name
(``frame_0_densepose.npy``, ``frame_1_densepose.npy``, ..., ``frame_10_...`` after
``frame_9_...``); a name without a number sorts after the numbered ones, by name. The
official tool (detectron2's DensePose, ``utils/densepose.py`` in DreamPose) pastes the box's
UV crop into a full-frame zero canvas; ``kinemate synth`` writes exact fields of its
synthetic people in this format.

Reading is bounded by the headers (``np.load(mmap_mode="r")``, no pickles) and checked: a
rendered DensePose video or image folder is not a UV field and is refused with an error
that says what to pass. Fields are fitted onto the sampling size like every control: an
aspect-preserving crop or letterbox (:class:`kinemate.io.Framing`), resampled bilinearly
(``F.interpolate``, as the official code resizes them to 640x512), zero outside the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from kinemate.errors import InputError

MAX_SIDE = 8192
MAX_FRAMES = 100_000
_NUMBER = re.compile(r"(\d+)")


def _order(path: Path) -> tuple:
    numbers = _NUMBER.findall(path.stem)
    return (0, int(numbers[-1]), path.name) if numbers else (1, 0, path.name)


def is_uv_folder(path: str | Path) -> bool:
    """True for a folder that holds ``.npy`` files."""
    p = Path(path)
    return p.is_dir() and any(p.glob("*.npy"))


def _not_uv(path: Path) -> InputError:
    kind = ("a video" if path.is_file() else "an image" if path.suffix.lower() in
            (".png", ".jpg", ".jpeg", ".webp", ".bmp") else "a folder without .npy files"
            if path.is_dir() else "not an existing file or folder")
    return InputError(
        f"{path} is {kind}, not DensePose UV fields: this model takes the U,V coordinates "
        "themselves, a folder with one (2, H, W) float .npy per frame (DensePose's "
        "pred_densepose uv, as DreamPose's utils/densepose.py saves them). A rendered DensePose "
        "video has lost them (colours, not coordinates), so it cannot be used; see "
        "docs/dreampose.md for making UV fields")


def uv_files(path: str | Path) -> list[Path]:
    """The frame files of a UV folder, in frame order (see the module docstring)."""
    p = Path(path)
    if not is_uv_folder(p):
        raise _not_uv(p)
    files = sorted(p.glob("*.npy"), key=_order)
    if len(files) > MAX_FRAMES:
        raise InputError(f"{p} holds {len(files)} UV files; at most {MAX_FRAMES} frames")
    return files


def read_uv(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """One field ``(2, H, W)`` float32, checked (header first: no pickle, bounded size)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path} is not a readable .npy array ({exc}); write each frame's "
                         "UV field with numpy.save") from None
    if arr.ndim != 3 or arr.shape[0] != 2:
        raise InputError(f"{path} has shape {arr.shape}; a UV field is (2, H, W): U and V "
                         "(DensePose's IUV without the part index I)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{path} holds {arr.dtype} values; UV fields are floats in [0, 1]")
    if max(arr.shape[1:]) > MAX_SIDE or min(arr.shape[1:]) < 1:
        raise InputError(f"{path} is {arr.shape[2]}x{arr.shape[1]}; sides must be 1..{MAX_SIDE}")
    if shape is not None and tuple(arr.shape[1:]) != tuple(shape):
        raise InputError(f"{path} is {arr.shape[2]}x{arr.shape[1]} but the first field is "
                         f"{shape[1]}x{shape[0]}; every frame's field must have one size")
    field = np.array(arr, dtype=np.float32)  # a writable copy
    if not np.isfinite(field).all() or field.min() < 0 or field.max() > 1:
        raise InputError(f"{path} has values outside [0, 1] (or NaN); UV coordinates are in "
                         "[0, 1] with 0 outside the body")
    return field


def fit_uv(field: np.ndarray, framing) -> np.ndarray:
    """``(2, h, w)`` -> ``(H, W, 2)`` float32 on ``framing.dst_wh``: bilinear to the scaled
    size (align_corners False, as the official F.interpolate), cropped or letterboxed with 0."""
    import torch
    import torch.nn.functional as F

    (sw, sh), (dw, dh) = framing.scaled_wh, framing.dst_wh
    ox, oy = framing.offset_xy
    x = torch.from_numpy(np.ascontiguousarray(field))[None]
    if (sh, sw) != tuple(field.shape[1:]):
        x = F.interpolate(x, (sh, sw), mode="bilinear", align_corners=False)
    out = torch.zeros((2, dh, dw))
    src_y0, src_x0 = max(0, -oy), max(0, -ox)
    dst_y0, dst_x0 = max(0, oy), max(0, ox)
    hh, ww = min(sh - src_y0, dh - dst_y0), min(sw - src_x0, dw - dst_x0)
    out[:, dst_y0:dst_y0 + hh, dst_x0:dst_x0 + ww] = x[0, :, src_y0:src_y0 + hh, src_x0:src_x0 + ww]
    return out.permute(1, 2, 0).numpy()


def uv_frames(path: str | Path, dst_wh: tuple[int, int], *, fit: str = "crop",
              max_frames: int | None = None, fps: float | None = None
              ) -> tuple[Iterator[np.ndarray], float, int]:
    """The fields of a UV folder fitted onto ``dst_wh``: ``(frames (H, W, 2) float32, fps,
    count)``; ``fps`` defaults to 25 (a folder has no rate of its own)."""
    from kinemate.io import Framing

    files = uv_files(path)
    if max_frames:
        files = files[:max_frames]
    first = read_uv(files[0])
    shape = first.shape[1:]
    framing = Framing.compute((shape[1], shape[0]), tuple(dst_wh), fit)

    def gen() -> Iterator[np.ndarray]:
        for i, f in enumerate(files):
            yield fit_uv(first if i == 0 else read_uv(f, shape), framing)

    return gen(), float(fps or 25.0), len(files)


def render_uv(field: np.ndarray) -> np.ndarray:
    """A preview of a ``(H, W, 2)`` field as uint8 RGB: U red, V green, body blue."""
    field = np.asarray(field, dtype=np.float32)
    body = (field.max(axis=2) > 0).astype(np.float32)
    rgb = np.stack([field[..., 0], field[..., 1], body * 0.5], axis=2)
    return (rgb * 255).round().clip(0, 255).astype(np.uint8)


def write_uv_folder(fields: Sequence[np.ndarray], folder: str | Path, *, prefix: str = "frame_",
                    suffix: str = "_densepose") -> Path:
    """Write ``(2, H, W)`` fields as ``{prefix}{n}{suffix}.npy`` into a new ``folder``
    (atomically: built under a temporary name, renamed when complete)."""
    from kinemate.io.atomic import atomic_folder

    with atomic_folder(folder) as tmp:
        for n, field in enumerate(fields):
            np.save(Path(tmp) / f"{prefix}{n}{suffix}.npy", np.asarray(field, dtype=np.float32))
    return Path(folder)


__all__ = ["fit_uv", "is_uv_folder", "read_uv", "render_uv", "uv_files", "uv_frames",
           "write_uv_folder"]
