"""Retargeting on synthetic skeletons with known bone lengths."""

from __future__ import annotations

import math

import numpy as np
import pytest
from posefixtures import lengths, skeleton, track_of

from kinemate.errors import NoPersonError
from kinemate.pose import bone_lengths, retarget
from kinemate.pose.skeleton import BODY_LIMBS, L_ANKLE, L_WRIST, NECK, R_ANKLE, R_WRIST


def _dance(n: int, lens: dict, neck_y: float = 150.0, jump: int | None = None) -> list[np.ndarray]:
    """Arms swinging, knees bending slightly, walking right; feet on y = ground."""
    bodies = []
    for i in range(n):
        a = 40 * math.sin(i / 3)
        angles = {3: 100 + a, 4: 95 + a, 6: 80 - a, 7: 85 - a}
        body = skeleton(lens, neck=(200 + 2 * i, neck_y), angles=angles)
        if jump is not None and i == jump:
            body[:, 1] -= 30  # a 30-px jump
        bodies.append(body)
    return bodies


def test_bones_take_reference_lengths_and_feet_stay_grounded():
    drv = track_of(_dance(12, lengths(1.0)), 640, 480)
    ref_body = skeleton(lengths(1.3, legs=1.2, arms=0.8), neck=(300, 120))
    ref = track_of([ref_body], 600, 800)
    out = retarget(drv, ref)
    assert out.size == (600, 800) and len(out) == 12
    want = bone_lengths(ref_body)
    got = bone_lengths(out.body)
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-4, atol=1e-3)
    ground = max(ref_body[R_ANKLE, 1], ref_body[L_ANKLE, 1])
    np.testing.assert_allclose(out.body[:, [R_ANKLE, L_ANKLE], 1].max(axis=1), ground, atol=1e-3)
    # first frame's neck starts where the reference's neck is horizontally; motion is scaled
    assert abs(out.body[0, NECK, 0] - 300) < 1e-3
    assert out.body[-1, NECK, 0] - out.body[0, NECK, 0] == pytest.approx(22 * out.meta["retargeted"]["scale"], rel=1e-3)
    assert out.meta["retargeted"]["grounded"]
    assert (out.confidence > 0.9).all()


def test_jump_is_kept_relative_to_ground():
    drv = track_of(_dance(8, lengths(1.0), jump=4), 640, 480)
    ref_body = skeleton(lengths(2.0), neck=(300, 120))
    out = retarget(drv, track_of([ref_body], 800, 900))
    s = out.meta["retargeted"]["scale"]
    assert s == pytest.approx(2.0, rel=1e-3)
    low = out.body[:, [R_ANKLE, L_ANKLE], 1].max(axis=1)
    assert low[3] - low[4] == pytest.approx(30 * s, rel=1e-3)


def test_hands_follow_the_wrists():
    bodies = _dance(4, lengths(1.0))
    drv = track_of(bodies, 640, 480)
    for t in range(4):
        w = bodies[t][L_WRIST, :2]
        drv.hand_left[t, :, :2] = w + np.linspace(0, 20, 21)[:, None]
        drv.hand_left[t, :, 2] = 1.0
    out = retarget(drv, track_of([skeleton(lengths(1.5), neck=(300, 150))], 800, 800))
    np.testing.assert_allclose(out.hand_left[:, 0, :2], out.body[:, L_WRIST, :2], atol=1e-3)
    assert (out.hand_right[..., 2] == 0).all()  # nothing invented
    assert (out.body[:, R_WRIST, 2] > 0).all()


def test_half_body_reference_keeps_leg_proportions_and_skips_grounding():
    drv = track_of(_dance(5, lengths(1.0)), 640, 480)
    ref_body = skeleton(lengths(1.5, arms=1.2), neck=(250, 200))
    ref_body[[8, 9, 10, 11, 12, 13], 2] = 0  # a portrait: no hips or legs
    out = retarget(drv, track_of([ref_body], 500, 500))
    assert not out.meta["retargeted"]["grounded"]
    s = out.meta["retargeted"]["scale"]
    got = bone_lengths(out.body[0])
    drv_len = bone_lengths(drv.body[0])
    thigh = BODY_LIMBS.index((8, 9))
    assert got[thigh] == pytest.approx(s * drv_len[thigh], rel=1e-4)  # global scale only
    forearm = BODY_LIMBS.index((6, 7))
    assert got[forearm] == pytest.approx(bone_lengths(ref_body)[forearm], rel=1e-4)
    # some bones were guessed: lower confidence than with a full reference
    full = retarget(drv, track_of([skeleton(lengths(1.5), neck=(250, 200))], 500, 500))
    assert (out.confidence < full.confidence).all()


def test_missing_elbow_hangs_wrist_from_shoulder():
    bodies = _dance(3, lengths(1.0))
    bodies[1][6, 2] = 0  # left elbow not seen in frame 1
    out = retarget(track_of(bodies, 640, 480), track_of([skeleton(lengths(1.0), neck=(256, 150))], 512, 512))
    assert out.body[1, 6, 2] == 0 and out.body[1, L_WRIST, 2] > 0
    # same scale, same lengths: the wrist lands where it was relative to the shoulder
    rel_in = bodies[1][L_WRIST, :2] - bodies[1][5, :2]
    rel_out = out.body[1, L_WRIST, :2] - out.body[1, 5, :2]
    np.testing.assert_allclose(rel_out, rel_in, atol=1e-3)


