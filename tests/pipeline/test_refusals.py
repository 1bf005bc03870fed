"""``animate_file`` refuses what would otherwise run with exit code 0 and a wrong result: a
control of another kind than the model was trained on. Real models (the bundled kinemate-tiny,
trained on skeleton maps, and the golden MagicAnimate-layout weights, a DensePose model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinemate.cli import main
from kinemate.errors import UsageError

EXAMPLES = Path(__file__).resolve().parents[2] / "kinemate" / "assets" / "examples"


@pytest.fixture(scope="module")
def skeleton_pipe(one_thread):
    from kinemate import load_pipeline

    pipe = load_pipeline()  # the bundled kinemate-tiny
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
    rc = main(["animate", str(EXAMPLES / "person.png"), str(demo_inputs / "demo4_densepose.mp4"),
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
