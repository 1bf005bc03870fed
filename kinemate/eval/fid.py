"""Fréchet distances between feature sets: FID (frames), FID-VID and FVD (clips).

``d² = |μ1 − μ2|² + tr(Σ1) + tr(Σ2) − 2 tr(√(Σ1 Σ2))`` between Gaussians fitted to two sets of
features (Heusel et al. 2017). The matrix square root is ``scipy.linalg.sqrtm`` in float64 with
the usual care: if the product is singular enough that the root is not finite, ε·I is added to
both covariances; a complex root with a negligible imaginary part (numerical noise) is reduced
to its real part, a non-negligible one is reported as a warning. With fewer samples than
feature dimensions the covariances are rank-deficient and the distance is biased upwards —
reports state the sample counts next to every Fréchet number.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from kinemate.errors import UsageError

__all__ = ["feature_stats", "frechet_distance", "frechet_from_features", "image_features"]

log = logging.getLogger(__name__)


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N-1) covariance of features (N, D) in float64."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise UsageError(
            f"a Fréchet distance needs at least 2 feature vectors per set, got shape {feats.shape}; "
            "evaluate more frames/clips"
        )
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, *, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise UsageError(f"feature statistics differ in shape ({mu1.shape} vs {mu2.shape}); use one network for both sets")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        log.warning("Fréchet distance: singular product of covariances; adding %g to the diagonals", eps)
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.diagonal(covmean).imag))
        if imag > 1e-3:
            log.warning("Fréchet distance: sqrtm has an imaginary component %.3g (few samples?); using the real part", imag)
        covmean = covmean.real
    d = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(d, 0.0)


def frechet_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between two feature sets (N, D) and (M, D)."""
    return frechet_distance(*feature_stats(a), *feature_stats(b))


@torch.no_grad()
def image_features(model, frames: np.ndarray, *, batch: int = 16) -> np.ndarray:
    """Features (F, D) of uint8 frames (F, H, W, 3) from an image network with ``features()``
    taking float (N, 3, H, W) in [0, 1] (the FID InceptionV3)."""
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(np.ascontiguousarray(frames[i : i + batch])).to(dev).permute(0, 3, 1, 2).float() / 255.0
        out.append(model.features(x).double().cpu().numpy())
    return np.concatenate(out)
