"""Synthetic generator: determinism and ground-truth consistency."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kinemate.errors import UsageError
from kinemate.synth import (
    EVAL_SEEDS,
    MOTION_NAMES,
    TRAIN_SEEDS,
    SyntheticClips,
    densepose_map,
    generate_clip,
)
from kinemate.synth.body import BONES, J

FIELDS = ("frames", "pose", "skeleton", "parts", "iuv", "densepose", "mask", "joints3d")


def test_same_seed_is_bitwise_identical():
    a = generate_clip(123, 6, (96, 80))
    b = generate_clip(123, 6, (96, 80))
    for name in FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.meta == b.meta


def test_different_seeds_differ():
    a = generate_clip(1, 4, 64)
    b = generate_clip(2, 4, 64)
    assert not np.array_equal(a.frames, b.frames)
    assert a.meta["appearance"] != b.meta["appearance"]


def test_shapes_and_dtypes():
    c = generate_clip(7, 5, (96, 64), motion="wave")
    assert c.frames.shape == (5, 64, 96, 3) and c.frames.dtype == np.uint8
    assert c.pose.shape == (5, 18, 3) and c.pose.dtype == np.float32
    assert c.skeleton.shape == (5, 64, 96, 3) and c.skeleton.any()
    assert c.parts.shape == (5, 64, 96) and c.parts.max() <= 24
    assert c.mask.shape == (5, 64, 96) and c.mask.dtype == bool
    assert c.densepose.shape == (5, 64, 96, 3)
    assert c.size == (96, 64) and c.meta["motion"] == "wave"
    assert c.hand_left.shape == c.hand_right.shape == (5, 21, 3) and c.face.shape == (5, 70, 3)
    track = c.pose_track()
    assert np.array_equal(track.body, c.pose) and np.array_equal(track.face, c.face)
    assert np.array_equal(track.hand_left, c.hand_left)


def test_face_turns_away_and_hands_follow_wrists():
    c = generate_clip(34, 24, 160, motion="turn")
    facing = c.face[..., 2].mean(axis=1)
    assert facing.max() > 0.8 and facing.min() < 0.1  # seen from the front and from behind
    for hand, wrist in ((c.hand_left, 7), (c.hand_right, 4)):
        assert np.allclose(hand[:, 0, :2], c.pose[:, wrist, :2], atol=1e-3)
    body_only = generate_clip(34, 2, 160, motion="turn", skeleton_hands=False,
                              skeleton_face=False)
    assert (c.skeleton[:2] != body_only.skeleton).any()


def test_seed_splits_do_not_overlap():
    assert TRAIN_SEEDS.stop <= EVAL_SEEDS.start
    train = SyntheticClips(3, split="train", num_frames=2, size=32)
    ev = SyntheticClips(3, split="eval", num_frames=2, size=32)
    assert {train.seed(i) for i in range(3)}.isdisjoint(ev.seed(i) for i in range(3))
    assert all(ev.seed(i) >= 1_000_000 for i in range(3))
    with pytest.raises(UsageError):
        SyntheticClips(2, split="train", start=len(TRAIN_SEEDS) - 1)
    clips = list(train)
    assert len(clips) == 3 and clips[1].meta["seed"] == train.seed(1)


@pytest.mark.parametrize("seed,size", [(3, (128, 112)), (11, 64), (40, (96, 128)), (41, 64),
                                       (77, 160), (5, 64)])
def test_ground_truth_is_consistent(seed, size):
    c = generate_clip(seed, 8, size)
    h, w = c.mask.shape[1:]
    # every visible body keypoint lands on the person; face points (nose, eyes, ears lie on
    # the head's outline in profile) within one pixel of it
    near = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
                     for m in c.mask])
    for f in range(c.num_frames):
        for k, (x, y, conf) in enumerate(c.pose[f]):
            if conf > 0:
                xi, yi = int(round(x)), int(round(y))
                assert 0 <= xi < w and 0 <= yi < h
                face = k == 0 or k >= 14
                assert (near if face else c.mask)[f, yi, xi], (seed, f, k, x, y)
    # hands and face keypoints lie on the person too (within a pixel: outlines)
    for f in range(c.num_frames):
        for pts in (c.hand_left[f], c.hand_right[f], c.face[f]):
            for x, y, conf in pts:
                if conf > 0:
                    assert near[f, int(round(y)), int(round(x))], (seed, f, x, y)
    # the part map and the mask agree, and the person is coloured over the background
    assert np.array_equal(c.parts > 0, c.mask)
    assert np.array_equal(c.iuv[..., 0], c.parts)
    assert np.array_equal(c.densepose, densepose_map(c.parts))
    diff = np.abs(c.frames.astype(int) - c.background.astype(int)).sum(-1)
    assert (diff[~c.mask] < 60).mean() > 0.97  # off the person only a faint shadow
    # 3D bone lengths are constant over the clip; 2D keypoints are their projection
    for a, b in BONES:
        lengths = np.linalg.norm(c.joints3d[:, J[a]] - c.joints3d[:, J[b]], axis=-1)
        assert np.allclose(lengths, lengths[0], rtol=1e-4), (a, b)


def test_at_least_eight_motions_and_all_move_in_frame():
    assert len(MOTION_NAMES) >= 8
    for k, name in enumerate(MOTION_NAMES):
        c = generate_clip(500 + k, 12, 96, motion=name)
        vis = c.pose[..., 2] > 0
        body = vis.all(axis=0)  # keypoints visible in every frame (close-ups crop the legs)
        assert body[1:8].all(), name  # neck and arms always in view
        xy = c.pose[:, body, :2]
        motion = np.abs(xy - xy[0]).max()
        assert motion > 2.0, f"{name} barely moves ({motion:.2f} px)"
        j = c.joints3d[..., :2]
        assert j[..., 0].min() > -5 and j[..., 0].max() < 96 + 5, name
        assert j[..., 1].min() > -5, name  # heads and hands stay inside the top edge


def test_densepose_background_is_viridis_zero():
    dp = densepose_map(np.zeros((2, 4, 4), np.uint8))
    assert tuple(dp[0, 0, 0]) == (68, 1, 84)


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError):
        generate_clip(0, 2, 64, motion="moonwalk")
    with pytest.raises(UsageError):
        generate_clip(-1, 2, 64)
    for size in (8, "12x64", "abc", (64,)):
        with pytest.raises(UsageError):
            generate_clip(0, 2, size)


def test_identical_across_processes():
    import hashlib
    import subprocess
    import sys

    code = ("import hashlib; from kinemate.synth import generate_clip; "
            "c = generate_clip(4242, 3, (72, 56)); "
            "print(hashlib.sha256(c.frames.tobytes() + c.pose.tobytes()"
            " + c.skeleton.tobytes() + c.parts.tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123", "PATH": ""})
    c = generate_clip(4242, 3, (72, 56))
    here = hashlib.sha256(c.frames.tobytes() + c.pose.tobytes() + c.skeleton.tobytes()
                          + c.parts.tobytes()).hexdigest()
    assert out.stdout.strip() == here


def test_choosing_the_motion_keeps_the_person():
    a = generate_clip(77, 4, 96, motion="wave")
    b = generate_clip(77, 4, 96, motion="squat")
    assert a.meta["appearance"] == b.meta["appearance"] and a.meta["body"] == b.meta["body"]
    assert a.meta["background"] == b.meta["background"]
    assert a.meta["motion"] != b.meta["motion"] and not np.array_equal(a.pose, b.pose)


# What generate_clip(2024, 3, 64) produced at GENERATOR_VERSION 1 (the version the bundled model
# was trained on). If this fails, the generator changed: if that was intended, bump
# GENERATOR_VERSION (kinemate/synth/clip.py), update these numbers and say so in the model card.
GOLDEN_POSE_F2 = [
    [32.58, 11.24], [32.80, 16.48], [28.04, 17.56], [18.84, 15.67], [10.85, 12.98],
    [37.56, 17.56], [46.75, 15.67], [54.63, 12.98], [29.20, 32.72], [26.19, 45.77],
    [23.60, 57.92], [36.39, 32.72], [39.40, 45.77], [42.41, 57.92], [31.33, 10.29],
    [33.86, 10.29], [29.82, 10.65], [35.80, 10.65],
]
GOLDEN_MEAN_RGB = [120.33, 135.75, 129.63]
GOLDEN_MASK_PIXELS = 1707


def test_generator_output_is_pinned():
    from kinemate.synth import GENERATOR_VERSION

    c = generate_clip(2024, 3, 64)
    assert GENERATOR_VERSION == 1 and c.meta["generator_version"] == 1
    assert c.meta["motion"] == "jumping_jacks" and c.meta["appearance"]["hair_style"] == "long"
    assert np.allclose(c.pose[2, :, :2], GOLDEN_POSE_F2, atol=0.02)
    assert np.allclose(c.frames.reshape(-1, 3).mean(0), GOLDEN_MEAN_RGB, atol=0.05)
    assert abs(int(c.mask.sum()) - GOLDEN_MASK_PIXELS) <= 3
