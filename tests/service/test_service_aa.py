"""The service offering Animate Anyone: a real ``kinemate serve --weights`` on the tiny golden
weights in the Moore-AnimateAnyone release layout, jobs driven by a pose JSON and by a dance
video run to success with skeleton control."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from service_helpers import Server

AA = Path(os.environ.get("KINEMATE_AA_GOLDEN_DIR",
                         Path(__file__).resolve().parents[2].parent / "shared" / "reference"
                         / "animate-anyone" / "golden"))


@pytest.fixture(scope="module")
def aa_server(tmp_path_factory):
    weights = AA / "weights"
    if not weights.is_dir():
        pytest.skip(f"Animate Anyone golden weights not found at {weights}")
    srv = Server(tmp_path_factory.mktemp("aa-service-data"), weights).start()
    yield srv
    srv.stop()


def _stick_figure_track(path: Path, frames: int = 3) -> Path:
    """A hand-made pose JSON (kinemate format): a standing person raising an arm."""
    from kinemate.pose import PoseTrack

    track = PoseTrack.empty(frames, 128, 128, fps=10)
    body = {0: (64, 20), 1: (64, 36), 2: (50, 38), 3: (44, 56), 4: (40, 72), 5: (78, 38),
            6: (84, 56), 7: (88, 72), 8: (56, 74), 9: (55, 96), 10: (54, 118), 11: (72, 74),
            12: (73, 96), 13: (74, 118), 14: (60, 17), 15: (68, 17), 16: (56, 19), 17: (72, 19)}
    for f in range(frames):
        for k, (x, y) in body.items():
            track.body[f, k] = (x, y - (20 * f if k == 4 else 0), 0.9)
    track.confidence[:] = 1.0
    track.save(path)
    return path


def test_health_and_limits_name_the_family(aa_server):
    """The server says which model it runs: the Animate Anyone release, skeleton control,
    the official sampling defaults."""
    client = aa_server.client
    health = client.get("/api/v1/health").json()
    assert health["worker"]["state"] == "ready", health
    assert health["worker"]["model"] == "animate-anyone", health
    assert health["worker"]["control_kind"] == "openpose", health
    assert health["worker"]["default_size"] == [512, 768], health
    limits = client.get("/api/v1/limits").json()
    defaults = {name: spec.get("default") for name, spec in limits["options"].items()}
    assert defaults["steps"] == 30 and defaults["guidance"] == 3.5, defaults
    assert defaults["context_frames"] == 24 and defaults["context_overlap"] == 4, defaults


def test_pose_json_job_succeeds(aa_server, tiny_inputs, tmp_path):
    """Photo + pose JSON, control left on auto: skeleton maps (the family's kind), one step,
    a video of the track's frame count at the asked size."""
    from kinemate.io import probe_video

    client, key = aa_server.client, aa_server.new_key()
    pose_json = _stick_figure_track(tmp_path / "moves.pose.json").read_bytes()
    res = client.submit(key, tiny_inputs["reference"].read_bytes(), pose_json,
                        drv_name="moves.json", params={"size": "64x96"})
    assert res.status == 201, res.body
    job_id = res.json()["id"]
    preview = client.get(f"/api/v1/jobs/{job_id}/preview", key=key)
    assert preview.status == 200, preview.body
    assert preview.headers["x-kinemate-control"] == "pose"
    job = client.wait(key, job_id, timeout=300)
    assert job["state"] == "succeeded", (job, aa_server.log())
    assert job["result"]["model"] == "animate-anyone", job["result"]
    assert job["result"]["control"] == "pose", job["result"]
    video = client.get(f"/api/v1/jobs/{job['id']}/result", key=key)
    assert video.status == 200, video.body
    (tmp_path / "out.mp4").write_bytes(video.body)
    info = probe_video(tmp_path / "out.mp4")
    assert (info.num_frames, info.width, info.height) == (3, 64, 96)


def test_dance_video_job_succeeds(aa_server, tmp_path):
    """Photo + dance video: pose extracted, retargeted and drawn by the worker."""
    from kinemate.cli.animate import example_inputs
    from kinemate.io import open_video, probe_video, write_video

    photo, dance = example_inputs()
    frames = []
    with open_video(dance) as reader:
        for frame in reader:
            frames.append(frame)
            if len(frames) == 3:
                break
    clip = tmp_path / "dance3.mp4"
    write_video(clip, frames, 25)
    client, key = aa_server.client, aa_server.new_key()
    res = client.submit(key, Path(photo).read_bytes(), clip.read_bytes(),
                        params={"size": "64x96", "control": "pose"})
    assert res.status == 201, res.body
    job = client.wait(key, res.json()["id"], timeout=300)
    assert job["state"] == "succeeded", (job, aa_server.log())
    video = client.get(f"/api/v1/jobs/{job['id']}/result", key=key)
    assert video.status == 200, video.body
    (tmp_path / "out.mp4").write_bytes(video.body)
    info = probe_video(tmp_path / "out.mp4")
    assert (info.num_frames, info.width, info.height) == (3, 64, 96)


def test_densepose_control_is_refused(aa_server, tiny_inputs):
    """The family follows skeleton maps only: a DensePose job is refused (or fails) with a
    message naming the model's control kind, never run into a blurred still."""
    client, key = aa_server.client, aa_server.new_key()
    res = client.submit(key, tiny_inputs["reference"].read_bytes(),
                        tiny_inputs["driving"].read_bytes(), params={"control": "densepose"})
    if res.status == 422:
        message = res.detail
    else:
        assert res.status == 201, res.body
        job = client.wait(key, res.json()["id"], timeout=120)
        assert job["state"] == "failed", job
        message = job["error"]
    assert "openpose" in message or "skeleton" in message.lower(), message
