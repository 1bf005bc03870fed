"""Temporal clean-up: gating, gap filling, holding, One-Euro smoothing, person following."""

from __future__ import annotations

import numpy as np
from posefixtures import lengths, skeleton, track_of

from kinemate.pose import fill_gaps, hold_person, one_euro, smooth_track
from kinemate.pose.people import follow_person
from kinemate.pose.skeleton import L_WRIST, NECK
from kinemate.pose.temporal import gate_confidence


def _walk(n: int, speed: float = 4.0):
    return track_of([skeleton(lengths(), neck=(150 + speed * i, 150)) for i in range(n)])


def test_gate_confidence_drops_low_joints():
    t = _walk(3)
    t.body[1, L_WRIST, 2] = 0.1
    g = gate_confidence(t, 0.25)
    assert g.body[1, L_WRIST, 2] == 0 and g.body[0, L_WRIST, 2] == 1.0
    assert t.body[1, L_WRIST, 2] > 0  # input unchanged


def test_fill_short_gap_linearly_but_not_long_ones():
    t = _walk(20)
    truth = t.body.copy()
    t.body[5:8, L_WRIST] = 0  # 3-frame gap: filled
    t.body[10:19, NECK] = 0  # 9-frame gap: left alone
    f = fill_gaps(t, max_gap=5)
    np.testing.assert_allclose(f.body[5:8, L_WRIST, :2], truth[5:8, L_WRIST, :2], atol=1e-3)
    assert (f.body[5:8, L_WRIST, 2] > 0).all()
    assert (f.body[10:19, NECK, 2] == 0).all()


def test_hold_person_when_they_leave_and_before_they_enter():
    t = _walk(10)
    t.body[:2] = 0  # not yet in the picture
    t.body[6:] = 0  # left the picture
    held = hold_person(t)
    assert held.present().all()
    np.testing.assert_array_equal(held.body[0], t.body[2])
    np.testing.assert_array_equal(held.body[9], t.body[5])
    assert held.confidence[9] < t.confidence[5]
    limited = hold_person(t, max_hold=2)
    assert limited.present().tolist() == [True] * 8 + [False] * 2


def test_one_euro_removes_jitter_at_rest_with_little_lag_in_motion():
    rng = np.random.default_rng(1)
    n = 60
    still, moving = _walk(n, speed=0.0), _walk(n, speed=6.0)
    truth_still, truth_moving = still.body.copy(), moving.body.copy()
    for t in (still, moving):
        t.body[:, :, :2] += rng.normal(0, 1.5, (n, 18, 2)).astype(np.float32)
    s = one_euro(still)
    err_raw = np.abs(still.body[10:, :, :2] - truth_still[10:, :, :2]).mean()
    err_smooth = np.abs(s.body[10:, :, :2] - truth_still[10:, :, :2]).mean()
    assert err_smooth < 0.55 * err_raw
    m = one_euro(moving)
    lag = (truth_moving[10:, :, 0] - m.body[10:, :, 0]).mean()  # 6 px/frame to the right
    assert 0 < lag < 4.0
    assert m.body[-1, NECK, 0] - m.body[0, NECK, 0] > 0.9 * 6 * (n - 1)


def test_smooth_track_runs_both_ways_without_lag():
    """The forward One-Euro pass lags a steady motion; the backward pass over its result
    cancels that (no mean lag) and leaves less jitter than the forward pass alone."""
    rng = np.random.default_rng(2)
    n = 60
    moving = _walk(n, speed=3.0)
    truth = moving.body.copy()
    moving.body[:, :, :2] += rng.normal(0, 1.5, (n, 18, 2)).astype(np.float32)
    fwd = smooth_track(moving, zero_phase=False)
    both = smooth_track(moving)
    assert both.meta["processing"]["one_euro"]["zero_phase"]
    mid = slice(10, n - 10)
    lag_fwd = (truth[mid, :, 0] - fwd.body[mid, :, 0]).mean()
    lag_both = (truth[mid, :, 0] - both.body[mid, :, 0]).mean()
    assert lag_fwd > 0.3 and abs(lag_both) < 0.5 * lag_fwd
    err_fwd = np.abs(fwd.body[mid, :, :2] - truth[mid, :, :2] - [-lag_fwd, 0]).mean()
    err_both = np.abs(both.body[mid, :, :2] - truth[mid, :, :2]).mean()
    assert err_both < err_fwd


