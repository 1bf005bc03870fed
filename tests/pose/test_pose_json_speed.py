"""Pose JSON parsing: linear work in the number of frames, and a frame limit checked before
any frame is parsed (a 60 KB file of 20,000 empty frames took 55 s when presence was
recomputed over the whole track for every frame). Timings: benchmarks/bench_pose_json.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kinemate.errors import InputError
from kinemate.pose import PoseTrack, load_pose
from kinemate.pose.track import TooManyFrames


def _kinemate_json(frames: list) -> dict:
    return {"format": "kinemate.pose", "version": 1, "image_size": [64, 64], "fps": 25,
            "frames": frames}


def test_parsing_examines_each_frame_a_bounded_number_of_times(monkeypatch):
    """Every call of ``present`` looks at all the frames of the track it is called on; the
    frames looked at over one parse must stay proportional to the frames parsed."""
    examined = []
    original = PoseTrack.present

    def counting_present(self, min_conf: float = 0.0):
        examined.append(len(self))
        return original(self, min_conf)

    monkeypatch.setattr(PoseTrack, "present", counting_present)
    n = 2000
    track = PoseTrack.from_dict(_kinemate_json([{}] * n))
    assert len(track) == n and not track.confidence.any()
    assert sum(examined) <= 2 * n, f"{sum(examined)} frame looks for {n} frames"


def test_confidence_from_the_file_or_from_the_keypoints():
    body = [[10.0, 10.0, 0.9], [20.0, 20.0, 0.8]] + [[0, 0, 0]] * 16
    frames = [{"body": body}, {"body": body, "confidence": 0.25}, {}, {"confidence": "x"}]
    track = PoseTrack.from_dict(_kinemate_json(frames))
    np.testing.assert_array_equal(track.confidence, np.float32([1.0, 0.25, 0.0, 0.0]))


def test_the_frame_limit_is_checked_before_the_frames(tmp_path):
    # Frame 0 is malformed: an error about it would mean frames were parsed before the limit.
    frames = ["not a frame"] * 11
    with pytest.raises(InputError, match="frame 0 is not an object"):
        PoseTrack.from_dict(_kinemate_json(frames))
    with pytest.raises(TooManyFrames, match="11 frames, above the limit of 10") as info:
        PoseTrack.from_dict(_kinemate_json(frames), max_frames=10)
    assert (info.value.frames, info.value.limit) == (11, 10)

    path = tmp_path / "track.json"
    path.write_text(json.dumps(_kinemate_json(frames)))
    with pytest.raises(TooManyFrames):
        load_pose(path, max_frames=10)
    path.write_text(json.dumps(_kinemate_json([{}] * 10)))
    assert len(load_pose(path, max_frames=10)) == 10  # at the limit: accepted


def test_openpose_frame_limit_before_parsing(tmp_path):
    bad = {"people": "not a list"}
    array = tmp_path / "array.json"
    array.write_text(json.dumps([bad] * 11))
    with pytest.raises(InputError, match="frame 0 has no 'people' list"):
        load_pose(array)
    with pytest.raises(TooManyFrames, match="11 frames"):
        load_pose(array, max_frames=10)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(11):
        (folder / f"f_{i:03d}_keypoints.json").write_text(json.dumps(bad))
    with pytest.raises(TooManyFrames, match="11 frames"):
        load_pose(folder, max_frames=10)
