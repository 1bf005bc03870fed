"""PoseTrack JSON format and OpenPose JSON import/export (round trips, bad files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from posefixtures import lengths, skeleton, track_of

from kinemate.errors import InputError, NoPersonError
from kinemate.pose import PoseTrack, load_driving_track, load_pose, save_openpose
from kinemate.pose.openpose_json import body25_to_coco18, coco18_to_body25
from kinemate.pose.skeleton import NECK, R_HIP


def _full_track(n: int = 4) -> PoseTrack:
    rng = np.random.default_rng(0)
    t = track_of([skeleton(lengths(), neck=(200 + 5 * i, 150)) for i in range(n)], 512, 384, fps=30)
    t.body[1, 7] = 0  # a missing left wrist
    t.hand_left[:] = np.concatenate([rng.uniform(50, 300, (n, 21, 2)), np.ones((n, 21, 1))], -1)
    t.hand_left[min(2, n - 1)] = 0  # hand not seen in frame 2
    t.face[:] = np.concatenate([rng.uniform(50, 300, (n, 70, 2)), np.full((n, 70, 1), 0.9)], -1)
    t.body[:, :, 2] = np.round(rng.uniform(0.3, 1.0, (n, 18)), 3) * (t.body[:, :, 2] > 0)
    t.confidence = np.linspace(0.2, 0.9, n).astype(np.float32)
    return t


def _assert_same(a: PoseTrack, b: PoseTrack, atol: float = 2e-3) -> None:
    assert len(a) == len(b) and a.size == b.size
    for name in ("body", "hand_left", "hand_right", "face"):
        pa, pb = getattr(a, name), getattr(b, name)
        np.testing.assert_allclose(pa[..., 2], pb[..., 2], atol=atol)
        seen = pa[..., 2] > 0
        np.testing.assert_allclose(pa[seen][:, :2], pb[seen][:, :2], atol=atol)


def test_kinemate_json_round_trip(tmp_path):
    t = _full_track()
    path = t.save(tmp_path / "a.pose.json")
    data = json.loads(path.read_text())
    assert data["format"] == "kinemate.pose" and data["version"] == 1
    assert data["skeleton"]["body"] == "openpose-coco18"
    assert data["image_size"] == [512, 384] and data["fps"] == 30
    assert data["frames"][2]["hand_left"] is None and data["frames"][0]["hand_right"] is None
    assert len(data["frames"][0]["body"]) == 18 and len(data["frames"][0]["face"]) == 70
    back = PoseTrack.load(path)
    _assert_same(t, back)
    np.testing.assert_allclose(back.confidence, t.confidence, atol=1e-3)
    assert back.fps == 30
    assert not list(tmp_path.glob("*kinemate-tmp*"))


@pytest.mark.parametrize("body_format", ["coco18", "body25"])
def test_openpose_single_json_round_trip(tmp_path, body_format):
    t = _full_track()
    path = save_openpose(t, tmp_path / "op.json", body_format=body_format)
    frames = json.loads(path.read_text())
    assert isinstance(frames, list) and len(frames) == 4
    person = frames[0]["people"][0]
    assert len(person["pose_keypoints_2d"]) == (54 if body_format == "coco18" else 75)
    assert len(person["hand_left_keypoints_2d"]) == 63 and person["hand_right_keypoints_2d"] == []
    assert len(person["face_keypoints_2d"]) == 210
    back = load_pose(path, fps=30)
    assert back.meta["imported"] == "openpose"
    _assert_same(t, back)


def test_openpose_folder_round_trip(tmp_path):
    t = _full_track(12)  # more than 10 frames: files must be read in numeric order
    folder = save_openpose(t, tmp_path / "frames", name="dance")
    files = sorted(p.name for p in folder.iterdir())
    assert files[0] == "dance_000000000000_keypoints.json" and len(files) == 12
    back = load_pose(folder)
    _assert_same(t, back)


def test_body25_mapping_and_mid_hip():
    body = skeleton(lengths())
    b25 = coco18_to_body25(body)
    assert b25.shape == (25, 3)
    np.testing.assert_allclose(b25[8, :2], (body[R_HIP, :2] + body[11, :2]) / 2)
    assert (b25[19:, 2] == 0).all()  # feet unknown
    np.testing.assert_array_equal(body25_to_coco18(b25), body)


def test_openpose_normalized_coordinates_and_canvas(tmp_path):
    body = skeleton(lengths(), neck=(320, 120))
    flat = []
    for x, y, c in body:
        flat += [float(x) / 640, float(y) / 480, float(c)]
    (tmp_path / "n.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": flat}],
                                                "canvas_width": 640, "canvas_height": 480}))  # fmt: skip
    t = load_pose(tmp_path / "n.json")
    assert t.size == (640, 480)
    np.testing.assert_allclose(t.body[0, :, :2], body[:, :2], atol=1e-3)


def test_openpose_without_canvas_infers_size(tmp_path):
    body = skeleton(lengths(), neck=(300, 100))
    (tmp_path / "f.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": body.flatten().tolist()}]}))
    t = load_pose(tmp_path / "f.json")
    assert t.meta.get("image_size_inferred")
    assert t.width >= body[:, 0].max() and t.height >= body[:, 1].max()


def test_openpose_several_people_largest_and_leftmost(tmp_path):
    small = skeleton(lengths(0.5), neck=(100, 100))
    big = skeleton(lengths(1.0), neck=(350, 100))
    frames = [
        {"people": [{"pose_keypoints_2d": small.flatten().tolist()},
                    {"pose_keypoints_2d": big.flatten().tolist()}],
         "canvas_width": 512, "canvas_height": 512}
        for _ in range(3)
    ]  # fmt: skip
    (tmp_path / "m.json").write_text(json.dumps(frames))
    largest = load_pose(tmp_path / "m.json")
    np.testing.assert_allclose(largest.body[:, NECK, 0], 350, atol=1e-3)
    leftmost = load_pose(tmp_path / "m.json", select=0)
    np.testing.assert_allclose(leftmost.body[:, NECK, 0], 100, atol=1e-3)


def test_nan_and_garbage_keypoints_become_missing(tmp_path):
    t = _full_track(2)
    data = t.to_dict()
    data["frames"][0]["body"][3] = [float("nan"), 5, 1]
    data["frames"][0]["body"][4] = [1, 2, float("inf")]
    data["frames"][1]["body"][5] = [1, 2, -3]
    text = json.dumps(data)  # Python writes NaN/Infinity literals, as some tools do
    (tmp_path / "nan.json").write_text(text)
    back = load_pose(tmp_path / "nan.json")
    assert back.body[0, 3, 2] == 0 and back.body[0, 4, 2] == 0 and back.body[1, 5, 2] == 0
    assert np.isfinite(back.body).all()


def test_all_nan_pose_file_is_no_person(tmp_path):
    t = _full_track(3)
    data = t.to_dict()
    for f in data["frames"]:
        f["body"] = [[float("nan")] * 3] * 18
    (tmp_path / "allnan.json").write_text(json.dumps(data))
    with pytest.raises(NoPersonError, match="no frame with a person"):
        load_driving_track(tmp_path / "allnan.json")


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ('{"hello": 1}', "neither kinemate pose JSON nor OpenPose"),
        ('{"format": "kinemate.pose", "version": 99, "image_size": [1, 1], "frames": []}', "version"),
        ('{"format": "kinemate.pose", "version": 1, "image_size": [0, 5], "fps": 25, "frames": []}',
         "invalid image_size"),
        ('{"format": "kinemate.pose", "version": 1, "image_size": [9, 9], "frames": [{"body": [[1, 2]]}]}',
         "expected 18 keypoints"),
        ('{"people": [{"pose_keypoints_2d": [1, 2, 3, 4]}]}', "54 \\(COCO-18\\) or 75"),
        ('{"people": [{"pose_keypoints_2d": ["a", "b", "c"]}]}', "54"),
        ("[]", "neither kinemate"),
        ('{"format": "kinemate.pose", "version": 1, "image_size": [100000, 100000], "frames": []}',
         "invalid image_size"),
        ('{"people": [], "canvas_width": 99999999, "canvas_height": 10}', "out of range"),
    ],
)
def test_garbled_files_raise_input_error(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError, match=match):
        load_pose(path)


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_pose(tmp_path / "nope.json")


def test_openpose_missing_neck_is_filled_from_shoulders(tmp_path):
    body = skeleton(lengths(), neck=(256, 150))
    flat = body.copy()
    flat[NECK] = 0
    (tmp_path / "f.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": flat.flatten().tolist()}],
                                                "canvas_width": 512, "canvas_height": 512}))  # fmt: skip
    t = load_pose(tmp_path / "f.json")
    np.testing.assert_allclose(t.body[0, NECK, :2], (body[2, :2] + body[5, :2]) / 2, atol=1e-3)
    assert t.body[0, NECK, 2] > 0


def test_non_finite_arrays_in_memory_become_missing():
    body = skeleton(lengths())
    body[3, 0] = np.nan
    body[4, 2] = np.inf
    z = np.zeros
    t = PoseTrack(body=body[None], hand_left=z((1, 21, 3)), hand_right=z((1, 21, 3)), face=z((1, 70, 3)),
                  width=512, height=512)
    assert t.body[0, 3, 2] == 0 and t.body[0, 4, 2] == 0 and np.isfinite(t.body).all()
