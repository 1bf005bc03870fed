"""Identity drift: how similar each generated frame's person region stays to the reference.

Each frame's person region (a box, e.g. from the pose track, else the whole frame) and the
reference's person region are embedded, and the cosine similarity of the embeddings is taken
per frame. Drift is the decline of that curve over time (``slope`` per 100 frames, and
``first − last`` averaged over the first and last 10 % of frames).

The embedding network is pluggable (any callable ``uint8 (H, W, 3) → 1-D vector``, e.g. a face
or re-identification network). The default, :func:`appearance_embedding`, needs no weights: a
HSV colour histogram (Hellinger-normalised) concatenated with a HOG descriptor of the region
resized to 64×128. It is a **proxy** for identity — it sees clothing colours and coarse shape,
not faces — and is documented as such in reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from kinemate.eval.metrics import as_frames

__all__ = ["IdentityResult", "appearance_embedding", "identity_drift", "crop_box", "DEFAULT_EMBEDDING_NAME"]

DEFAULT_EMBEDDING_NAME = "appearance proxy: HSV histogram (8x8x4, Hellinger) + HOG 64x128 (no weights)"

Box = tuple[float, float, float, float]

_HOG = None


def _hog():
    global _HOG  # cached descriptor object (immutable configuration, safe to share)
    if _HOG is None:
        _HOG = cv2.HOGDescriptor((64, 128), (16, 16), (8, 8), (8, 8), 9)
    return _HOG


def crop_box(image: np.ndarray, box: Box | None, *, margin: float = 0.1) -> np.ndarray:
    """The region ``box`` (x0, y0, x1, y1) of ``image`` widened by ``margin``; whole image if None."""
    if box is None:
        return image
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    x0, x1 = int(max(0, np.floor(x0 - mx))), int(min(w, np.ceil(x1 + mx)))
    y0, y1 = int(max(0, np.floor(y0 - my))), int(min(h, np.ceil(y1 + my)))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return image
    return image[y0:y1, x0:x1]


def appearance_embedding(region: np.ndarray) -> np.ndarray:
    """Weight-free appearance embedding of a uint8 RGB region (unit-norm vector, 1-D)."""
    hsv = cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 8, 4], [0, 180, 0, 256, 0, 256]).ravel()
    hist = np.sqrt(hist / max(hist.sum(), 1.0))  # Hellinger: unit L2 norm
    grey = cv2.cvtColor(cv2.resize(region, (64, 128), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    hog = _hog().compute(grey).ravel().astype(np.float64)
    hog /= max(np.linalg.norm(hog), 1e-12)
    v = np.concatenate([hist, hog]) / np.sqrt(2.0)
    return v


@dataclass
class IdentityResult:
    similarity: np.ndarray  # (F,) cosine similarity to the reference
    embedding: str

    def summary(self) -> dict[str, float]:
        s = self.similarity
        if len(s) == 0:
            return {"identity_mean": float("nan"), "identity_drop": float("nan"), "identity_slope_per_100f": float("nan")}
        k = max(1, len(s) // 10)
        slope = float(np.polyfit(np.arange(len(s)), s, 1)[0] * 100) if len(s) > 1 else 0.0
        return {
            "identity_mean": float(s.mean()),
            "identity_drop": float(s[:k].mean() - s[-k:].mean()),
            "identity_slope_per_100f": slope,
        }


def identity_drift(
    frames: np.ndarray,
    reference: np.ndarray,
    *,
    boxes: list[Box | None] | None = None,
    reference_box: Box | None = None,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
    embedding_name: str | None = None,
) -> IdentityResult:
    """Cosine similarity of each frame's person region to the reference's (F,)."""
    frames = as_frames(frames, "frames")
    embed = embed or appearance_embedding
    name = embedding_name or (DEFAULT_EMBEDDING_NAME if embed is appearance_embedding else getattr(embed, "__name__", "custom"))
    ref = np.asarray(embed(crop_box(reference, reference_box)), np.float64)
    ref /= max(np.linalg.norm(ref), 1e-12)
    sims = []
    for i, f in enumerate(frames):
        box = boxes[i] if boxes is not None and i < len(boxes) else None
        v = np.asarray(embed(crop_box(f, box)), np.float64)
        sims.append(float(v @ ref / max(np.linalg.norm(v), 1e-12)))
    return IdentityResult(np.asarray(sims), name)
