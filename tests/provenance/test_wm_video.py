"""The watermark through kinemate.io's VideoWriter and real ffmpeg re-encodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinemate.io import read_video, write_video
from kinemate.provenance import make_marker
from kinemate.provenance.watermark import Payload, detect

from prov_helpers import pan, reencode

PAYLOAD = Payload.for_model("kinemate-tiny")


@pytest.fixture(scope="module")
def marked_clip(tmp_path_factory, photos) -> Path:
    folder = tmp_path_factory.mktemp("wmvideo")
    marker = make_marker("kinemate-tiny", {"test": True}, c2pa=False)
    frames = pan(photos["chelsea"], n=6)
    path = write_video(folder / "clip.mp4", frames, 12, marker=marker)
    assert marker.frames_marked == 6
    return path


@pytest.mark.parametrize(
    "vf",
    [
        "null",
        "scale=288:192",  # 75 %
        "scale=480:320",  # 125 %
        "crop=372:248:12:8",  # 3 % off the top-left
    ],
)
def test_video_survives_h264_crf23(marked_clip, tmp_path, vf):
    out = reencode(marked_clip, tmp_path / "re.mp4", vf=vf, crf=23)
    frames, _ = read_video(out)
    found = detect(frames)
    assert found.detected and found.payload == PAYLOAD, f"{vf}: sync z {found.sync_z:.1f}"
    assert found.bit_accuracy(PAYLOAD) >= 0.95


def test_unmarked_video_not_detected(tmp_path, photos):
    path = write_video(tmp_path / "plain.mp4", pan(photos["chelsea"], n=6), 12)
    frames, _ = read_video(reencode(path, tmp_path / "re.mp4"))
    assert not detect(frames).detected
