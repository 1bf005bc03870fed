"""Every picture kinemate writes carries its marks: `kinemate pose` previews and control maps
(they carried none), and the `--grid` video of `kinemate animate`, whose mark was unreadable
even as written; `verify` reads it in the grid's result panel.

Real runs of the CLI: MediaPipe pose estimation, the bundled model, ffmpeg, c2pa.
"""

from __future__ import annotations

import numpy as np
import pytest

from kinemate.cli import main
from kinemate.io import read_image, resize, write_image, write_video
from kinemate.provenance import verify
from kinemate.provenance.marker import POSE_MODEL


@pytest.fixture(scope="module")
def dance(tmp_path_factory):
    """A short clip of a real person (the astronaut photo, moving) and a reference photo."""
    from skimage import data

    folder = tmp_path_factory.mktemp("dance")
    photo = data.astronaut()
    frames = []
    for i in range(6):
        canvas = np.full((256, 256, 3), 90, np.uint8)
        small = resize(photo, (200, 200))
        canvas[30:230, 20 + 4 * i: 220 + 4 * i] = small
        frames.append(canvas)
    return {"video": write_video(folder / "dance.mp4", frames, 10),
            "reference": write_image(folder / "ref.png", resize(photo, (256, 256)))}


def _assert_marked(path, model=POSE_MODEL):
    report = verify(path)
    assert report.watermark.payload is not None, (path, report.to_dict()["watermark"])
    assert report.model == model
    assert report.manifest.valid and report.manifest.by_kinemate
    assert report.manifest.kinemate["model"] == model
    assert report.manifest.kinemate["watermark"] is True
    return report


def test_pose_previews_and_controls_are_marked(dance, tmp_path, capsys):
    out = tmp_path
    assert main(["pose", str(dance["video"]), "-o", str(out / "d.json"), "--preview",
                 str(out / "overlay.mp4"), "--controls", str(out / "controls.mp4"),
                 "--quiet"]) == 0
    _assert_marked(out / "overlay.mp4")
    _assert_marked(out / "controls.mp4")  # skeletons on black carry it too
    assert main(["pose", str(out / "d.json"), "-o", str(out / "rt.json"), "--reference",
                 str(dance["reference"]), "--preview", str(out / "on_ref.png"), "--controls",
                 str(out / "rt_controls.gif")]) == 0
    _assert_marked(out / "on_ref.png")
    _assert_marked(out / "rt_controls.gif")
    assert read_image(out / "on_ref.png").shape == (256, 256, 3)
    # a pose file's own preview (skeletons drawn from the JSON)
    assert main(["pose", str(out / "d.json"), "-o", str(out / "copy.json"), "--preview",
                 str(out / "skeleton.mp4")]) == 0
    _assert_marked(out / "skeleton.mp4")
    assert not any("kinemate-tmp" in p.name for p in out.iterdir())


def test_pose_no_watermark_is_recorded(dance, tmp_path):
    assert main(["pose", str(dance["video"]), "-o", str(tmp_path / "d.json"), "--preview",
                 str(tmp_path / "overlay.mp4"), "--no-watermark", "--quiet"]) == 0
    report = verify(tmp_path / "overlay.mp4")
    assert report.watermark.payload is None and not report.watermark.detected
    assert report.manifest.valid and report.manifest.kinemate["watermark"] is False


def test_grid_result_panel_carries_the_outputs_mark(demo_inputs, tmp_path, capsys):
    """This photo and clip gave a grid whose whole-frame mark H.264 erased (sync 4.7 sigma,
    chance level); the result panel now carries the output's own mark."""
    out, grid = tmp_path / "out.mp4", tmp_path / "grid.mp4"
    assert main(["animate", "--model", "kinemate-tiny", str(demo_inputs / "monalisa.png"),
                 str(demo_inputs / "running.mp4"),
                 "-o", str(out), "--grid", str(grid), "--max-frames", "24",
                 "--no-progress"]) == 0
    result = _assert_marked(out, "kinemate-tiny")
    assert result.region is None
    report = _assert_marked(grid, "kinemate-tiny")
    assert report.region == "grid result panel"
    assert report.to_dict()["watermark"]["region"] == "grid result panel"
    assert main(["verify", str(grid)]) == 0
    assert "found in the result panel of a grid" in capsys.readouterr().out
