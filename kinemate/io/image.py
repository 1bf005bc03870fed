"""Reading and writing still images.

:func:`read_image` turns any image Pillow can open into a uint8 ``(H, W, 3)`` RGB array, with the
EXIF orientation applied, transparency composited onto white, 16-bit and float images scaled (not
clipped) to 8 bits, and a guard against decompression bombs / absurd sizes that is checked from the
file header *before* any pixel is decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kinemate.errors import InputError, UsageError
from kinemate.io.atomic import commit, ensure_parent, remove_quietly, temp_sibling

#: Largest image (width x height) read by default: 64 megapixels (e.g. 8000 x 8000). A photo
#: larger than this is almost certainly a mistake or a decompression bomb; pass ``max_pixels``
#: to raise the limit for one call.
MAX_IMAGE_PIXELS = 64_000_000
#: Largest single side accepted, whatever the pixel count (guards e.g. 1 x 10^8 strips).
MAX_IMAGE_SIDE = 32_768

#: Suffixes recognised as still images (reading and writing; also used for image folders).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

_ALPHA_BACKGROUND = (255, 255, 255)


def _check_exists(path: Path, what: str = "image") -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} file not found: {path} — check the path and try again.")
    if path.is_dir():
        raise InputError(
            f"{path} is a folder, but an {what} file is expected — give the path of one file."
        )
    return path


def check_size(width: int, height: int, *, max_pixels: int, source: str, what: str) -> None:
    """Raise :class:`InputError` if ``width x height`` is empty or above the limits."""
    if width <= 0 or height <= 0:
        raise InputError(f"{source}: the {what} has no pixels ({width}x{height}); use another file.")
    if width * height > max_pixels or max(width, height) > MAX_IMAGE_SIDE:
        raise InputError(
            f"{source}: the {what} is {width}x{height} ({width * height / 1e6:.1f} megapixels), "
            f"above the limit of {max_pixels / 1e6:.1f} megapixels (and {MAX_IMAGE_SIDE} pixels per "
            "side) — downscale it first (e.g. with ffmpeg or an image editor), or raise the limit "
            "(max_pixels) if you really mean it."
        )


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a Pillow image of any mode to a uint8 ``(H, W, 3)`` RGB array.

    Alpha (RGBA, LA, PA, P with transparency) is composited onto white; 16/32-bit integer images
    are scaled by their bit depth; float images in [0, 1] are scaled by 255 (others clipped).
    """
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _ALPHA_BACKGROUND + (255,))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(image).astype(np.uint16)
        gray = (arr >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "I":
        arr = np.asarray(image).astype(np.int64)
        top = int(arr.max()) if arr.size else 0
        shift = 24 if top > 65535 else (8 if top > 255 else 0)
        gray = np.clip(arr >> shift, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(image).astype(np.float64)
        finite = arr[np.isfinite(arr)]
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        gray = np.clip(np.nan_to_num(arr) * scale, 0, 255).round().astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode != "RGB":
        try:
            image = image.convert("RGB")
        except (ValueError, OSError) as exc:
            raise InputError(
                f"cannot convert an image in colour mode {mode!r} to RGB ({exc}) — save it as an "
                "RGB PNG or JPEG and try again."
            ) from exc
    return np.asarray(image, dtype=np.uint8).copy()


def read_image(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as uint8 ``(H, W, 3)`` RGB.

    Any Pillow mode is converted to RGB (see :func:`to_rgb_array`), the EXIF orientation tag is
    applied, and the size is checked against ``max_pixels`` from the header before decoding.
    Raises :class:`InputError` (with what to do) for a missing, unreadable, truncated or too large
    file.
    """
    path = _check_exists(Path(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                check_size(*im.size, max_pixels=max_pixels, source=str(path), what="image")
                im.load()
                im = ImageOps.exif_transpose(im)
                return to_rgb_array(im)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(
            f"{path}: refused as a possible decompression bomb ({exc}) — downscale the image first."
        ) from exc
    except UnidentifiedImageError as exc:
        raise InputError(
            f"{path} is not an image Pillow can read — use a PNG, JPEG or WebP file."
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"{path}: the image cannot be decoded ({exc}); it may be truncated or corrupt — "
            "re-export or re-download it."
        ) from exc


def write_image(path: str | Path, image: np.ndarray, *, quality: int = 95) -> Path:
    """Write a uint8 ``(H, W, 3)`` RGB (or ``(H, W)`` gray) image atomically.

    The format comes from the suffix (PNG, JPEG, WebP, BMP, TIFF). The file is written under a
    temporary name in the same folder and renamed when complete.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise UsageError(
            f"cannot write an image to {path}: unknown suffix {path.suffix!r} — use one of "
            f"{', '.join(IMAGE_SUFFIXES)}."
        )
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"write_image expects uint8 (H, W, 3) RGB, got {arr.dtype} {arr.shape}")
    ensure_parent(path)
    tmp = temp_sibling(path)
    try:
        im = Image.fromarray(arr)
        if suffix in (".jpg", ".jpeg") and im.mode == "RGBA":
            im = im.convert("RGB")
        kwargs = {"quality": quality} if suffix in (".jpg", ".jpeg", ".webp") else {}
        im.save(tmp, **kwargs)
        return commit(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
