"""Helpers shared by the provenance tests (real ffmpeg, small clips)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np


def pan(img: np.ndarray, n: int = 6, step: int = 2) -> list[np.ndarray]:
    """A short clip with camera motion over a photo."""
    h, w = img.shape[:2]
    big = cv2.resize(img, (w + 4 * n, h + 4 * n), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(big[step * i: step * i + h, step * i: step * i + w]) for i in range(n)]


def ffmpeg(*args: str) -> None:
    from kinemate.io import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def reencode(src: Path, dst: Path, vf: str = "null", crf: int = 23) -> Path:
    ffmpeg("-i", str(src), "-vf", vf, "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", str(dst))
    return dst
