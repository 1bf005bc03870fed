"""The pose branch of ``kinemate animate``: driving video or pose JSON -> extract -> smooth ->
retarget -> OpenPose maps -> the pipeline (the bundled kinemate-tiny model, trained on skeleton
maps, at 64x64 and 1-2 steps; a DensePose model is refused pose control, see
tests/pipeline/test_refusals.py)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as skdata

from kinemate.cli import main
from kinemate.io import probe_video, read_video, resize, write_image, write_video


def _clip(n: int = 3) -> np.ndarray:
    small = resize(skdata.astronaut(), (96, 96))
    frames = np.full((n, 128, 128, 3), 128, np.uint8)
    for i in range(n):
        frames[i, 32:, 6 * i : 6 * i + 96] = small
    return frames


def test_animate_with_pose_control_from_video_and_json(tmp_path, one_thread):
    video = write_video(tmp_path / "dance.mp4", _clip(), 10)
    ref = write_image(tmp_path / "ref.png", skdata.astronaut())
    args = ["animate", "--model", "kinemate-tiny", str(ref)]
    tail = ["--size", "64x64", "--steps", "2", "--context-frames", "4", "--context-overlap", "2",
            "--no-progress"]  # fmt: skip
    rc = main(args + [str(video), "-o", str(tmp_path / "a.mp4"), "--control", "pose",
                      "--grid", str(tmp_path / "grid.mp4")] + tail)  # fmt: skip
    assert rc == 0
    info = probe_video(tmp_path / "a.mp4")
    assert info.num_frames == 3 and (info.width, info.height) == (64, 64) and info.fps == pytest.approx(10)
    grid, _ = read_video(tmp_path / "grid.mp4")
    control = grid[0][:, 64:128]
    assert control.max() > 100 and (control < 30).mean() > 0.5  # a skeleton on black

    # a pose JSON drives it too; with the auto control the JSON selects the pose branch
    assert main(["pose", str(video), "-o", str(tmp_path / "dance.pose.json"), "--quiet"]) == 0
    rc = main(args + [str(tmp_path / "dance.pose.json"), "-o", str(tmp_path / "b.mp4"), "--no-retarget",
                      "--person", "central"] + tail)  # fmt: skip
    assert rc == 0
    assert probe_video(tmp_path / "b.mp4").num_frames == 3


def test_animate_pose_control_without_person_is_one_line_error(tmp_path, one_thread, capsys):
    empty = write_video(tmp_path / "empty.mp4", np.full((2, 64, 64, 3), 90, np.uint8), 10)
    ref = write_image(tmp_path / "ref.png", skdata.astronaut())
    rc = main(["animate", "--model", "kinemate-tiny", str(ref), str(empty),
               "-o", str(tmp_path / "x.mp4"), "--control", "pose", "--size", "64x64", "--steps", "1",
               "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "no person was found" in err and "Traceback" not in err
    assert not list(tmp_path.glob("x*.mp4"))
