"""A real pose estimator (MediaPipe, through kinemate.pose) sees the synthetic people, and
finds their joints where the ground truth says — same keypoint convention, left and right."""

from __future__ import annotations

import numpy as np

from kinemate.synth import generate_clip


def test_mediapipe_finds_synthetic_people_where_ground_truth_says():
    from kinemate.pose.extract import extract_pose

    hits = total = detected = frames = 0
    for seed, motion in ((5001, "walk"), (5004, "disco"), (5006, "punch")):
        clip = generate_clip(seed, 3, 256, motion=motion, skeleton=False, densepose=False)
        track = extract_pose(clip.frames, smooth=False, progress=False, require_person=False,
                             max_people=1)
        gt, pred = clip.pose, track.body
        body_h = np.ptp(gt[..., 1][gt[..., 2] > 0])
        found = (pred[..., 2] > 0.3).sum(-1) >= 6
        detected += int(found.sum())
        frames += len(found)
        both = (gt[..., 2] > 0) & (pred[..., 2] > 0.3) & found[:, None]
        dist = np.linalg.norm(gt[..., :2] - pred[..., :2], axis=-1)
        hits += int((dist[both] < 0.1 * body_h).sum())
        total += int(both.sum())
    assert detected >= 0.75 * frames, f"a person was found in only {detected}/{frames} frames"
    assert total > 0 and hits / total > 0.85, f"PCK@0.1 = {hits}/{total}"
