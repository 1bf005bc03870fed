"""Per-frame image metrics that need no weights: L1, PSNR (correct and the uint8 trap), SSIM.

All functions take frames as uint8 RGB arrays, either one image ``(H, W, 3)`` or a stack
``(F, H, W, 3)``; stacks give one value per frame (a float64 array of length F). Values are
computed in float64 on the 0..255 scale (``data_range=255``).

* :func:`l1` — mean absolute error, on the 0..1 scale (the convention of the field's tables).
* :func:`psnr` — ``10 log10(255² / MSE)`` with the MSE computed in float: ``inf`` for identical
  frames.
* :func:`psnr_uint8_overflow` — the *wrong* PSNR of the widely copied evaluation script, which
  subtracts and squares uint8 arrays (both wrap modulo 256) before averaging. Kept only to show
  how published numbers were inflated; never use it to report results.
* :func:`ssim` — the structural similarity of Wang et al. (2004): an 11×11 Gaussian window with
  σ = 1.5, K1 = 0.01, K2 = 0.03, statistics weighted by the window (population, not sample,
  covariance), the SSIM map averaged over the "valid" region (pixels whose window lies inside
  the image) and over the three colour channels. This equals
  ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255, channel_axis=-1)``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from kinemate.errors import UsageError

__all__ = ["l1", "psnr", "psnr_uint8_overflow", "ssim", "gaussian_window", "as_frames"]

DATA_RANGE = 255.0


def as_frames(x: np.ndarray, name: str = "frames") -> np.ndarray:
    """Return ``x`` as a uint8 stack ``(F, H, W, C)``; a single ``(H, W, C)`` image becomes F=1."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise UsageError(
            f"{name} must be an image (H, W, 3) or a stack (F, H, W, 3), got shape {x.shape}; "
            "pass uint8 RGB frames"
        )
    if x.dtype != np.uint8:
        raise UsageError(f"{name} must be uint8 (0..255), got {x.dtype}; convert with .astype(np.uint8)")
    return x


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    single = np.asarray(a).ndim == 3
    a, b = as_frames(a, "a"), as_frames(b, "b")
    if a.shape != b.shape:
        raise UsageError(
            f"frames to compare have different shapes {a.shape} and {b.shape}; "
            "resize/crop them to one size first (the eval protocol does this)"
        )
    return a, b, single


def _out(values: np.ndarray, single: bool):
    return float(values[0]) if single else values


def l1(a: np.ndarray, b: np.ndarray):
    """Mean absolute difference per frame on the 0..1 scale."""
    a, b, single = _pair(a, b)
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)) / DATA_RANGE
    return _out(d.reshape(len(a), -1).mean(axis=1), single)


def mse(a: np.ndarray, b: np.ndarray):
    """Mean squared difference per frame on the 0..255 scale, in float64."""
    a, b, single = _pair(a, b)
    d = a.astype(np.float64) - b.astype(np.float64)
    return _out((d * d).reshape(len(a), -1).mean(axis=1), single)


def _psnr_from_mse(m: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(m > 0, 10.0 * np.log10(DATA_RANGE**2 / np.maximum(m, 1e-300)), math.inf)


def psnr(a: np.ndarray, b: np.ndarray):
    """Peak signal-to-noise ratio in dB per frame (float MSE; ``inf`` for identical frames)."""
    a, b, single = _pair(a, b)
    return _out(_psnr_from_mse(np.atleast_1d(mse(a, b))), single)


def psnr_uint8_overflow(a: np.ndarray, b: np.ndarray):
    """The PSNR of the widely copied script: MSE of ``(a - b) ** 2`` evaluated *in uint8*.

    ``a - b`` wraps modulo 256 (``10 - 20 == 246``) and so does the square (``246 ** 2 ==
    60516 ≡ 100``), so every squared error is reduced modulo 256 and lies in 0..255 — the MSE can
    never exceed 255 and the PSNR never falls below ~24 dB, whatever the images. Reproduced
    exactly to show the inflation; do not report it.
    """
    a, b, single = _pair(a, b)
    d = a - b  # uint8, wraps
    sq = d**2  # uint8, wraps again
    m = sq.reshape(len(a), -1).mean(axis=1, dtype=np.float64)
    return _out(_psnr_from_mse(m), single)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian of odd ``size`` (the separable factor of the SSIM window)."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of one float64 image ``x`` (H, W, C) with 1-D kernel ``g``:
    only pixels whose whole window lies inside the image are kept (the border rule is then moot)."""
    r = (len(g) - 1) // 2
    y = cv2.sepFilter2D(x, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)
    y = y.reshape(x.shape)
    return y[r:-r, r:-r] if r else y


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
):
    """SSIM (Wang et al. 2004) per frame; 1.0 for identical frames. See the module docstring."""
    a, b, single = _pair(a, b)
    if min(a.shape[1:3]) < window:
        raise UsageError(
            f"SSIM needs frames of at least {window}x{window} pixels, got {a.shape[2]}x{a.shape[1]}; "
            "evaluate at a larger resolution"
        )
    g = gaussian_window(window, sigma)
    c1 = (k1 * DATA_RANGE) ** 2
    c2 = (k2 * DATA_RANGE) ** 2
    out = np.empty(len(a))
    for i in range(len(a)):
        x, y = a[i].astype(np.float64), b[i].astype(np.float64)
        mx, my = _filter_valid(x, g), _filter_valid(y, g)
        sxx = _filter_valid(x * x, g) - mx * mx
        syy = _filter_valid(y * y, g) - my * my
        sxy = _filter_valid(x * y, g) - mx * my
        num = (2 * mx * my + c1) * (2 * sxy + c2)
        den = (mx * mx + my * my + c1) * (sxx + syy + c2)
        out[i] = (num / den).mean()
    return _out(out, single)
