"""Pose accuracy: does the generated person actually perform the driving motion?

The pose is re-detected in the generated frames (``kinemate.pose.extract_pose``) and compared
with the driving pose (the pose of the driving / ground-truth video, in the same pixel frame)
on the 18 COCO body keypoints:

* **PCK@α** — the fraction of keypoints visible in the driving pose (confidence > ``min_conf``)
  whose re-detected position lies within ``α · max(w, h)`` of it, where (w, h) is the size of
  the driving pose's body box in that frame. A keypoint the detector cannot find in the
  generated frame counts as wrong (an animation that loses a limb must not score well).
* **mean keypoint error** — the mean distance in pixels over keypoints found in both, and the
  same divided by the body-box size (``mke_norm``).
* **detection rate** — the fraction of driving-visible keypoints found at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kinemate.errors import UsageError

__all__ = ["PoseResult", "pose_accuracy"]


@dataclass
class PoseResult:
    pck: np.ndarray  # (F,) per-frame PCK@alpha (nan where the driving pose has no keypoints)
    mke_px: np.ndarray  # (F,) mean keypoint error in pixels (nan where nothing to compare)
    mke_norm: np.ndarray  # (F,) same, divided by the body-box size
    detected: np.ndarray  # (F,) fraction of driving-visible keypoints re-detected
    alpha: float
    counts: tuple[int, int, int]  # (visible, correct, detected) totals

    def summary(self) -> dict[str, float]:
        vis, cor, det = self.counts
        def m(x):
            return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")
        return {
            f"pck@{self.alpha:g}": cor / vis if vis else float("nan"),
            "mke_px": m(self.mke_px),
            "mke_norm": m(self.mke_norm),
            "pose_detection_rate": det / vis if vis else float("nan"),
        }


def _body(x) -> np.ndarray:
    arr = getattr(x, "body", x)
    arr = np.asarray(arr, np.float64)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise UsageError(f"pose must be a PoseTrack or an array (F, K, 3) of x, y, confidence; got shape {arr.shape}")
    return arr


def pose_accuracy(generated, driving, *, alpha: float = 0.1, min_conf: float = 0.3) -> PoseResult:
    """Compare re-detected poses with driving poses (PoseTrack or (F, K, 3) arrays, same pixels)."""
    g, d = _body(generated), _body(driving)
    n = min(len(g), len(d))
    if g.shape[1] != d.shape[1]:
        raise UsageError(f"poses have different keypoint counts ({g.shape[1]} vs {d.shape[1]}); use one skeleton")
    pck, mke, mken, det = (np.full(n, np.nan) for _ in range(4))
    tot_vis = tot_cor = tot_det = 0
    for t in range(n):
        vis = d[t, :, 2] > min_conf
        if vis.sum() < 2:
            continue
        xy = d[t, vis, :2]
        size = max(float((xy.max(0) - xy.min(0)).max()), 1.0)
        found = g[t, :, 2] > min_conf
        both = vis & found
        dist = np.linalg.norm(g[t, :, :2] - d[t, :, :2], axis=1)
        correct = both & (dist <= alpha * size)
        tot_vis += int(vis.sum())
        tot_cor += int(correct.sum())
        tot_det += int(both.sum())
        pck[t] = correct.sum() / vis.sum()
        det[t] = both.sum() / vis.sum()
        if both.any():
            mke[t] = dist[both].mean()
            mken[t] = mke[t] / size
    return PoseResult(pck, mke, mken, det, alpha, (tot_vis, tot_cor, tot_det))
