"""A truncated video is an InputError, never a shorter clip.

Decoders forgive a GIF cut anywhere: they return the frames before the cut. And a GIF's last
byte being the trailer ``;`` proves nothing, since 0x3B also occurs inside compressed image
data. Reading walks the GIF's block structure to its trailer instead. The GIFs are real files
(ffmpeg, Pillow, kinemate's own writer) cut with byte slicing.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from io_helpers import make_testsrc
from PIL import Image

from kinemate.errors import InputError
from kinemate.io import ffmpeg_exe, open_video, probe_video, write_video
from kinemate.io.video import gif_structure

FRAMES = 30


def _moving_frames() -> list[np.ndarray]:
    frames = []
    for i in range(FRAMES):
        a = np.zeros((64, 96, 3), np.uint8)
        a[:, :] = (i * 8, 100, 200 - i * 5)
        a[10:30, i * 2 : i * 2 + 20] = 255
        frames.append(a)
    return frames


def _gif(tmp_path, maker: str):
    path = tmp_path / f"{maker}.gif"
    if maker == "ffmpeg":
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", f"testsrc=size=96x64:rate=10:duration={FRAMES / 10}", str(path)],
                       check=True)
    elif maker == "pillow":
        images = [Image.fromarray(f) for f in _moving_frames()]
        images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    else:
        write_video(path, _moving_frames(), 10)
    return path


def _count(path) -> int:
    with open_video(path) as reader:
        return sum(1 for _ in reader)


@pytest.mark.parametrize("maker", ["ffmpeg", "pillow", "kinemate"])
def test_complete_gif_reads_every_frame(tmp_path, maker):
    gif = _gif(tmp_path, maker)
    assert gif_structure(gif) == (FRAMES, None)
    assert probe_video(gif).num_frames == FRAMES
    assert _count(gif) == FRAMES
    # bytes after the trailer (some tools pad files) do not make a complete GIF incomplete
    padded = tmp_path / "padded.gif"
    padded.write_bytes(gif.read_bytes() + b"\0" * 100)
    assert _count(padded) == FRAMES


@pytest.mark.parametrize("maker", ["ffmpeg", "pillow", "kinemate"])
def test_gif_cut_anywhere_is_refused(tmp_path, maker):
    data = _gif(tmp_path, maker).read_bytes()
    cut = tmp_path / "cut.gif"
    for percent in [50, *range(5, 100, 5)]:
        cut.write_bytes(data[: len(data) * percent // 100])
        with pytest.raises(InputError, match=r"truncated.*GIF is cut off.*re-export"):
            with open_video(cut) as reader:
                for _ in reader:
                    pass
    cut.write_bytes(data[:-1])  # only the trailer missing
    with pytest.raises(InputError, match=r"truncated.*cut off after frame 30 \(no trailer\)"):
        probe_video(cut)


def test_gif_cut_right_after_a_trailer_byte_in_image_data(tmp_path):
    """The case that got through: the cut ends on a 0x3B inside LZW data, so the file's last
    byte looks like the GIF trailer. Every such cut of a Pillow GIF is refused."""
    data = _gif(tmp_path, "pillow").read_bytes()
    spots = [i + 1 for i in range(len(data) // 10, len(data) - 1) if data[i] == 0x3B]
    assert spots, "the test GIF has no 0x3B byte inside its data"
    cut = tmp_path / "cut.gif"
    for end in spots:
        cut.write_bytes(data[:end])
        frames, problem = gif_structure(cut)
        assert problem is not None and frames < FRAMES
        with pytest.raises(InputError, match="truncated"):
            _count(cut)


def test_gif_with_a_damaged_block_is_refused(tmp_path):
    gif = _gif(tmp_path, "ffmpeg")
    data = bytearray(gif.read_bytes())
    frames, problem = gif_structure(gif)
    assert problem is None
    data[-1] = 0x55  # the trailer replaced by a byte that starts no GIF block
    gif.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"damaged.*unknown block 0x55.*re-export"):
        probe_video(gif)


@pytest.mark.parametrize("faststart", [False, True], ids=["moov-at-end", "faststart"])
def test_mp4_cut_anywhere_is_refused(tmp_path, faststart):
    """Cut in half, or anywhere else: the error says truncated (ffmpeg alone reports a cut
    inside the index as 'no video stream' or 'not a video')."""
    full = make_testsrc(tmp_path / "full.mp4", size="96x64", frames=FRAMES, faststart=faststart)
    assert _count(full) == FRAMES
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    for percent in [50, *range(5, 100, 5)]:
        cut.write_bytes(data[: len(data) * percent // 100])
        with pytest.raises(InputError, match="truncated.*re-download"):
            _count(cut)
    padded = tmp_path / "padded.mp4"  # zero padding after the last box is not a cut
    padded.write_bytes(data + b"\0" * 4)
    assert _count(padded) == FRAMES
