"""Temporal flicker: the optical-flow warping error (Lai et al., ECCV 2018), with OpenCV flow.

For each pair of consecutive frames (t, t+1): the forward flow t→t+1 and the backward flow
t+1→t are computed with OpenCV's DIS optical flow (``PRESET_MEDIUM``) on grey levels — by
default on the evaluated video itself, or on another video of the same motion (``flow_from``,
e.g. the ground truth). Frame t+1 is warped back onto frame t (``cv2.remap``, bilinear), and
the error is measured only where the flow is trustworthy:

* forward–backward consistency (Sundaram et al. 2010): pixel x is kept when
  ``|F(x) + B(x + F(x))|² < 0.01 (|F(x)|² + |B(x + F(x))|²) + 0.5`` (pixels²), i.e. occluded or
  disoccluded pixels are dropped;
* pixels whose flow lands outside frame t+1 are dropped.

Per transition: ``warp_mse`` — mean over kept pixels and channels of the squared difference on
the 0..1 scale (Lai et al.'s E_warp); ``warp_mae`` — the mean absolute difference on 0..255 (the
size of the flicker in grey levels); ``valid`` — the fraction of pixels kept. A static video
has zero error; a video whose brightness flickers has an error that grows with the flicker.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kinemate.errors import UsageError
from kinemate.eval.metrics import as_frames

__all__ = ["FlickerResult", "warping_error", "compute_flow", "occlusion_mask"]


@dataclass
class FlickerResult:
    warp_mse: np.ndarray  # (F-1,) on the 0..1 scale
    warp_mae: np.ndarray  # (F-1,) grey levels (0..255)
    valid: np.ndarray  # (F-1,) fraction of pixels used

    def summary(self) -> dict[str, float]:
        if len(self.warp_mse) == 0:
            return {"warp_mse": float("nan"), "warp_mae": float("nan"), "valid_fraction": float("nan")}
        return {
            "warp_mse": float(np.nanmean(self.warp_mse)),
            "warp_mae": float(np.nanmean(self.warp_mae)),
            "valid_fraction": float(np.mean(self.valid)),
        }


def _grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def compute_flow(a: np.ndarray, b: np.ndarray, dis=None) -> np.ndarray:
    """Dense flow (H, W, 2) from uint8 RGB frame ``a`` to ``b`` (pixels; x then y)."""
    dis = dis or cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(_grey(a), _grey(b), None)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def _remap(img: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    return cv2.remap(img, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def occlusion_mask(fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """(H, W) bool: True where the forward flow ``fw`` (t→t+1) is consistent with the backward
    flow ``bw`` (t+1→t) and lands inside the frame."""
    h, w = fw.shape[:2]
    xs, ys = _grid(h, w)
    mx, my = xs + fw[..., 0], ys + fw[..., 1]
    bw_at = _remap(bw, mx, my)
    s = fw + bw_at
    lhs = (s**2).sum(-1)
    rhs = 0.01 * ((fw**2).sum(-1) + (bw_at**2).sum(-1)) + 0.5
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return (lhs < rhs) & inside


def warping_error(frames: np.ndarray, *, flow_from: np.ndarray | None = None) -> FlickerResult:
    """Warping error of each transition of uint8 frames (F, H, W, 3); see the module docstring."""
    frames = as_frames(frames, "frames")
    src = frames if flow_from is None else as_frames(flow_from, "flow_from")
    if src.shape != frames.shape:
        raise UsageError(
            f"flow_from has shape {src.shape} but the frames have {frames.shape}; "
            "use a video of the same size and length"
        )
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    h, w = frames.shape[1:3]
    xs, ys = _grid(h, w)
    mse, mae, valid = [], [], []
    for t in range(len(frames) - 1):
        fw = compute_flow(src[t], src[t + 1], dis)
        bw = compute_flow(src[t + 1], src[t], dis)
        mask = occlusion_mask(fw, bw)
        warped = _remap(frames[t + 1], xs + fw[..., 0], ys + fw[..., 1]).astype(np.float64)
        diff = np.abs(frames[t].astype(np.float64) - warped)[mask]  # (N, 3)
        valid.append(mask.mean())
        if diff.size == 0:
            mse.append(np.nan)
            mae.append(np.nan)
            continue
        mse.append(float(np.mean((diff / 255.0) ** 2)))
        mae.append(float(np.mean(diff)))
    return FlickerResult(np.asarray(mse), np.asarray(mae), np.asarray(valid, dtype=np.float64))
