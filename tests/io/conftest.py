"""Fixtures for kinemate.io tests: real videos made with the bundled ffmpeg."""

from __future__ import annotations

import subprocess

import pytest

from kinemate.io import ffmpeg_exe


def make_testsrc(path, *, size="64x48", rate=10, frames=20, faststart=False, extra=()):
    """Encode an ffmpeg testsrc clip (H.264 for mp4) and return its path."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}", "-frames:v", str(frames)]
    if str(path).endswith((".mp4", ".mov")):
        cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
        if faststart:
            cmd += ["-movflags", "+faststart"]
    cmd += [*extra, str(path)]
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory):
    return make_testsrc(tmp_path_factory.mktemp("clips") / "clip.mp4")
