"""The service offering Text2Video-Zero: a real ``kinemate serve --weights`` on the tiny golden
SD1.5 + ControlNet set. A job is a driving pose JSON and a ``prompt`` — no reference photo,
which is refused at submission, as is a job without a prompt."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from service_helpers import Server

GOLDEN = Path(os.environ.get("KINEMATE_T2VZ_GOLDEN_DIR",
                             Path(__file__).resolve().parents[2].parent / "shared" / "reference"
                             / "text2video-zero" / "golden"))


@pytest.fixture(scope="module")
def t2vz_server(tmp_path_factory):
    if not (GOLDEN / "unet").is_dir():
        pytest.skip(f"Text2Video-Zero golden weights not found at {GOLDEN}")
    srv = Server(tmp_path_factory.mktemp("t2vz-service-data"), GOLDEN).start()
    yield srv
    srv.stop()


def _track(path: Path, frames: int = 2) -> bytes:
    """A hand-made pose JSON (kinemate format): a standing person raising an arm."""
    from kinemate.pose import PoseTrack

    track = PoseTrack.empty(frames, 128, 128, fps=10)
    body = {0: (64, 20), 1: (64, 36), 2: (50, 38), 3: (44, 56), 4: (40, 72), 5: (78, 38),
            6: (84, 56), 7: (88, 72), 8: (56, 74), 9: (55, 96), 10: (54, 118), 11: (72, 74),
            12: (73, 96), 13: (74, 118)}
    for f in range(frames):
        for k, (x, y) in body.items():
            track.body[f, k] = (x, y - (20 * f if k == 4 else 0), 0.9)
    track.confidence[:] = 1.0
    track.save(path)
    return path.read_bytes()


def _fields(driving: bytes, **params) -> list[tuple]:
    base = {"steps": "1", "size": "32x32", **params}
    return [("driving", "moves.json", driving, "application/json"),
            *((k, str(v)) for k, v in base.items() if v is not None)]


def test_prompt_job_without_a_photo(t2vz_server, tmp_path):
    from kinemate.io import probe_video

    client, key = t2vz_server.client, t2vz_server.new_key()
    health = client.get("/api/v1/health").json()["worker"]
    assert health["model"] == "text2video-zero" and health["uses_reference"] is False, health
    assert health["preset"] == "official", health
    res = client.post("/api/v1/jobs", key=key, fields=_fields(
        _track(tmp_path / "moves.pose.json"), prompt="a cat dancing", context_frames="2"))
    assert res.status == 201, res.body
    job = client.wait(key, res.json()["id"], timeout=300)
    assert job["state"] == "succeeded", (job, t2vz_server.log())
    assert job["params"]["prompt"] == "a cat dancing"
    video = client.get(f"/api/v1/jobs/{job['id']}/result", key=key)
    (tmp_path / "out.mp4").write_bytes(video.body)
    info = probe_video(tmp_path / "out.mp4")
    assert (info.num_frames, info.width, info.height) == (2, 32, 32)


def test_photo_or_missing_prompt_refused(t2vz_server, tiny_inputs, tmp_path):
    client, key = t2vz_server.client, t2vz_server.new_key()
    track = _track(tmp_path / "moves.pose.json")
    photo = [("reference", "photo.png", tiny_inputs["reference"].read_bytes(), "image/png")]
    res = client.post("/api/v1/jobs", key=key,
                      fields=photo + _fields(track, prompt="a cat dancing"))
    assert res.status == 422 and "takes no reference photo" in res.body.decode(), res.body
    res = client.post("/api/v1/jobs", key=key, fields=_fields(track))
    assert res.status == 422 and "needs the field 'prompt'" in res.body.decode(), res.body
    assert json.loads(client.get("/api/v1/jobs", key=key).body)["jobs"] == []