def test_frames_without_person_stay_empty_with_zero_confidence():
    bodies = _dance(4, lengths(1.0))
    bodies[2][:] = 0
    out = retarget(track_of(bodies, 640, 480), track_of([skeleton(lengths(1.0))], 512, 512))
    assert out.confidence[2] == 0 and (out.body[2, :, 2] == 0).all()


def test_no_person_errors():
    drv = track_of(_dance(3, lengths(1.0)))
    empty_ref = track_of([np.zeros((18, 3), np.float32)])
    with pytest.raises(NoPersonError, match="reference photo"):
        retarget(drv, empty_ref)
    with pytest.raises(NoPersonError, match="driving"):
        retarget(track_of([np.zeros((18, 3), np.float32)] * 3), track_of([skeleton(lengths())]))


def _noisy(body: np.ndarray, sd: float, seed: int) -> np.ndarray:
    out = body.astype(np.float32).copy()
    rng = np.random.default_rng(seed)
    out[..., :2] += rng.normal(0.0, sd, out[..., :2].shape).astype(np.float32)
    return out


@pytest.mark.parametrize("seed", [1_000_101, 1_000_103, 1_000_106])
def test_the_reference_person_driving_themselves_is_left_as_is(seed):
    """A synthetic clip (exact poses: kinemate.synth) whose reference is its own frame 0,
    both seen through detection noise (2 px, a different draw for the photo): retargeting
    must give back frame 0's pose for frame 0 and the person's own bone lengths, not a
    shorter, lower body (the 90th-percentile estimator did: noise made the driving bones
    long, so every bone was scaled down and the feet rule pulled the body down)."""
    from kinemate.synth import generate_clip

    clip = generate_clip(seed, num_frames=16, size=(256, 256), skeleton=False, densepose=False)
    exact = clip.pose.astype(np.float32)
    drv = track_of(list(_noisy(exact, 2.0, 1)), 256, 256, clip.fps)
    ref_body = _noisy(exact[0], 2.0, 2)
    out = retarget(drv, track_of([ref_body], 256, 256))
    seen = exact[0, :, 2] > 0
    err0 = np.linalg.norm(out.body[0, seen, :2] - exact[0, seen, :2], axis=-1)
    # the noise alone (reference neck + driving offsets) puts a keypoint ~3 px off
    assert err0.mean() < 4.5 and abs(float(np.mean(out.body[0, seen, 1] - exact[0, seen, 1]))) < 1.5
    err = np.linalg.norm(out.body[..., :2] - exact[..., :2], axis=-1)
    assert err[exact[..., 2] > 0].mean() < 5.0
    assert out.meta["retargeted"]["scale"] == pytest.approx(1.0, abs=0.03)
    ratio = bone_lengths(out.body) / bone_lengths(exact, 0.01)  # (F, 17)
    per_bone = [np.median(r[np.isfinite(r)]) for r in ratio.T if np.isfinite(r).any()]
    assert np.median(per_bone) == pytest.approx(1.0, abs=0.03)  # not biased short


def test_a_bone_foreshortened_in_the_reference_is_not_shrunk_in_every_frame():
    """The reference photo is frame 0 of the driving video, in which the left forearm points
    at the camera (half its length on screen); later it swings out to full length. The same
    person: every frame keeps the driving lengths (scale 1, factors 1), frame 0 maps onto
    the reference."""
    bodies = _dance(10, lengths(1.0))
    for t in range(3):  # frames 0-2: forearm foreshortened to half
        b = bodies[t]
        b[L_WRIST, :2] = b[6, :2] + 0.5 * (b[L_WRIST, :2] - b[6, :2])
    drv = track_of(bodies, 640, 480)
    out = retarget(drv, track_of([bodies[0].copy()], 640, 480))
    assert out.meta["retargeted"]["scale"] == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(out.meta["retargeted"]["bone_factors"], 1.0, atol=1e-3)
    np.testing.assert_allclose(out.body[:, :, :2], drv.body[:, :, :2], atol=1e-2)


def test_anchor_frame_is_the_one_in_the_reference_pose_not_a_sparse_one():
    """The reference holds the pose of driving frame 5; frame 1 shows only the shoulders
    (which match anything): frame 5 is put on the reference."""
    bodies = _dance(8, lengths(1.0))
    bodies[1][[0, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], 2] = 0
    ref_body = bodies[5].copy()
    ref_body[:, :2] += (40, -10)
    out = retarget(track_of(bodies, 640, 480), track_of([ref_body], 640, 480))
    assert out.meta["retargeted"]["anchor_frame"] == 5
    np.testing.assert_allclose(out.body[5, :, :2], ref_body[:, :2], atol=1e-3)
