"""The service offering kinemate-photo: a real ``kinemate serve --model kinemate-photo`` (no
weights) runs a job from a photo and a pose JSON to a marked video at the photo's size."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_helpers import Server

EXAMPLES = Path(__file__).resolve().parents[2] / "kinemate" / "assets" / "examples"


@pytest.fixture(scope="module")
def photo_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("photo-service-data"), None,
                 ["--model", "kinemate-photo"]).start()
    yield srv
    srv.stop()


def test_photo_job_succeeds_at_the_photos_size(photo_server, tmp_path):
    from kinemate.io import probe_video
    from kinemate.provenance import verify
    from kinemate.synth import generate_clip

    client, key = photo_server.client, photo_server.new_key()
    health = client.get("/api/v1/health").json()
    assert health["worker"]["model"] == "kinemate-photo", health
    assert health["worker"]["default_size"] is None, health  # the photo's own
    pose = tmp_path / "moves.pose.json"
    generate_clip(1_000_104, num_frames=4, size=(128, 128)).pose_track().save(pose)
    res = client.submit(key, (EXAMPLES / "person.png").read_bytes(), pose.read_bytes(),
                        drv_name="moves.json", params={"steps": None, "size": None})
    assert res.status == 201, res.body
    job = client.wait(key, res.json()["id"], timeout=120)
    assert job["state"] == "succeeded", (job, photo_server.log())
    assert job["result"]["model"] == "kinemate-photo" and job["result"]["size"] == [256, 256]
    video = client.get(f"/api/v1/jobs/{job['id']}/result", key=key)
    assert video.status == 200, video.body
    (tmp_path / "out.mp4").write_bytes(video.body)
    info = probe_video(tmp_path / "out.mp4")
    assert (info.width, info.height) == (256, 256) and info.num_frames == 4
    assert verify(tmp_path / "out.mp4").model == "kinemate-photo"
    # a sampling option it does not have fails the job with a message saying so
    res = client.submit(key, (EXAMPLES / "person.png").read_bytes(), pose.read_bytes(),
                        drv_name="moves.json", params={"steps": 3, "size": None})
    assert res.status == 201, res.body
    job = client.wait(key, res.json()["id"], timeout=120)
    assert job["state"] == "failed" and "kinemate-tiny" in str(job.get("error")), job
