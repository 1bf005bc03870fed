"""A driving video without a person must not become a pose track.

The clips are real: a slow pan and zoom over a real picture, darkened to dusk with a bright
lens flare, encoded by ffmpeg. Over the launch pad photo (skimage's ``rocket``, nobody in it)
MediaPipe "finds" a small person among the lights in most frames, and over skimage's logo a
steady head and shoulders without a face; before the plausibility check those tracks drove
the animation. The same treatment of a photo with a person (the astronaut) keeps every frame.
"""

from __future__ import annotations

import numpy as np
import pytest
from posefixtures import lengths, skeleton, track_of
from skimage import data as skdata

from kinemate.cli import main
from kinemate.errors import NoPersonError
from kinemate.io import resize, write_video
from kinemate.pose import MediaPipeBackend, extract_pose
from kinemate.pose.temporal import MIN_RUN, keep_plausible_bodies


def dusk_pan(photo: np.ndarray, n: int = 30, size: int = 256, *, dark: float = 0.4,
             flare_xy=(0.6, 0.3), radius: float = 0.06, zoom: float = 1.3, drift: float = 40,
             reverse: bool = False, ring: bool = False) -> np.ndarray:
    """``n`` frames panning across ``photo`` (left to right, or back) and zooming in ``zoom``x,
    darkened to ``dark`` with a warm tint, and a bright lens flare (a disc of ``radius``, a
    horizontal streak, optionally a ghost ring) drifting ``drift`` px across."""
    h, w = photo.shape[:2]
    yy, xx = np.mgrid[0:size, 0:size]
    frames = []
    for i in range(n):
        t = i / max(n - 1, 1)
        side = int(min(w, h) / (1.0 + (zoom - 1) * t))
        x0, y0 = int((w - side) * ((1 - t) if reverse else t)), int((h - side) * 0.5 * (1 - t))
        crop = resize(np.ascontiguousarray(photo[y0:y0 + side, x0:x0 + side]), (size, size))
        frame = crop.astype(np.float32) * dark * np.array([1.0, 0.8, 0.7] if not ring
                                                          else [1.0, 0.85, 0.7])
        fx, fy = flare_xy[0] * size - drift * t, flare_xy[1] * size + 10 * t
        rr = np.hypot(xx - fx, yy - fy)
        if ring:
            frame += 255 * np.exp(-(rr / (radius * size)) ** 2)[..., None]
            ghost = np.exp(-((rr - 2.5 * radius * size) / (0.3 * radius * size)) ** 2)
            frame += 80 * ghost[..., None] * np.array([0.6, 0.8, 1])
            streak = 110 * np.exp(-((yy - fy) ** 2) / 8.0 - ((xx - fx) ** 2) / (0.4 * size) ** 2)
        else:
            disc = np.exp(-(rr ** 2) / (radius * size) ** 2)
            frame += 255 * disc[..., None] * np.array([1.0, 0.9, 0.7])
            streak = 120 * np.exp(-((yy - fy) ** 2) / 8.0 - ((xx - fx) ** 2) / (0.4 * size) ** 2)
        frames.append(np.clip(frame + streak[..., None], 0, 255).astype(np.uint8))
    return np.stack(frames)


@pytest.fixture(scope="module")
def backend():
    be = MediaPipeBackend(max_people=2, video=True)
    yield be
    be.close()


def test_a_flare_over_a_photo_without_people_is_not_a_person(backend, tmp_path, capsys):
    clip = write_video(tmp_path / "dusk.mp4", dusk_pan(skdata.rocket()), 25)
    raw = extract_pose(clip, backend=backend, smooth=False, progress=False, require_person=False)
    assert raw.present(0.25).sum() >= 10  # what the estimator "finds" (19 of 30 frames)
    with pytest.raises(NoPersonError, match="not a plausible person") as err:
        extract_pose(clip, backend=backend, progress=False)
    assert "30 frame(s)" in str(err.value) and "smaller than" in str(err.value)
    # the command line says so in one line and writes nothing
    out = tmp_path / "dusk.pose.json"
    assert main(["pose", str(clip), "-o", str(out), "--quiet"]) == 1
    message = capsys.readouterr().err
    assert "no person was found" in message and "Traceback" not in message
    assert not out.exists()


