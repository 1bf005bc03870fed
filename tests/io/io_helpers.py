"""Helpers for kinemate.io tests: real videos made with the bundled ffmpeg."""

from __future__ import annotations

import subprocess

from kinemate.io import ffmpeg_exe


def make_testsrc(path, *, size="64x48", rate=10, frames=20, faststart=False, extra=()):
    """Encode an ffmpeg testsrc clip (H.264 for mp4/mov) and return its path."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}", "-frames:v", str(frames)]
    if str(path).endswith((".mp4", ".mov")):
        cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
        if faststart:
            cmd += ["-movflags", "+faststart"]
    cmd += [*extra, str(path)]
    subprocess.run(cmd, check=True)
    return path
