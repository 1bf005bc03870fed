"""A driving video without a person must not become a pose track.

The clips are real: a slow pan and zoom over a real photo, darkened to dusk with a bright
lens flare, encoded by ffmpeg. Over the launch pad photo (skimage's ``rocket``, nobody in it)
MediaPipe "finds" a small person among the lights in most frames; before the plausibility
check that track drove the animation. The same treatment of a photo with a person (the
astronaut) must keep every frame.
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


def dusk_pan(photo: np.ndarray, n: int = 30, size: int = 256) -> np.ndarray:
    """``n`` frames panning left to right and zooming in 1.3x over ``photo``, darkened to 40 %
    with a warm tint and a bright flare (a disc with a horizontal streak) drifting across."""
    h, w = photo.shape[:2]
    yy, xx = np.mgrid[0:size, 0:size]
    frames = []
    for i in range(n):
        t = i / max(n - 1, 1)
        side = int(min(w, h) / (1.0 + 0.3 * t))
        x0, y0 = int((w - side) * t), int((h - side) * 0.5 * (1 - t))
        crop = resize(np.ascontiguousarray(photo[y0:y0 + side, x0:x0 + side]), (size, size))
        frame = crop.astype(np.float32) * 0.4 * np.array([1.0, 0.8, 0.7])
        fx, fy = 0.6 * size - 40 * t, 0.3 * size + 10 * t
        disc = np.exp(-((xx - fx) ** 2 + (yy - fy) ** 2) / (0.06 * size) ** 2)
        streak = np.exp(-((yy - fy) ** 2) / 8.0 - ((xx - fx) ** 2) / (0.4 * size) ** 2)
        frame += 255 * disc[..., None] * np.array([1.0, 0.9, 0.7]) + 120 * streak[..., None]
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
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
    # a photo (one frame) needs the size and the neck with three more joints
    photo, _ = keep_plausible_bodies(track_of(bodies[:1]))
    assert photo.present().all()
    headless = track_of(bodies[:1])
    headless.body[0, [0, 1, 2, 5, 14, 15, 16, 17], 2] = 0
    assert not keep_plausible_bodies(headless)[0].present().any()
