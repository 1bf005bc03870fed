"""Flicker (warping error), identity drift and pose accuracy on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from kinemate.errors import UsageError
from kinemate.eval.flicker import occlusion_mask, warping_error
from kinemate.eval.identity import appearance_embedding, identity_drift
from kinemate.eval.pose_metrics import pose_accuracy


def _texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 220, (h // 4 + 2, w // 4 + 2, 3)).astype(np.float64)
    import cv2
    return cv2.resize(small, (w + 8, h + 8), interpolation=cv2.INTER_CUBIC)


def moving_video(n=6, h=64, w=80, speed=1, flicker=0.0, seed=0):
    """A textured scene panning by `speed` px/frame; brightness alternates by ±flicker."""
    tex = _texture(h, w + n * speed, seed)
    frames = []
    for t in range(n):
        f = tex[4:4 + h, 4 + t * speed: 4 + t * speed + w] if speed else tex[4:4 + h, 4:4 + w]
        f = f + (flicker if t % 2 else -flicker)
        frames.append(np.clip(np.round(f), 0, 255).astype(np.uint8))
    return np.stack(frames)


def test_static_video_has_zero_warping_error():
    v = np.repeat(moving_video(1)[None, 0], 5, axis=0)
    r = warping_error(v)
    assert r.warp_mse.shape == (4,)
    assert np.all(r.warp_mae < 0.05)
    assert np.all(r.valid > 0.99)


def test_warping_error_small_for_clean_motion_and_monotonic_in_flicker():
    errs = []
    for amp in (0.0, 3.0, 6.0, 12.0, 24.0):
        errs.append(warping_error(moving_video(flicker=amp)).summary()["warp_mae"])
    assert errs[0] < 1.5  # clean pan: only interpolation error
    assert all(b > a for a, b in zip(errs, errs[1:])), errs
    # a flicker of ±12 is a 24-level jump between frames
    assert errs[3] == pytest.approx(24.0, rel=0.25)


def test_flow_from_another_video_and_shape_check():
    clean = moving_video()
    flick = moving_video(flicker=10.0)
    r = warping_error(flick, flow_from=clean)
    assert r.summary()["warp_mae"] == pytest.approx(20.0, rel=0.2)
    with pytest.raises(UsageError, match="same size"):
        warping_error(flick, flow_from=clean[:, :32])


def test_occlusion_mask_rejects_inconsistent_flow():
    h, w = 20, 30
    fw = np.zeros((h, w, 2), np.float32)
    fw[..., 0] = 2.0
    bw = -fw.copy()
    assert occlusion_mask(fw, bw)[:, : w - 3].all()       # consistent inside the frame
    assert not occlusion_mask(fw, bw)[:, w - 1].any()     # lands outside
    bad = np.zeros_like(bw)                               # backward says "no motion"
    bad[..., 0] = 3.0
    assert not occlusion_mask(fw, bad).any()


def test_identity_similarity_one_for_reference_and_drifts_with_colour_change():
    ref = moving_video(1)[0]
    frames = []
    for t in range(8):  # shift hue progressively
        f = ref.astype(np.int32)
        f[..., 0] = np.clip(f[..., 0] + 12 * t, 0, 255)
        f[..., 2] = np.clip(f[..., 2] - 12 * t, 0, 255)
        frames.append(f.astype(np.uint8))
    r = identity_drift(np.stack(frames), ref)
    assert r.similarity[0] == pytest.approx(1.0, abs=1e-9)
    assert np.all(np.diff(r.similarity) < 0)
    s = r.summary()
    assert s["identity_drop"] > 0 and s["identity_slope_per_100f"] < 0
    assert "proxy" in r.embedding
    # pluggable embedding + boxes
    r2 = identity_drift(np.stack(frames), ref, embed=lambda im: im.reshape(-1, 3).mean(0),
                        embedding_name="mean colour", boxes=[(0, 0, 10, 10)] * 8, reference_box=(0, 0, 10, 10))
    assert r2.embedding == "mean colour" and r2.similarity.shape == (8,)
    assert appearance_embedding(ref).ndim == 1


def test_pose_accuracy_hand_computed():
    d = np.zeros((2, 18, 3))
    d[:, :4, 2] = 1.0
    d[:, :4, :2] = [[0, 0], [100, 0], [0, 100], [100, 100]]  # body box 100 px
    g = d.copy()
    g[0, 1, 0] += 5      # within 0.1*100 = 10 px
    g[0, 2, 0] += 20     # outside
    g[0, 3, 2] = 0.0     # not re-detected -> wrong
    r = pose_accuracy(g, d, alpha=0.1)
    assert r.pck[0] == pytest.approx(2 / 4)
    assert r.pck[1] == pytest.approx(1.0)
    assert r.mke_px[0] == pytest.approx((0 + 5 + 20) / 3)
    assert r.mke_norm[0] == pytest.approx((25 / 3) / 100)
    s = r.summary()
    assert s["pck@0.1"] == pytest.approx(6 / 8)
    assert s["pose_detection_rate"] == pytest.approx(7 / 8)
    with pytest.raises(UsageError):
        pose_accuracy(np.zeros((2, 18)), d)
