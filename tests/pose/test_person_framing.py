"""The default framing keeps the whole reference person (pose control, ``fit="crop"``).

A 1080x1920 portrait photo onto a square output: the centred crop of the old default cut
through the face of a person standing near the top. Real photos, real pose estimation (the
person's box comes from the reference pose), and the bundled model end to end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from kinemate.cli import main
from kinemate.io import Framing, read_image, resize, write_image
from kinemate.pose import control_frames_from_driving, detect_reference_pose
from kinemate.pose.control import reference_framing
from kinemate.pose.skeleton import NOSE, R_ANKLE, L_ANKLE

EXAMPLES = Path(__file__).resolve().parents[2] / "kinemate" / "assets" / "examples"


def astronaut_portrait() -> np.ndarray:
    """The astronaut photo at 1080x1080 at the top of a 1080x1920 portrait; below it the
    photo's last row repeated (a plain floor, nobody in it)."""
    top = resize(skdata.astronaut(), (1080, 1080))
    return np.concatenate([top, np.repeat(top[-1:], 840, axis=0)])


def standing_portrait() -> np.ndarray:
    """The bundled example person (a whole standing body) filling most of a 1080x1920 photo."""
    big = resize(read_image(EXAMPLES / "person.png"), (1920, 1920))
    return np.ascontiguousarray(big[:, 420:1500])


def _head_points(pose) -> np.ndarray:
    body, face = pose.body[0], pose.face[0]
    head = np.concatenate([body[[NOSE, 14, 15, 16, 17]], face])
    return head[head[:, 2] > 0, :2]


def _inside(framing: Framing, xy: np.ndarray) -> np.ndarray:
    mapped = framing.map_points(xy)
    w, h = framing.dst_wh
    return (mapped[:, 0] >= 0) & (mapped[:, 0] < w) & (mapped[:, 1] >= 0) & (mapped[:, 1] < h)


@pytest.mark.parametrize("size", [(512, 512), (64, 64)])
def test_a_person_near_the_top_of_a_portrait_keeps_their_head(size):
    photo = astronaut_portrait()
    pose = detect_reference_pose(photo)
    head = _head_points(pose)
    assert len(head) > 50  # nose, eyes, ears and the face points
    centred = Framing.compute((1080, 1920), size, "crop")
    assert not _inside(centred, head).any()  # the old default: the whole face cut off
    framing = reference_framing((1080, 1920), size, "crop", pose)
    assert _inside(framing, head).all()
    # what animate_file uses: the maps and the photo through the same person-aware framing
    frames, _, _ = control_frames_from_driving(EXAMPLES / "dance.mp4", photo, size,
                                               reference_pose=pose, max_frames=1, progress=False)
    assert frames.framing == framing
    # an explicit letterbox stays the plain letterbox
    letterbox = reference_framing((1080, 1920), size, "letterbox", pose)
    assert letterbox == Framing.compute((1080, 1920), size, "letterbox")


def test_a_standing_person_too_tall_for_the_crop_gets_bars_and_a_note(tmp_path, capsys):
    from kinemate import load_pipeline
    from kinemate.pipeline import animate_file

    photo = standing_portrait()
    pose = detect_reference_pose(photo)
    body = pose.body[0]
    assert body[NOSE, 2] > 0 and max(body[R_ANKLE, 2], body[L_ANKLE, 2]) > 0  # head to feet
    seen = body[body[:, 2] > 0, :2]
    framing = reference_framing((1080, 1920), (64, 64), "crop", pose)
    assert _inside(framing, seen).all() and framing.letterboxed
    assert not _inside(Framing.compute((1080, 1920), (64, 64), "crop"), seen).all()
    ref = write_image(tmp_path / "standing.png", photo)
    result = animate_file(ref, EXAMPLES / "dance.mp4", tmp_path / "out.mp4", pipe=load_pipeline(model="kinemate-tiny"),
                          max_frames=2, steps=1, context_frames=2, context_overlap=1,
                          progress=False)
    assert result.framing_note and "black bars left and right" in result.framing_note
    rc = main(["animate", "--model", "kinemate-tiny", str(ref), str(EXAMPLES / "dance.mp4"),
               "-o", str(tmp_path / "b.mp4"), "--max-frames", "2", "--steps", "1", "--context-frames", "2",
               "--context-overlap", "1", "--no-progress"])
    assert rc == 0 and "note: the whole person in standing.png (1080x1920)" in capsys.readouterr().out
    # --fit letterbox: the whole photo as before, nothing to note
    plain = animate_file(ref, EXAMPLES / "dance.mp4", tmp_path / "c.mp4", pipe=load_pipeline(model="kinemate-tiny"),
                         fit="letterbox", max_frames=2, steps=1, context_frames=2,
                         context_overlap=1, progress=False)
    assert plain.framing_note is None