def test_a_steady_shape_without_a_face_is_not_a_person(backend, tmp_path):
    """Over scikit-image's logo MediaPipe follows a head-and-shoulders "person" whose bones keep
    their lengths; no face is ever found there, and no more of a body (arms, hips, legs)."""
    logo = np.ascontiguousarray(skdata.logo()[..., :3])
    frames = dusk_pan(logo, dark=0.355, flare_xy=(0.728, 0.438), radius=0.11, zoom=1.265,
                      drift=45, ring=True)
    clip = write_video(tmp_path / "logo.mp4", frames, 25)
    raw = extract_pose(clip, backend=backend, smooth=False, progress=False, require_person=False)
    assert raw.present(0.25).sum() >= 10  # 19 of 30 frames
    assert keep_plausible_bodies(raw)[1]["kept"] > 0  # size and consistency alone pass it
    with pytest.raises(NoPersonError, match="no face, and too little of a body"):
        extract_pose(clip, backend=backend, progress=False)


def test_a_person_in_the_same_dusk_pan_keeps_every_frame(backend, tmp_path):
    clip = write_video(tmp_path / "dusk.mp4", dusk_pan(skdata.astronaut()), 25)
    track = extract_pose(clip, backend=backend, smooth=False, progress=False)
    assert track.present(0.25).all()


def _walk(n: int, jitter: float = 0.0, scale: float = 1.0, seed: int = 0) -> list[np.ndarray]:
    """A standing skeleton whose arms swing (real motion: bone lengths kept); ``jitter``
    rescales every bone by a random factor in [1 - jitter, 1 + jitter] in every frame."""
    rng = np.random.default_rng(seed)
    bodies = []
    for i in range(n):
        swing = 20 * np.sin(i / 3)
        size = {k: v * (1 + rng.uniform(-jitter, jitter)) for k, v in lengths(scale).items()}
        bodies.append(skeleton(size, angles={3: 100 + swing, 6: 80 - swing}))
    return bodies


def test_plausible_bodies_rule_on_known_skeletons():
    real, report = keep_plausible_bodies(track_of(_walk(12)))
    assert real.present().all() and report["kept"] == 12
    # a body whose bones change length by up to 60 % from frame to frame
    shapeless, report = keep_plausible_bodies(track_of(_walk(12, jitter=0.6)))
    assert not shapeless.present().any() and report["inconsistent"] == 12
    # a consistent but tiny body (a tenth of the real one, ~40 px on 512)
    tiny, report = keep_plausible_bodies(track_of(_walk(12, scale=0.1, seed=1)))
    assert not tiny.present().any() and report["small"] == 12
    # a blip of two frames in a long clip is dropped; a person across a short gap is kept
    bodies = _walk(20)
    blip = track_of(bodies)
    blip.body[2:20] = 0
    kept, report = keep_plausible_bodies(blip)
    assert not kept.present().any() and report["short"] == 2 and MIN_RUN == 3
    gap = track_of(bodies)
    gap.body[8:10] = 0
    kept, report = keep_plausible_bodies(gap)
    assert kept.present().sum() == 18 and report["kept"] == 18
    # when faces were looked for: a face, or more than a head and shoulders (turned away)
    upper = track_of(_walk(12))
    upper.body[:, 8:14] = 0  # no hips or legs: head, shoulders and arms
    assert keep_plausible_bodies(upper, faces=True)[1]["faceless"] == 12
    upper.face[:4, :, :] = (250, 100, 1.0)  # a face in a third of the frames
    assert keep_plausible_bodies(upper, faces=True)[1]["kept"] == 12
    assert keep_plausible_bodies(track_of(_walk(12)), faces=True)[1]["kept"] == 12  # whole body
    # a photo (one frame) needs the size and the neck with three more joints
    photo, _ = keep_plausible_bodies(track_of(bodies[:1]))
    assert photo.present().all()
    headless = track_of(bodies[:1])
    headless.body[0, [0, 1, 2, 5, 14, 15, 16, 17], 2] = 0
    assert not keep_plausible_bodies(headless)[0].present().any()
