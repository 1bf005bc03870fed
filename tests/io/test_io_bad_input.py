"""Every kind of bad input gives an InputError whose message says what to do."""

import subprocess

import numpy as np
import pytest
from io_helpers import make_testsrc

from kinemate.errors import InputError
from kinemate.io import ffmpeg_exe, open_video, probe_video, read_video, write_image


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found.*check the path"):
        open_video(tmp_path / "nope.mp4")


def test_text_file_named_mp4(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 20)
    with pytest.raises(InputError, match="not a video.*give an mp4"):
        open_video(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(InputError, match="empty file.*re-export"):
        probe_video(p)


@pytest.mark.parametrize("faststart", [False, True], ids=["moov-at-end", "faststart"])
def test_truncated_mp4(tmp_path, faststart):
    full = make_testsrc(tmp_path / "full.mp4", size="96x64", frames=40, faststart=faststart)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated.*re-download"):
        open_video(cut)


@pytest.mark.parametrize("suffix", [".webm", ".gif"])
def test_truncated_webm_and_gif(tmp_path, suffix):
    full = tmp_path / f"full{suffix}"
    extra = ["-c:v", "libvpx-vp9", "-deadline", "realtime"] if suffix == ".webm" else []
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc=size=96x64:rate=10:duration=3", *extra, str(full)], check=True)
    assert probe_video(full).num_frames == 30
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(InputError, match="truncated.*re-download"):
        open_video(cut)


def test_zero_frames(tmp_path):
    # An audio-only mp4: a real container with no video frames.
    p = tmp_path / "audio.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "sine=duration=0.5", "-c:a", "aac", str(p)], check=True)
    with pytest.raises(InputError, match="no video frames"):
        open_video(p)
    # A video whose every frame was filtered out: the container has no video at all.
    z = tmp_path / "zero.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc=size=32x32:rate=10:duration=1", "-vf", "select=0",
                    "-c:v", "libx264", str(z)], check=True)
    with pytest.raises(InputError, match="no video frames.*at least one frame"):
        read_video(z)


def test_unsupported_extension(tmp_path, clip_mp4):
    p = tmp_path / "clip.xyz"
    p.write_bytes(clip_mp4.read_bytes())
    with pytest.raises(InputError, match="unsupported file type '.xyz'.*convert"):
        open_video(p)
    still = write_image(tmp_path / "still.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="still image.*folder of frames"):
        open_video(still)


def test_video_larger_than_limit(tmp_path):
    big = make_testsrc(tmp_path / "big.mp4", size="320x240", frames=2)
    with pytest.raises(InputError, match="320x240.*limit.*downscale"):
        open_video(big, max_pixels=320 * 240 - 1)
    with open_video(big, max_pixels=320 * 240) as r:
        assert r.width == 320


def test_empty_image_folder(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    (d / "readme.txt").write_text("no images")
    with pytest.raises(InputError, match="no image frames.*put the frames"):
        open_video(d)


def test_folder_with_mixed_sizes(tmp_path):
    d = tmp_path / "frames"
    write_image(d / "a1.png", np.zeros((8, 8, 3), np.uint8))
    write_image(d / "a2.png", np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(InputError, match="same size"):
        read_video(d)


def test_folder_with_broken_frame(tmp_path):
    d = tmp_path / "frames"
    write_image(d / "a1.png", np.zeros((8, 8, 3), np.uint8))
    (d / "a2.png").write_bytes(b"garbage")
    with pytest.raises(InputError, match="a2.png"):
        read_video(d)
