import subprocess

import numpy as np
import pytest
from io_helpers import make_testsrc

from kinemate.errors import KinemateError, UsageError
from kinemate.io import (
    VideoWriter,
    ffmpeg_exe,
    open_video,
    probe_video,
    read_video,
    write_image,
    write_video,
)


def _frames(n, w=40, h=30):
    """Smooth colour gradients (video codecs keep them well), shifting frame to frame."""
    y, x = np.mgrid[0:h, 0:w]
    return [
        np.stack([(x * 6 + i * 8) % 256, y * 8 % 256, np.full_like(x, 40 * i % 256)], -1).astype(np.uint8)
        for i in range(n)
    ]


def test_probe_and_stream_testsrc(clip_mp4):
    info = probe_video(clip_mp4)
    assert (info.width, info.height, info.num_frames) == (64, 48, 20)
    assert info.fps == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(2.0, abs=0.15)
    with open_video(clip_mp4) as reader:
        assert (reader.width, reader.height, reader.fps, reader.num_frames) == (64, 48, 10.0, 20)
        first = next(reader)
        assert first.dtype == np.uint8 and first.shape == (48, 64, 3)
        rest = list(reader)
    assert len(rest) == 19
    assert not np.array_equal(first, rest[-1])


def test_reader_closes_early_without_leaking(clip_mp4):
    reader = open_video(clip_mp4)
    next(reader)
    reader.close()
    assert list(reader) == []


def test_mp4_roundtrip_odd_size_padded(tmp_path):
    frames = _frames(9, w=41, h=31)
    out = write_video(tmp_path / "o.mp4", frames, 12.5)
    assert out == tmp_path / "o.mp4" and sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]
    info = probe_video(out)
    assert (info.width, info.height, info.num_frames, info.fps) == (42, 32, 9, 12.5)
    got, fps = read_video(out)
    assert got.shape == (9, 32, 42, 3) and fps == 12.5
    # H.264 at crf 18 is close to the input; the padded column repeats the last one.
    err = np.abs(got[:, :31, :41].astype(int) - np.stack(frames).astype(int)).mean()
    assert err < 12
    # yuv420p, H.264: check with ffmpeg's own report
    text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr
    assert "h264" in text and "yuv420p" in text


def test_mov_and_gif_and_png_folder(tmp_path):
    frames = _frames(6)
    for name in ("o.mov", "o.gif"):
        out = write_video(tmp_path / name, frames, 10)
        got, fps = read_video(out)
        assert got.shape == (6, 30, 40, 3) and fps == pytest.approx(10)
    folder = write_video(tmp_path / "frames", frames, 10)
    assert sorted(p.name for p in folder.iterdir())[:2] == ["frame_000000.png", "frame_000001.png"]
    got, fps = read_video(folder)
    np.testing.assert_array_equal(got, np.stack(frames))  # PNG is lossless
    assert fps == 25.0
    with open_video(folder, fps=8) as r:
        assert r.fps == 8 and r.num_frames == 6
    # rewriting a previous frames folder replaces it
    write_video(folder, frames[:2], 10)
    assert len(list(folder.iterdir())) == 2
    assert not [p for p in tmp_path.iterdir() if "kinemate-tmp" in p.name]


def test_image_folder_natural_order(tmp_path):
    d = tmp_path / "seq"
    for i in (1, 2, 10):
        write_image(d / f"f{i}.png", np.full((8, 8, 3), i, np.uint8))
    (d / "notes.txt").write_text("ignored")
    got, _ = read_video(d)
    assert [int(f[0, 0, 0]) for f in got] == [1, 2, 10]


def test_read_video_max_frames(clip_mp4):
    got, _ = read_video(clip_mp4, max_frames=3)
    assert got.shape[0] == 3


class Marker:
    def __init__(self):
        self.marked = 0
        self.finalized = None

    def mark(self, frame):
        self.marked += 1
        out = frame.copy()
        out[0, 0] = (255, 0, 0)
        return out

    def finalize(self, path):
        assert path.exists() and "kinemate-tmp" in path.name and path.suffix == ".mp4"
        self.finalized = path
        with open(path, "ab") as f:  # may rewrite the file in place
            f.write(b"")


def test_marker_protocol(tmp_path):
    m = Marker()
    out = write_video(tmp_path / "m.mp4", _frames(5), 10, marker=m)
    assert m.marked == 5 and m.finalized is not None and not m.finalized.exists()
    assert out.exists()


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "x.mp4", 10) as w:
            for f in _frames(3):
                w.write(f)
            raise RuntimeError("boom")
    with pytest.raises(ValueError):
        write_video(tmp_path / "y.mp4", [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)], 10)

    class BadFinalize(Marker):
        def finalize(self, path):
            raise KinemateError("signing failed")

    with pytest.raises(KinemateError, match="signing"):
        write_video(tmp_path / "z.mp4", _frames(2), 10, marker=BadFinalize())
    with pytest.raises(KinemateError, match="no frames"):
        write_video(tmp_path / "e.mp4", [], 10)
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "pngs", 10) as w:
            w.write(_frames(1)[0])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_replaced_atomically(tmp_path):
    p = tmp_path / "o.mp4"
    p.write_bytes(b"old")
    write_video(p, _frames(2), 10)
    assert probe_video(p).num_frames == 2


def test_writer_usage_errors(tmp_path):
    with pytest.raises(UsageError, match=".mp4"):
        VideoWriter(tmp_path / "o.avi", 10)
    with pytest.raises(UsageError, match="fps"):
        VideoWriter(tmp_path / "o.mp4", 0)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("x")
    with pytest.raises(UsageError, match="other files"):
        VideoWriter(busy, 10)


def test_streaming_read_is_lazy(tmp_path):
    """A reader opened on a long clip does not decode it up front."""
    long_clip = make_testsrc(tmp_path / "long.mp4", size="32x32", rate=25, frames=300)
    with open_video(long_clip) as r:
        assert r.num_frames == 300
        next(r)
        assert r.frames_read == 1


@pytest.mark.parametrize("suffix", [".webm", ".mkv", ".avi", ".mov"])
def test_container_formats_and_odd_paths(tmp_path, suffix):
    codec = {".webm": "libvpx-vp9", ".mkv": "ffv1", ".avi": "mjpeg", ".mov": "libx264"}[suffix]
    p = tmp_path / f"ü ber -x{suffix}"  # non-ASCII, space, leading-dash-like name
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc=size=48x32:rate=8:duration=1", "-c:v", codec, str(p)], check=True)
    info = probe_video(p)
    assert (info.width, info.height, info.num_frames, info.fps) == (48, 32, 8, 8.0)
    frames, fps = read_video(p)
    assert frames.shape == (8, 32, 48, 3) and fps == 8.0


def test_rotation_metadata_is_applied(tmp_path, clip_mp4, caplog):
    rotated = tmp_path / "rot.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-display_rotation", "90",
                    "-i", str(clip_mp4), "-c", "copy", str(rotated)], check=True)
    info = probe_video(rotated)
    assert (info.width, info.height) == (48, 64)  # upright: the 64x48 clip turned a quarter
    frames, _ = read_video(rotated, max_frames=2)
    assert frames.shape == (2, 64, 48, 3)
    assert not [r for r in caplog.records if "different from the source" in r.getMessage()]
