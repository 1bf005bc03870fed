"""``animate_file`` refuses what would otherwise run with exit code 0 and a wrong result, and
fails fast where it can: a control of another kind than the model was trained on, a reference
photo without a person (found before the driving video is read), and it honours ``--fps`` for
a folder of frames. Real models (the bundled kinemate-tiny, trained on skeleton maps, and the
golden MagicAnimate-layout weights, a DensePose model), real files through ffmpeg."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from kinemate.cli import main
from kinemate.errors import NoPersonError, UsageError
from kinemate.io import probe_video, read_image, resize, write_image, write_video

EXAMPLES = Path(__file__).resolve().parents[2] / "kinemate" / "assets" / "examples"


@pytest.fixture(scope="module")
def skeleton_pipe(one_thread):
    from kinemate import load_pipeline

    pipe = load_pipeline(model="kinemate-tiny")  # the bundled kinemate-tiny
    assert pipe.control_kind == "openpose"
    return pipe


@pytest.fixture(scope="module")
def densepose_pipe(golden_release, one_thread):
    from kinemate import load_pipeline

    pipe = load_pipeline(golden_release, model="magicanimate")
    assert pipe.control_kind == "densepose"
    return pipe


def test_densepose_control_for_a_skeleton_model_is_refused(skeleton_pipe, demo_inputs, tmp_path,
                                                           capsys):
    from kinemate.pipeline import animate_file

    out = tmp_path / "out.mp4"
    rc = main(["animate", "--model", "kinemate-tiny", str(EXAMPLES / "person.png"),
               str(demo_inputs / "demo4_densepose.mp4"),
               "-o", str(out), "--control", "densepose", "--steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "control kind 'openpose'" in err and "--control pose" in err
    with pytest.raises(UsageError, match="kinemate-tiny was trained on OpenPose") as exc:
        animate_file(EXAMPLES / "person.png", demo_inputs / "demo4_densepose.mp4", out,
                     pipe=skeleton_pipe, control="densepose", steps=1, progress=False)
    assert "`control=pose`" in exc.value.args[0]
    assert list(tmp_path.iterdir()) == []


def test_pose_control_for_a_densepose_model_is_refused(densepose_pipe, golden_release, tmp_path,
                                                       capsys):
    from kinemate.pipeline import animate_file
    from kinemate.pose import PoseTrack

    out = tmp_path / "out.mp4"
    rc = main(["animate", "--weights", str(golden_release), str(EXAMPLES / "person.png"),
               str(EXAMPLES / "dance.mp4"), "-o", str(out), "--control", "pose",
               "--steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "control kind 'densepose'" in err and "--control densepose" in err
    with pytest.raises(UsageError, match="trained on DensePose renders"):
        animate_file(EXAMPLES / "person.png", EXAMPLES / "dance.mp4", out, pipe=densepose_pipe,
                     control="pose", steps=1, progress=False)
    # a pose file with the automatic control is the same mismatch
    moves = PoseTrack.empty(2, 64, 64, 10.0)
    moves.body[:, :, :] = (32, 32, 1.0)
    moves.save(tmp_path / "moves.pose.json")
    with pytest.raises(UsageError, match="a pose file would give it OpenPose skeleton maps"):
        animate_file(EXAMPLES / "person.png", tmp_path / "moves.pose.json", out,
                     pipe=densepose_pipe, steps=1, progress=False)
    assert not out.exists()


def _long_driving(tmp_path: Path, loops: int = 5) -> Path:
    """The bundled dance clip (32 frames of a person) looped into a longer video."""
    from kinemate.io import read_video

    frames, fps = read_video(EXAMPLES / "dance.mp4")
    return write_video(tmp_path / "long.mp4", np.concatenate([frames] * loops), fps)


@pytest.fixture()
def frames_decoded(monkeypatch):
    """Counts the video frames decoded in this test (a wrapper around the real reader)."""
    from kinemate.io.video import VideoReader

    count = {"frames": 0}
    real_next = VideoReader.__next__

    def counted(self):
        frame = real_next(self)
        count["frames"] += 1
        return frame

    monkeypatch.setattr(VideoReader, "__next__", counted)
    return count


def test_no_person_in_the_reference_fails_before_the_driving_video_is_read(
        skeleton_pipe, tmp_path, frames_decoded, capsys):
    from kinemate.pipeline import animate_file
    from kinemate.pose import control_frames_from_driving

    photo = write_image(tmp_path / "coffee.png", skdata.coffee())  # a cup, nobody
    driving = _long_driving(tmp_path)
    assert probe_video(driving).num_frames == 160
    frames_decoded["frames"] = 0
    with pytest.raises(NoPersonError, match="reference photo"):
        animate_file(photo, driving, tmp_path / "out.mp4", pipe=skeleton_pipe, steps=1,
                     progress=False)
    assert frames_decoded["frames"] == 0
    with pytest.raises(NoPersonError, match="reference photo"):
        control_frames_from_driving(driving, read_image(photo), (64, 64), progress=False)
    assert frames_decoded["frames"] == 0
    rc = main(["animate", "--model", "kinemate-tiny", str(photo), str(driving), "-o",
               str(tmp_path / "cli.mp4"), "--steps", "1", "--no-progress"])
    assert rc == 1 and "no person was found in the reference photo" in capsys.readouterr().err
    assert frames_decoded["frames"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coffee.png", "long.mp4"]
    # with a person in the photo, the same call reads the driving video
    frames, fps, n = control_frames_from_driving(driving, skdata.astronaut(), (64, 64),
                                                 max_frames=4, progress=False)
    assert n == 4 and frames_decoded["frames"] >= 4


def _frame_folder(tmp_path: Path, n: int = 4) -> Path:
    """A folder of PNG frames of a person (the astronaut) moving right."""
    folder = tmp_path / "frames"
    folder.mkdir()
    small = resize(skdata.astronaut(), (96, 96))
    for i in range(n):
        frame = np.full((128, 128, 3), 128, np.uint8)
        frame[32:, 4 * i:4 * i + 96] = small
        write_image(folder / f"frame_{i:03d}.png", frame)
    return folder


def test_fps_of_a_frame_folder(skeleton_pipe, tmp_path, capsys):
    from kinemate.pipeline import animate_file
    from kinemate.pose import load_pose

    folder = _frame_folder(tmp_path)
    ref = write_image(tmp_path / "ref.png", skdata.astronaut())
    tail = ["--model", "kinemate-tiny", "--steps", "1", "--context-frames", "4",
            "--context-overlap", "1", "--no-progress"]
    assert main(["animate", str(ref), str(folder), "-o", str(tmp_path / "a.mp4"),
                 "--fps", "12"] + tail) == 0
    info = probe_video(tmp_path / "a.mp4")
    assert info.fps == pytest.approx(12) and info.num_frames == 4
    assert main(["animate", str(ref), str(folder), "-o", str(tmp_path / "b.mp4")] + tail) == 0
    assert probe_video(tmp_path / "b.mp4").fps == pytest.approx(25)  # the default for folders
    result = animate_file(ref, folder, tmp_path / "c.mp4", pipe=skeleton_pipe, fps=8, steps=1,
                          context_frames=4, context_overlap=1, progress=False)
    assert result.fps == 8 and probe_video(tmp_path / "c.mp4").fps == pytest.approx(8)
    # kinemate pose: the track's fps, and a pose file re-timed
    assert main(["pose", str(folder), "-o", str(tmp_path / "f.pose.json"), "--fps", "12",
                 "--quiet"]) == 0
    assert load_pose(tmp_path / "f.pose.json").fps == 12
    assert main(["animate", str(ref), str(tmp_path / "f.pose.json"), "-o",
                 str(tmp_path / "d.mp4"), "--fps", "5"] + tail) == 0
    assert probe_video(tmp_path / "d.mp4").fps == pytest.approx(5)
    capsys.readouterr()
    # a video file keeps its own rate: --fps is refused, naming it
    video = write_video(tmp_path / "clip.mp4", read_image(ref)[None].repeat(2, 0), 10)
    for cmd in (["animate", str(ref), str(video), "-o", str(tmp_path / "e.mp4")] + tail,
                ["pose", str(video), "-o", str(tmp_path / "e.pose.json"), "--quiet"]):
        assert main(cmd + ["--fps", "12"]) == 2
        err = capsys.readouterr().err
        assert "clip.mp4 is a video file with a frame rate of its own" in err and "--fps" in err
    assert main(["pose", str(folder), "-o", str(tmp_path / "g.json"), "--fps", "0"]) == 2
    assert not (tmp_path / "e.mp4").exists() and not (tmp_path / "g.json").exists()


def test_fps_of_a_densepose_frame_folder(densepose_pipe, demo_inputs, tmp_path):
    from kinemate.io import open_video
    from kinemate.pipeline import animate_file

    folder = tmp_path / "iuv"
    folder.mkdir()
    with open_video(demo_inputs / "demo4_densepose.mp4") as reader:
        for i, frame in zip(range(3), reader):
            write_image(folder / f"{i:02d}.png", resize(frame, (64, 64), "nearest"))
    result = animate_file(demo_inputs / "demo4.png", folder, tmp_path / "out.mp4",
                          pipe=densepose_pipe, control="densepose", size="64x64", fps=6,
                          steps=1, context_frames=3, context_overlap=1, progress=False)
    assert result.fps == 6 and probe_video(tmp_path / "out.mp4").fps == pytest.approx(6)
