"""Preparing a run can be stopped: ``animate_file``'s ``prepare_callback`` and the pose
extraction ``callback`` are called per frame and may raise (the service cancels jobs this
way); then nothing is written, the video being read is closed and the control spill folder
is removed. Spill folders left by killed processes are removed later by process id."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class Stop(Exception):
    pass


@pytest.fixture()
def temp_root(tmp_path, monkeypatch) -> Path:
    """The system temp folder of this test (where spill folders are made)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_animate_file_stops_while_preparing_controls_and_leaves_nothing(
        golden_release, demo_inputs, tmp_path, temp_root, one_thread):
    from kinemate import load_pipeline
    from kinemate.io import fit_image, open_video, write_video
    from kinemate.pipeline import animate_file

    frames = []
    with open_video(demo_inputs / "demo4_densepose.mp4") as reader:
        for frame in reader:
            frames.append(fit_image(frame, (64, 64), "crop"))
            if len(frames) == 12:
                break
    write_video(tmp_path / "driving.mp4", frames, 25)
    pipe = load_pipeline(golden_release, model="magicanimate")
    calls, spills = [], []

    def hook(stage, done, total):
        calls.append((stage, done, total))
        spills.append(sorted(p.name for p in temp_root.glob("kinemate-controls-*")))
        if done == 5:
            raise Stop()

    def sampler_step(*_):
        raise AssertionError("sampling started although preparing was stopped")

    with pytest.raises(Stop):
        animate_file(demo_inputs / "monalisa.png", tmp_path / "driving.mp4", tmp_path / "out.mp4",
                     pipe=pipe, control="densepose", size="64x64", steps=1, progress=False,
                     grid_path=tmp_path / "grid.mp4", prepare_callback=hook,
                     callback=sampler_step)
    assert calls == [("controls", i, 12) for i in range(1, 6)]
    assert len(spills[0]) == 1 and spills[0][0].startswith(f"kinemate-controls-{os.getpid()}-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["driving.mp4", "tmp"]  # no output
    assert list(temp_root.glob("kinemate-controls-*")) == []  # the spill folder is gone


def test_pose_extraction_stops_when_its_callback_raises():
    from kinemate.io import probe_video
    from kinemate.pose import extract_pose

    video = REPO / "kinemate" / "assets" / "examples" / "dance.mp4"
    total = probe_video(video).num_frames
    calls = []

    def hook(done, count):
        calls.append((done, count))
        if done == 3:
            raise Stop()

    with pytest.raises(Stop):
        extract_pose(video, progress=False, callback=hook)
    assert calls == [(1, total), (2, total), (3, total)] and total > 3


def test_spill_folders_of_dead_processes_are_removed_and_others_kept(temp_root):
    from kinemate.pipeline.scratch import remove_stale_spills, spill_folder

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(done.stdout)  # a process that has exited
    (temp_root / f"kinemate-controls-{dead}-abc123").mkdir()
    (temp_root / f"kinemate-controls-{dead}-abc123" / "controls.u8").write_bytes(b"x" * 10)
    live = temp_root / f"kinemate-controls-{os.getppid()}-def456"  # our parent runs
    live.mkdir()
    unnamed = temp_root / "kinemate-controls-k2j4h5g6"  # no process id: not ours to judge
    unnamed.mkdir()
    with spill_folder() as mine:
        removed = remove_stale_spills()
        assert Path(mine).is_dir()  # this process's own folder stays
    assert [p.name for p in removed] == [f"kinemate-controls-{dead}-abc123"]
    assert sorted(p.name for p in temp_root.iterdir()) == sorted([live.name, unnamed.name])
    # a process clears its own on the way out
    mine = temp_root / f"kinemate-controls-{os.getpid()}-zzz"
    mine.mkdir()
    assert remove_stale_spills(pid=os.getpid()) == [mine]
    assert live.is_dir() and unnamed.is_dir()