def test_one_euro_restarts_after_missing_joint():
    t = _walk(10)
    t.body[4:6, L_WRIST] = 0
    t.body[6:, L_WRIST, 0] += 200  # reappears far away
    s = one_euro(t)
    # no smear from the old position: the first frame back is exactly the measurement
    assert abs(s.body[6, L_WRIST, 0] - t.body[6, L_WRIST, 0]) < 1e-3
    assert (s.body[4:6, L_WRIST, 2] == 0).all()


def test_smooth_track_on_single_frame():
    t = _walk(1)
    s = smooth_track(t)
    np.testing.assert_allclose(s.body, t.body)


def test_follow_person_keeps_identity_when_order_flips():
    a = [{"body": skeleton(lengths(1.0), neck=(100 + 3 * i, 150))} for i in range(6)]
    b = [{"body": skeleton(lengths(0.8), neck=(400 - 3 * i, 150))} for i in range(6)]
    frames = [[a[i], b[i]] if i % 2 == 0 else [b[i], a[i]] for i in range(6)]
    chosen = follow_person(frames, (512, 512), "largest")
    xs = [c["body"][NECK, 0] for c in chosen]
    np.testing.assert_allclose(xs, [100 + 3 * i for i in range(6)])
    central = follow_person(frames, (512, 512), "central")
    assert central[0]["body"][NECK, 0] == 400  # 400 is nearer the centre line than 100
    # the person missing for a frame is picked up again
    frames[3] = [b[3]]
    chosen = follow_person(frames, (512, 512), "largest")
    assert chosen[3] is None and chosen[4]["body"][NECK, 0] == 112


def test_sudden_left_right_swaps_are_undone_but_turns_are_not():
    from kinemate.pose.temporal import fix_left_right_swaps

    t = _walk(8, speed=2.0)
    truth = t.body.copy()
    legs = [8, 9, 10, 11, 12, 13]
    swapped = [11, 12, 13, 8, 9, 10]
    t.body[3:5, legs] = truth[3:5, swapped]  # the legs trade labels for two frames
    t.hand_right[:, :, 2] = 1.0
    fixed = fix_left_right_swaps(t)
    np.testing.assert_allclose(fixed.body, truth)
    assert (fixed.hand_right[..., 2] == 1).all()  # arms were not touched: hands stay
    # the first frame was the wrong one: the majority labelling wins
    t2 = _walk(6, speed=2.0)
    t2.body[0, legs] = truth[0, swapped]
    np.testing.assert_allclose(fix_left_right_swaps(t2).body, truth[:6])
    # a person turning around: shoulders cross over gradually, nothing is swapped
    turn = _walk(12, speed=0.0)
    for i in range(12):
        f = np.cos(np.pi * i / 11)  # +1 -> -1: right shoulder moves from left to right
        for r, l in ((2, 5), (3, 6), (4, 7)):
            mid = (turn.body[i, r, 0] + turn.body[i, l, 0]) / 2
            half = (turn.body[i, l, 0] - turn.body[i, r, 0]) / 2
            turn.body[i, r, 0], turn.body[i, l, 0] = mid - f * half, mid + f * half
    np.testing.assert_allclose(fix_left_right_swaps(turn).body, turn.body)


def test_person_number_past_the_last_is_the_rightmost():
    from kinemate.pose.people import rank_candidates

    a = {"body": skeleton(lengths(), neck=(100, 150))}
    b = {"body": skeleton(lengths(), neck=(400, 150))}
    assert rank_candidates([b, a], (512, 512), 0)[0] == 1
    assert rank_candidates([b, a], (512, 512), 5)[0] == 0
    assert rank_candidates([], (512, 512), 1) == []
