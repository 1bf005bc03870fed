"""Real pose extraction with MediaPipe on real photos and real (ffmpeg-encoded) videos.

Frames are kept tiny (<= 256 px, a few frames) and one MediaPipe backend is shared by the
whole module, so the file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage import data as skdata

from kinemate.cli import main
from kinemate.errors import NoPersonError, WeightsError
from kinemate.io import read_image, read_video, resize, write_image, write_video
from kinemate.pose import (
    MediaPipeBackend,
    PoseTrack,
    control_frames_from_driving,
    densepose_frames,
    detect_reference_pose,
    extract_pose,
    get_backend,
    load_pose,
    save_openpose,
)
from kinemate.pose.skeleton import (
    BODY_COLORS,
    L_EYE,
    L_HIP,
    L_KNEE,
    L_SHOULDER,
    NECK,
    NOSE,
    R_EYE,
    R_HIP,
    R_KNEE,
    R_SHOULDER,
)


@pytest.fixture(scope="module")
def backend():
    be = MediaPipeBackend(max_people=2, video=True)
    yield be
    be.close()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


def _shifted_clip(image: np.ndarray, n: int, step: int, size: int = 256, scale: int = 200, blank=()) -> np.ndarray:
    """The photo scaled to ``scale`` px, moving right by ``step`` px per frame on a grey canvas;
    frames listed in ``blank`` show no person."""
    small = resize(image, (scale, scale))
    frames = np.full((n, size, size, 3), 128, np.uint8)
    for i in range(n):
        if i in blank:
            continue
        x = 10 + step * i
        frames[i, size - scale :, x : x + scale] = small[:, : size - x][:, :scale]
    return frames


def _check_plausible(body: np.ndarray, w: int, h: int) -> None:
    seen = body[:, 2] > 0
    assert seen[NOSE] and seen[NECK] and seen[R_SHOULDER] and seen[L_SHOULDER]
    assert body[NOSE, 1] < body[NECK, 1]  # nose above the neck
    assert body[R_SHOULDER, 0] < body[L_SHOULDER, 0]  # front-facing: person's right on the image left
    if seen[R_EYE] and seen[L_EYE]:
        assert body[R_EYE, 0] < body[L_EYE, 0]
        assert max(body[R_EYE, 1], body[L_EYE, 1]) < body[NECK, 1]
    for hip in (R_HIP, L_HIP):
        if seen[hip]:
            assert body[NOSE, 1] < body[hip, 1] and body[NECK, 1] < body[hip, 1]
    xy = body[seen, :2]
    assert (xy[:, 0] >= -0.02 * w).all() and (xy[:, 0] <= 1.02 * w).all()
    assert (xy[:, 1] >= -0.02 * h).all() and (xy[:, 1] <= 1.02 * h).all()


def test_astronaut_photo(backend, astronaut):
    ref = detect_reference_pose(astronaut, backend=backend)
    body = ref.body[0]
    _check_plausible(body, 512, 512)
    face = ref.face[0]
    assert (face[:, 2] > 0).all()
    assert face[0, 0] < face[16, 0]  # jaw runs from the person's right to their left
    assert face[8, 1] > face[30, 1] > face[27, 1]  # chin below nose tip below nose bridge
    assert face[68, 0] < face[69, 0]  # right pupil left of left pupil
    assert abs(face[30, 0] - body[NOSE, 0]) < 15 and abs(face[30, 1] - body[NOSE, 1]) < 15


@pytest.mark.parametrize("name", ["monalisa.png", "demo4.png", "dalle2.jpeg"])
def test_demo_reference_photos(backend, demo_inputs, name):
    image = read_image(demo_inputs / name)
    ref = detect_reference_pose(image, backend=backend)
    _check_plausible(ref.body[0], image.shape[1], image.shape[0])
    if name == "demo4.png":  # a standing photo down to the thighs: hips seen, below shoulders
        body = ref.body[0]
        assert (body[[R_HIP, L_HIP], 2] > 0).all()
        assert body[R_HIP, 1] > body[R_SHOULDER, 1] + 50 and body[R_HIP, 0] < body[L_HIP, 0]
        for knee, hip in ((R_KNEE, R_HIP), (L_KNEE, L_HIP)):
            if body[knee, 2] > 0:
                assert body[knee, 1] > body[hip, 1]
        # both hands on the hips: each hand's wrist sits on the body's wrist of the same side
        for hand, wrist in ((ref.hand_left[0], 7), (ref.hand_right[0], 4)):
            assert (hand[:, 2] > 0).all()
            assert np.hypot(*(hand[0, :2] - body[wrist, :2])) < 40


def test_two_people_choose_by_rule(backend, demo_inputs):
    image = read_image(demo_inputs / "multi1_source.png")
    cands = backend.detect(image)
    backend.reset()
    assert len(cands) == 2
    left = detect_reference_pose(image, backend=backend, select=0)
    right = detect_reference_pose(image, backend=backend, select=1)
    assert left.body[0, NECK, 0] < image.shape[1] / 2 < right.body[0, NECK, 0]
    # retargeting onto the chosen person of a two-person reference
    from kinemate.pose.control import prepare_controls_track

    drv = detect_reference_pose(skdata.astronaut(), backend=backend)
    on_right = prepare_controls_track(drv, image, backend=backend, select=1)
    assert on_right.body[0, NECK, 0] == pytest.approx(right.body[0, NECK, 0], abs=1)


def test_two_people_in_a_video_are_followed_by_rule(backend, demo_inputs, tmp_path):
    image = resize(read_image(demo_inputs / "multi1_source.png"), (256, 256))
    clip = np.stack([np.roll(image, 4 * i, axis=1) for i in range(3)])
    path = write_video(tmp_path / "two.mp4", clip, 10)
    left = extract_pose(path, backend=backend, select=0, smooth=False, progress=False)
    right = extract_pose(path, backend=backend, select=1, smooth=False, progress=False)
    assert left.present().all() and right.present().all()
    assert (left.body[:, NECK, 0] < 128).all() and (right.body[:, NECK, 0] > 128).all()
    assert (np.diff(left.body[:, NECK, 0]) > 0).all() and (np.diff(right.body[:, NECK, 0]) > 0).all()


def test_accuracy_on_synthetic_people_with_ground_truth(backend):
    """MediaPipe against the exact keypoints of procedurally rendered people (kinemate.synth).
    Not every synthetic person is found (small people on busy backgrounds can be missed), so
    the test asks that most clips are, and that found keypoints are accurate."""
    from kinemate.synth import generate_clip

    errs, pcks, found_clips = [], [], 0
    for seed in range(4):
        clip = generate_clip(seed, 3, (256, 256), skeleton=False, densepose=False)
        track = extract_pose(clip.frames, backend=backend, smooth=False, progress=False, require_person=False)
        if not track.present().all():
            continue
        found_clips += 1
        gt = clip.pose  # exact COCO-18 keypoints of the rendered person
        both = (track.body[..., 2] > 0) & (gt[..., 2] > 0.5)
        assert both.sum() >= 0.6 * (gt[..., 2] > 0.5).sum()
        err = np.linalg.norm(track.body[..., :2] - gt[..., :2], axis=-1)[both]
        height = float(np.ptp(gt[gt[..., 2] > 0.5][:, 1]))
        errs.append(np.median(err) / height)
        pcks.append(float((err < 0.1 * height).mean()))  # PCK@0.1 of the person's height
    assert found_clips >= 2
    assert max(errs) < 0.05 and min(pcks) > 0.8, (errs, pcks)


def test_video_track_follows_the_motion(backend, astronaut, tmp_path):
    clip = _shifted_clip(astronaut, 6, 8)
    path = write_video(tmp_path / "moving.mp4", clip, 10)
    track = extract_pose(path, backend=backend, smooth=False, progress=False)
    assert len(track) == 6 and track.size == (256, 256) and track.fps == pytest.approx(10)
    assert track.present().all()
    neck = track.body[:, NECK, 0]
    steps = np.diff(neck)
    assert (steps > 3).all() and (steps < 13).all()  # 8 px per frame
    assert neck[-1] - neck[0] == pytest.approx(40, abs=8)
    for t in range(6):
        _check_plausible(track.body[t], 256, 256)


def test_body_only_backend(astronaut):
    be = MediaPipeBackend(max_people=1, video=False, hands=False, face=False)
    try:
        track = extract_pose(astronaut, backend=be, progress=False)
    finally:
        be.close()
    _check_plausible(track.body[0], 512, 512)
    assert not (track.face[..., 2] > 0).any() and not (track.hand_left[..., 2] > 0).any()


def test_parallel_workers_match_one_worker(backend, astronaut, tmp_path):
    clip = _shifted_clip(astronaut, 6, 8)
    path = write_video(tmp_path / "moving.mp4", clip, 10)
    one = extract_pose(path, backend=backend, smooth=False, progress=False)
    two = extract_pose(path, workers=2, max_people=1, smooth=False, progress=False)
    assert len(two) == 6 and two.present().all() and two.fps == pytest.approx(10)
    np.testing.assert_allclose(two.body[:, NECK, :2], one.body[:, NECK, :2], atol=4)
    limited = extract_pose(path, workers=2, max_people=1, smooth=False, progress=False, max_frames=3)
    assert len(limited) == 3


def test_one_frame_video_and_photo_input(backend, astronaut, tmp_path):
    clip = _shifted_clip(astronaut, 1, 0)
    path = write_video(tmp_path / "one.mp4", clip, 25)
    track = extract_pose(path, backend=backend, progress=False)
    assert len(track) == 1 and track.present()[0]
    photo = write_image(tmp_path / "a.png", clip[0])
    frames, fps, n = control_frames_from_driving(photo, astronaut, (128, 128), backend=backend, progress=False)
    frames = list(frames)
    assert n == 1 and len(frames) == 1 and frames[0].shape == (128, 128, 3) and frames[0].any()
    # a folder of frames is a video too
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(_shifted_clip(astronaut, 2, 8)):
        write_image(folder / f"{i:03d}.png", frame)
    track = extract_pose(folder, backend=backend, progress=False, fps=12)
    assert len(track) == 2 and track.fps == 12 and track.present().all()


def test_no_person_in_video_or_reference(backend, tmp_path):
    rng = np.random.default_rng(0)
    empty = rng.integers(100, 140, (3, 128, 128, 3), dtype=np.uint8)
    path = write_video(tmp_path / "empty.mp4", empty, 25)
    with pytest.raises(NoPersonError, match="no person was found"):
        extract_pose(path, backend=backend, progress=False)
    with pytest.raises(NoPersonError, match="reference photo"):
        detect_reference_pose(empty[0], backend=backend)


def test_person_leaving_the_frame_is_held(backend, astronaut, tmp_path):
    clip = _shifted_clip(astronaut, 8, 4, blank=(5, 6, 7))
    path = write_video(tmp_path / "leaves.mp4", clip, 10)
    out: dict[str, PoseTrack] = {}
    frames, fps, n = control_frames_from_driving(
        path, astronaut, (192, 256), backend=backend, progress=False, track_out=out
    )
    frames = list(frames)
    assert n == 8 and len(frames) == 8 and all(f.shape == (256, 192, 3) for f in frames)
    assert out["driving"].present().tolist() == [True] * 5 + [False] * 3
    assert all(f.any() for f in frames)  # never a blank control map
    np.testing.assert_array_equal(frames[7], frames[4])  # held still after leaving
    assert out["controls"].meta["retargeted"]


def test_controls_from_video_json_and_openpose_agree(backend, astronaut, tmp_path):
    clip = _shifted_clip(astronaut, 4, 6)
    path = write_video(tmp_path / "clip.mp4", clip, 10)
    ref = detect_reference_pose(astronaut, backend=backend)
    out: dict[str, PoseTrack] = {}
    a, fps, n = control_frames_from_driving(path, astronaut, (256, 256), backend=backend, progress=False,
                                            reference_pose=ref, track_out=out)  # fmt: skip
    a = list(a)
    out["driving"].save(tmp_path / "clip.pose.json")
    b, _, _ = control_frames_from_driving(tmp_path / "clip.pose.json", astronaut, (256, 256), reference_pose=ref)
    save_openpose(out["driving"], tmp_path / "op")
    c, _, _ = control_frames_from_driving(tmp_path / "op", astronaut, (256, 256), reference_pose=ref, smooth=False)
    b, c = list(b), list(c)
    assert len(a) == len(b) == len(c) == 4 and fps == pytest.approx(10)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.mean(np.abs(a[0].astype(int) - c[0].astype(int)) > 0) < 0.02
    # retargeted onto the 512 px astronaut, framed to 256: in the frame closest to the
    # reference's pose (all are: the clip only shifts the photo) the neck lands on the reference neck
    nx, ny = (ref.body[0, NECK, :2] / 2).astype(int)
    anchor = out["controls"].meta["retargeted"]["anchor_frame"]
    assert tuple(a[anchor][ny, nx]) == BODY_COLORS[NECK]
    # without retargeting the driving neck position is used instead
    d, _, _ = control_frames_from_driving(tmp_path / "clip.pose.json", astronaut, (256, 256), retarget=False)
    dx, dy = out["driving"].body[0, NECK, :2].astype(int)
    assert tuple(next(d)[dy, dx]) == BODY_COLORS[NECK]


def test_cli_pose_end_to_end(astronaut, tmp_path, capsys):
    clip = _shifted_clip(astronaut, 3, 6, size=192, scale=160)
    video = write_video(tmp_path / "dance.mp4", clip, 10)
    ref = write_image(tmp_path / "ref.png", resize(astronaut, (256, 256)))
    rc = main(["pose", str(video), "-o", str(tmp_path / "dance.pose.json"), "--preview",
               str(tmp_path / "overlay.mp4"), "--quiet"])  # fmt: skip
    assert rc == 0
    assert "3 frames (3 with a person" in capsys.readouterr().out
    track = load_pose(tmp_path / "dance.pose.json")
    assert len(track) == 3 and track.size == (192, 192)
    preview, _ = read_video(tmp_path / "overlay.mp4")
    assert preview.shape == (3, 192, 192, 3)
    rc = main(["pose", str(tmp_path / "dance.pose.json"), "-o", str(tmp_path / "rt.json"), "--reference", str(ref),
               "--controls", str(tmp_path / "controls.mp4"), "--size", "128x192", "--preview",
               str(tmp_path / "on_ref.png")])  # fmt: skip
    assert rc == 0
    assert "retargeted (mean confidence 0." in capsys.readouterr().out
    rt = load_pose(tmp_path / "rt.json")
    assert rt.meta["retargeted"] and rt.size == (256, 256)
    controls, _ = read_video(tmp_path / "controls.mp4")
    assert controls.shape == (3, 192, 128, 3)
    assert read_image(tmp_path / "on_ref.png").shape == (256, 256, 3)
    rc = main(["pose", str(tmp_path / "dance.pose.json"), "-o", str(tmp_path / "op"), "--format", "openpose-body25"])
    assert rc == 0
    first = json.loads(sorted((tmp_path / "op").glob("*.json"))[0].read_text())
    assert len(first["people"][0]["pose_keypoints_2d"]) == 75


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    rc = main(["pose", str(bad), "-o", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 1 and "not valid JSON" in err and "Traceback" not in err
    assert main(["pose", str(bad), "-o", str(tmp_path / "x.json"), "--person", "tallest"]) == 2


def test_dwpose_backend_says_which_files_to_put_where(tmp_path):
    with pytest.raises(WeightsError, match="yolox_l.onnx.*dw-ll_ucoco_384.onnx") as info:
        get_backend("dwpose", model_dir=tmp_path)
    assert str(tmp_path) in str(info.value) and "mediapipe" in str(info.value)


def test_densepose_passthrough_keeps_aspect_and_labels(demo_inputs):
    frames, fps, n = densepose_frames(demo_inputs / "demo4_densepose.mp4", (192, 256), fit="letterbox", max_frames=2)
    frames = list(frames)
    assert len(frames) == 2 and frames[0].shape == (256, 192, 3) and fps == pytest.approx(25)
    # letterbox of a square video into 192x256: black bars top and bottom, content in the middle
    assert not frames[0][:30].any() and not frames[0][-30:].any() and frames[0][40:216].any()
