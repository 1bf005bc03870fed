"""The dataset folder format: `kinemate synth` writes it, the reader reads it back."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from kinemate.cli import main
from kinemate.errors import UsageError
from kinemate.synth import generate_clip
from kinemate.synth.dataset import open_dataset, write_dataset, write_index


def test_cli_writes_dataset_that_reads_back(tmp_path):
    out = tmp_path / "ds"
    rc = main(["synth", "-o", str(out), "--clips", "3", "--seed", "40", "--frames", "4",
               "--size", "80x64", "--preview", str(tmp_path / "preview.gif")])
    assert rc == 0
    from kinemate.io import read_video

    preview, _ = read_video(tmp_path / "preview.gif")
    assert preview.shape == (4, 128, 240, 3)  # 3 clips side by side, frames over DensePose
    info = json.loads((out / "dataset.json").read_text())
    assert info["format"] == "kinemate.dataset" and info["split"] == "train"
    assert [v["seed"] for v in info["videos"]] == [40, 41, 42]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "preview.gif"]  # no temp left
    ds = open_dataset(out)
    assert len(ds) == 3
    for k, item in enumerate(ds):
        clip = generate_clip(40 + k, 4, (80, 64), fps=15.0)
        assert np.array_equal(item.read_frames(), clip.frames)  # PNG is lossless
        assert np.array_equal(item.read_mask(), clip.mask)
        assert np.array_equal(item.read_parts(), clip.parts)
        assert np.array_equal(item.read_densepose(), clip.densepose)
        track = item.read_pose()
        assert track.size == (80, 64) and len(track) == 4
        assert np.allclose(track.body, clip.pose, atol=2e-3)
        assert np.allclose(track.face, clip.face, atol=2e-3)
        frames, controls = item.load(size=(64, 64), control="openpose")
        assert frames.shape == controls.shape == (4, 64, 64, 3) and controls.any()
        _, same = item.load(control="openpose")  # native size: the clip's own skeleton maps
        assert np.array_equal(same, clip.skeleton)
        frames, controls = item.load(control="densepose", indices=[1, 3])
        assert np.array_equal(controls, clip.densepose[[1, 3]])


def test_cli_refuses_existing_output_and_bad_seed_ranges(tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["synth", "-o", str(out), "--clips", "1", "--frames", "1", "--size", "32x32"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["synth", "-o", str(tmp_path / "x"), "--clips", "3", "--seed", "999999"]) == 2
    assert "held-out" in capsys.readouterr().err
    assert main(["synth", "-o", str(tmp_path / "x"), "--motion", "moonwalk"]) == 2
    assert main(["synth", "-o", str(out), "--clips", "1", "--frames", "2", "--size", "32x32",
                 "--seed", "1000000", "--force"]) == 0
    assert json.loads((out / "dataset.json").read_text())["split"] == "eval"
    assert not (out / "keep.txt").exists()


def test_interrupted_write_leaves_nothing(tmp_path):
    def clips():
        yield generate_clip(1, 2, 32)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "ds", clips(), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_tiktok_layout_reads_without_index(tmp_path):
    clip = generate_clip(3, 3, 48)
    vid = tmp_path / "TikTok_dataset" / "00001"
    for sub in ("images", "masks", "densepose"):
        (vid / sub).mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(vid / "images" / f"{i + 1:04d}.png"), clip.frames[i][..., ::-1])
        cv2.imwrite(str(vid / "masks" / f"{i + 1:04d}.png"), clip.mask[i].astype(np.uint8) * 255)
        cv2.imwrite(str(vid / "densepose" / f"{i + 1:04d}.png"), clip.densepose[i][..., ::-1])
    ds = open_dataset(tmp_path / "TikTok_dataset")
    assert len(ds) == 1 and ds[0].name == "00001" and ds[0].pose is None
    frames, controls = ds[0].load(size=(32, 32), control="densepose")
    assert frames.shape == (3, 32, 32, 3)
    assert np.array_equal(ds[0].read_mask(), clip.mask)
    write_index(tmp_path / "TikTok_dataset")
    again = open_dataset(tmp_path / "TikTok_dataset")
    assert again.info.get("videos") and again[0].num_frames == 3
    with pytest.raises(Exception, match="pose.json"):
        again[0].load(control="openpose")


def test_synth_help_through_the_real_command():
    out = subprocess.run([sys.executable, "-m", "kinemate", "synth", "--help"],
                         capture_output=True, text=True, check=True)
    assert "--clips" in out.stdout and "--seed" in out.stdout


def test_write_dataset_rejects_nonempty_target(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "f").write_text("x")
    with pytest.raises(UsageError):
        write_dataset(tmp_path / "ds", [], progress=False)


def test_video_file_instead_of_frames(tmp_path):
    from kinemate.io import write_video

    clip = generate_clip(8, 6, 64)
    vid = tmp_path / "mine" / "dance1"
    vid.mkdir(parents=True)
    write_video(vid / "video.mp4", clip.frames, clip.fps)
    clip.pose_track().save(vid / "pose.json")
    ds = open_dataset(tmp_path / "mine")
    assert len(ds) == 1 and ds[0].num_frames == 6
    frames, controls = ds[0].load(size=(48, 48), control="openpose", indices=[0, 5])
    assert frames.shape == controls.shape == (2, 48, 48, 3)
    full = ds[0].read_frames()
    assert full.shape == clip.frames.shape
    assert np.abs(full.astype(int) - clip.frames.astype(int)).mean() < 12  # lossy H.264
    write_index(tmp_path / "mine")
    assert json.loads((tmp_path / "mine" / "dataset.json").read_text())["videos"][0]["frames"] \
        == "video.mp4"
