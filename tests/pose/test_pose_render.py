"""OpenPose control maps checked pixel by pixel against the standard colours."""

from __future__ import annotations

import numpy as np
import pytest
from posefixtures import lengths, skeleton, track_of

from kinemate.io import Framing
from kinemate.pose import render_openpose
from kinemate.pose.skeleton import (
    BODY_COLORS,
    BODY_LIMBS,
    FACE_POINT_COLOR,
    HAND_EDGE_COLORS,
    HAND_EDGES,
    HAND_POINT_COLOR,
    NECK,
)


def _limb_colour(i: int) -> tuple[int, ...]:
    return tuple(int(c * 0.6) for c in BODY_COLORS[i])


def test_standard_colour_tables():
    assert BODY_COLORS[0] == (255, 0, 0) and BODY_COLORS[1] == (255, 85, 0) and BODY_COLORS[17] == (255, 0, 85)
    assert BODY_LIMBS[0] == (1, 2) and BODY_LIMBS[12] == (1, 0)
    assert HAND_EDGE_COLORS[0] == (255, 0, 0) and len(set(HAND_EDGE_COLORS)) == 20
    assert HAND_EDGES[4] == (0, 5)


def test_body_keypoints_and_limb_midpoints_pixel_exact():
    body = skeleton(lengths(1.2), neck=(256, 140))
    frame = next(render_openpose(track_of([body]), (512, 512)))
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
    for k in range(18):
        x, y = int(body[k, 0]), int(body[k, 1])
        # the circle's centre has the keypoint's colour unless a later keypoint covers it
        later = [j for j in range(k + 1, 18) if abs(body[j, 0] - x) < 9 and abs(body[j, 1] - y) < 9]
        if not later:
            assert tuple(frame[y, x]) == BODY_COLORS[k], k
    for i, (a, b) in enumerate(BODY_LIMBS):
        mx, my = (body[a, :2] + body[b, :2]) / 2
        length = np.hypot(*(body[a, :2] - body[b, :2]))
        if length < 30:
            continue  # short head limbs are covered by circles
        later = [j for j in range(i + 1, len(BODY_LIMBS))
                 if np.hypot(*((body[BODY_LIMBS[j][0], :2] + body[BODY_LIMBS[j][1], :2]) / 2 - (mx, my))) < 10]  # fmt: skip
        if not later:
            assert tuple(frame[int(my), int(mx)]) == _limb_colour(i), i
    # black background, and only standard colours anywhere
    assert tuple(frame[5, 5]) == (0, 0, 0)
    allowed = {(0, 0, 0)} | set(BODY_COLORS) | {_limb_colour(i) for i in range(17)}
    assert {tuple(c) for c in frame.reshape(-1, 3)} <= allowed


def test_low_confidence_joint_is_not_drawn():
    body = skeleton(lengths(), neck=(256, 140))
    body[7, 2] = 0.1  # left wrist, guessed
    frame = next(render_openpose(track_of([body]), (512, 512)))
    x, y = int(body[7, 0]), int(body[7, 1])
    assert tuple(frame[y, x]) != BODY_COLORS[7]
    mx, my = ((body[6, :2] + body[7, :2]) / 2).astype(int)
    assert tuple(frame[my, mx]) == (0, 0, 0)


def test_hands_and_face():
    t = track_of([skeleton(lengths(), neck=(256, 200))], 512, 512)
    hand = np.zeros((21, 3), np.float32)
    hand[0] = (100, 400, 1)
    for f in range(5):  # five straight fingers fanning upwards
        for j in range(4):
            ang = np.radians(-150 + 30 * f)
            hand[1 + 4 * f + j] = (100 + 25 * (j + 1) * np.cos(ang), 400 + 25 * (j + 1) * np.sin(ang), 1)
    t.hand_right[0] = hand
    t.face[0, :, :] = 0
    t.face[0, 0] = (420, 60, 1)
    frame = next(render_openpose(t, (512, 512)))
    for k in range(21):
        assert tuple(frame[int(hand[k, 1]), int(hand[k, 0])]) == HAND_POINT_COLOR
    # the middle of edge (tip-1 -> tip) of each finger has that edge's colour
    for e, (a, b) in enumerate(HAND_EDGES):
        if a == 0:
            continue
        mx, my = (hand[a, :2] + hand[b, :2]) / 2
        assert tuple(frame[int(round(my)), int(round(mx))]) == HAND_EDGE_COLORS[e], e
    assert tuple(frame[60, 420]) == FACE_POINT_COLOR
    no_face = next(render_openpose(t, (512, 512), face=False, hands=False))
    assert tuple(no_face[60, 420]) == (0, 0, 0) and tuple(no_face[400, 100]) == (0, 0, 0)


@pytest.mark.parametrize("fit", ["crop", "letterbox"])
def test_any_size_uses_aspect_preserving_framing(fit):
    body = skeleton(lengths(), neck=(256, 140))
    t = track_of([body], 512, 512)
    frame = next(render_openpose(t, (384, 640), fit=fit))
    assert frame.shape == (640, 384, 3)
    fr = Framing.compute((512, 512), (384, 640), fit)
    nx, ny = fr.map_points(body[NECK, :2])
    assert tuple(frame[int(ny), int(nx)]) == BODY_COLORS[NECK]
    # never a stretch: the shoulder span keeps its ratio to the head-neck distance
    sx, sy = fr.scale_xy
    assert sx == pytest.approx(sy, rel=0.01)


def test_sizes_scale_with_resolution():
    t = track_of([skeleton(lengths(2.0), neck=(512, 280))], 1024, 1024)
    big = next(render_openpose(t, (1024, 1024)))
    small = next(render_openpose(t, (512, 512), fit="crop"))
    # nonzero area scales with the square of the resolution (within drawing rounding)
    ratio = (big.any(-1).sum()) / (small.any(-1).sum())
    assert 3.3 < ratio < 4.7


def test_control_frames_sequence_and_iterator():
    from kinemate.pose.render import ControlFrames

    t = track_of([skeleton(lengths(), neck=(200 + 10 * i, 150)) for i in range(3)])
    frames = ControlFrames(t, (256, 320), fit="letterbox")
    listed = list(render_openpose(t, (256, 320), fit="letterbox"))
    assert len(frames) == 3
    for i in range(3):
        np.testing.assert_array_equal(frames[i], listed[i])
    np.testing.assert_array_equal(frames[-1], listed[2])
    assert len(frames[0:2]) == 2
    np.testing.assert_array_equal(next(frames), listed[0])
    np.testing.assert_array_equal(next(frames), listed[1])
    assert not np.array_equal(listed[0], listed[1])
    with pytest.raises(IndexError):
        frames[3]
