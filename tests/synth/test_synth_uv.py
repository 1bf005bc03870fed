"""kinemate synth writes exact DensePose UV fields (the pose input of dreampose)."""

from __future__ import annotations

import numpy as np


def test_synth_writes_exact_uv_fields(tmp_path):
    from kinemate.cli import main
    from kinemate.pose.uv import uv_files, uv_frames
    from kinemate.synth import generate_clip

    clip = generate_clip(3, 2, (64, 80))
    assert clip.uv.shape == (2, 2, 80, 64) and clip.uv.dtype == np.float32
    body = clip.parts > 0
    assert (clip.uv[:, 0][~body] == 0).all() and (clip.uv[:, 1][~body] == 0).all()
    assert clip.uv[:, 0][body].max() > 0.5 and 0 <= clip.uv.min() and clip.uv.max() <= 1
    # the 8-bit IUV image is the rounding of these fields
    assert np.abs(clip.uv[:, 0] * 255 - clip.iuv[..., 1]).max() <= 0.5 + 1e-3
    assert np.abs(clip.uv[:, 1] * 255 - clip.iuv[..., 2]).max() <= 0.5 + 1e-3

    assert main(["synth", "-o", str(tmp_path / "ds"), "--clips", "1", "--seed", "3",
                 "--frames", "2", "--size", "64x80"]) == 0
    folder = next((tmp_path / "ds").glob("clip_*")) / "uv"
    assert [p.name for p in uv_files(folder)] == ["frame_0_densepose.npy", "frame_1_densepose.npy"]
    frames, _, count = uv_frames(folder, (64, 80))
    fields = list(frames)
    assert count == 2 and np.array_equal(fields[1].transpose(2, 0, 1), clip.uv[1])
