"""The HTTP API against a real `kinemate serve` on loopback running the tiny model."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from service_helpers import TINY_SIZE, model_defaults

from kinemate.io import probe_video, read_video


def test_job_runs_to_a_video_with_progress_and_downloads(server, client, key, tiny_inputs, tmp_path):
    ref = tiny_inputs["reference"].read_bytes()
    drv = tiny_inputs["driving"].read_bytes()
    res = client.submit(key, ref, drv, params={"steps": "2", "seed": "7"})
    assert res.status == 201, res.body
    job = res.json()
    assert job["state"] == "queued" and res.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert job["params"]["steps"] == 2 and job["params"]["seed"] == 7
    assert job["inputs"]["driving"]["frames"] == 4
    assert job["inputs"]["reference"]["width"] == 96

    seen = []
    done = client.wait(key, job["id"], predicate=lambda j: seen.append(j["progress"]) and False)
    assert done["state"] == "succeeded", done
    assert done["progress"]["fraction"] == 1.0
    assert any(p.get("total_steps") for p in seen + [done["progress"]]), seen

    res = client.get(f"/api/v1/jobs/{job['id']}/result", key=key)
    assert res.status == 200 and res.headers["content-type"] == "video/mp4"
    assert "attachment" in res.headers["content-disposition"]
    out = tmp_path / "result.mp4"
    out.write_bytes(res.body)
    frames, _fps = read_video(out)
    assert frames.shape == (4, 64, 64, 3)
    assert frames.std() > 1.0  # a picture, not a constant
    from kinemate.provenance import verify

    manifest = verify(out).manifest  # signed C2PA manifest naming the job's settings
    assert manifest.present and manifest.validation_state == "Valid"
    assert manifest.kinemate["settings"]["job"] == job["id"]
    assert manifest.kinemate["settings"]["seed"] == 7
    assert done["result"]["options"]["steps"] == 2 and done["result"]["options"]["seed"] == 7
    assert done["progress"]["total_steps"] == 2
    assert done["result"]["frames"] == 4 and done["result"]["provenance"] is True

    res = client.get(f"/api/v1/jobs/{job['id']}/grid", key=key)
    assert res.status == 200
    (tmp_path / "grid.mp4").write_bytes(res.body)
    info = probe_video(tmp_path / "grid.mp4")
    assert info.width > info.height  # panels side by side

    res = client.get(f"/api/v1/jobs/{job['id']}/preview", key=key)
    assert res.status == 200 and res.body.startswith(b"\x89PNG")
    assert res.headers["x-kinemate-control"] == "densepose"  # 'auto' with a DensePose model

    listed = client.get("/api/v1/jobs", key=key).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]

    # Deleting removes the record and every file of the job.
    assert client.request("DELETE", f"/api/v1/jobs/{job['id']}", key=key).status == 204
    assert client.get(f"/api/v1/jobs/{job['id']}", key=key).status == 404
    assert not (server.data_dir / "jobs" / job["id"]).exists()


def test_a_job_without_sampling_fields_runs_with_the_models_defaults(client, key, model_dir,
                                                                    tiny_inputs, tmp_path):
    """Sampling fields left out take the model's own defaults (its kinemate.json), as in the
    CLI and Python: the same job with no options set through HTTP, the CLI and animate_file
    gives byte-identical frames."""
    import numpy as np
    import torch

    from kinemate.pipeline import animate_file, load_pipeline
    from kinemate.service.params import SAMPLING_FIELDS

    expected = model_defaults(model_dir)
    assert (expected.steps, expected.guidance) != (25, 7.5)  # else the test could not tell
    res = client.submit(key, tiny_inputs["reference"].read_bytes(),
                        tiny_inputs["driving"].read_bytes(),
                        params={"steps": None, "watermark": "false"})
    assert res.status == 201, res.body
    job = res.json()
    assert not set(job["params"]) & set(SAMPLING_FIELDS), job["params"]  # only what was sent
    done = client.wait(key, job["id"])
    assert done["state"] == "succeeded", done
    assert done["result"]["options"] == expected.to_dict()
    assert done["progress"]["total_steps"] == expected.steps
    served = tmp_path / "served.mp4"
    served.write_bytes(client.get(f"/api/v1/jobs/{job['id']}/result", key=key).body)

    from kinemate.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server runs (OMP_NUM_THREADS=1)
    try:
        animate_file(tiny_inputs["reference"], tiny_inputs["driving"], tmp_path / "python.mp4",
                     pipe=load_pipeline(model_dir, model=None if model_dir else "kinemate-tiny"),
                     size=TINY_SIZE, progress=False)
        weights = (["--weights", str(model_dir)] if model_dir
                   else ["--model", "kinemate-tiny"])
        assert main(["animate", *weights, str(tiny_inputs["reference"]),
                     str(tiny_inputs["driving"]), "-o", str(tmp_path / "cli.mp4"),
                     "--size", TINY_SIZE, "--no-watermark", "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    frames = read_video(served)[0]
    assert frames.size and np.array_equal(frames, read_video(tmp_path / "python.mp4")[0])
    assert np.array_equal(frames, read_video(tmp_path / "cli.mp4")[0])


def test_openapi_docs_and_limits(client):
    res = client.get("/docs")  # offline pages only: the CDN-loading Swagger UI is not served
    assert res.status == 308 and res.headers["location"] == "/reference"
    spec = client.get("/openapi.json").json()
    for path in ("/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/result",
                 "/api/v1/jobs/{job_id}/cancel", "/api/v1/jobs/{job_id}/grid"):
        assert path in spec["paths"], path
    body = spec["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    fields = body["schema"]["properties"]
    assert {"reference", "driving", "steps", "guidance", "seed", "context_frames",
            "context_overlap", "closed_loop", "init_strength", "pad_to"} <= set(fields)
    assert fields["steps"]["type"] == "integer" and fields["steps"]["minimum"] == 1
    assert "default" not in fields["steps"]  # left out: the model's default
    strength = fields["init_strength"]
    assert strength["exclusiveMinimum"] == 0 and strength["maximum"] == 1
    limits = client.get("/api/v1/limits").json()
    assert limits["max_request_bytes"] == 8 * 2**20
    options = limits["options"]
    assert options["steps"]["ge"] == 1 and options["steps"]["le"] == limits["max_steps"]
    assert options["guidance"]["le"] == limits["max_guidance"]
    assert options["seed"]["ge"] == 0 and options["closed_loop"]["type"] == "boolean"
    assert options["steps"]["default"] is not None  # the loaded model's own default


def test_offline_api_reference_page_lists_every_route(client):
    """/reference: the OpenAPI description as a static page (no script, nothing fetched from
    elsewhere), so the API is documented on a machine without internet."""
    spec = client.get("/openapi.json").json()
    res = client.get("/reference")
    assert res.status == 200 and res.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in res.headers["content-security-policy"]
    page = res.body.decode()
    assert "<script" not in page.lower() and "https://" not in page
    for path, item in spec["paths"].items():
        for method in item:
            assert f'id="{method}{path}"' in page, (method, path)
    create = page[page.index('id="post/api/v1/jobs"'):]
    create = create[:create.index("</div>")]
    for field in ("reference", "driving", "steps", "seed", "context_frames", "idempotency-key"):
        assert f"<code>{field}</code>" in create, field
    assert "multipart/form-data" in create and "<code>201</code>" in create


def test_cancel_queued_and_running_jobs(server, client, key, tiny_inputs):
    ref = tiny_inputs["reference"].read_bytes()
    long = client.submit(key, ref, tiny_inputs["driving16"].read_bytes(),
                         params={"steps": "40"}).json()  # would take minutes if not cancelled
    queued = client.submit(key, ref, tiny_inputs["driving"].read_bytes()).json()
    res = client.post(f"/api/v1/jobs/{queued['id']}/cancel", key=key)
    assert res.status == 200
    assert res.json()["state"] == "cancelled"  # queued jobs stop at once
    client.wait(key, long["id"], states=(), predicate=lambda j: j["progress"].get("step"))
    res = client.post(f"/api/v1/jobs/{long['id']}/cancel", key=key)
    assert res.status == 200 and res.json()["cancel_requested"]
    final = client.wait(key, long["id"], timeout=60)
    assert final["state"] == "cancelled" and final["progress"]["step"] < 40
    files = sorted(p.name for p in (server.data_dir / "jobs" / long["id"]).iterdir())
    assert files == ["driving.mp4", "reference.png"], files  # no partial outputs left
    res = client.get(f"/api/v1/jobs/{queued['id']}/result", key=key)
    assert res.status == 409 and "cancelled" in res.detail


def test_jobs_are_private_to_their_key(server, client, key, tiny_inputs):
    other = server.new_key("other")
    job = client.submit(key, tiny_inputs["reference"].read_bytes(),
                        tiny_inputs["driving"].read_bytes()).json()
    for path in ("", "/result", "/grid", "/preview"):
        res = client.get(f"/api/v1/jobs/{job['id']}{path}", key=other)
        assert res.status == 404, (path, res.status)
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", key=other).status == 404
    assert client.get("/api/v1/jobs", key=other).json()["jobs"] == []
    assert client.get(f"/api/v1/jobs/{job['id']}", key=key).status == 200
    client.wait(key, job["id"])


def test_key_commands_create_list_revoke(server, client):
    def kinemate(*args):
        return subprocess.run([sys.executable, "-m", "kinemate", "serve", *args,
                               "--data-dir", str(server.data_dir)],
                              capture_output=True, text=True, timeout=60)

    made = kinemate("keys", "create", "--name", "alice")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("km_") and len(secret) > 40
    assert client.get("/api/v1/jobs", key=secret).status == 200
    listed = kinemate("keys", "list")
    assert "alice" in listed.stdout and secret not in listed.stdout
    db = (server.data_dir / "kinemate.db").read_bytes()
    assert secret.encode() not in db  # stored hashed only
    assert kinemate("keys", "revoke", "--name", "alice").returncode == 0
    res = client.get("/api/v1/jobs", key=secret)
    assert res.status == 401 and "revoked" in res.detail
    assert kinemate("keys", "revoke", "--name", "alice").returncode == 2  # none left


def test_per_key_limit_and_idempotent_duplicates(server, client, tiny_inputs):
    key = server.new_key("limits")
    ref = tiny_inputs["reference"].read_bytes()
    drv = tiny_inputs["driving16"].read_bytes()
    slow = {"steps": "40"}  # these jobs stay active for the whole test (cancelled at the end)
    # Concurrent duplicate submissions with one Idempotency-Key make exactly one job.
    results = []

    def submit():
        results.append(client.submit(key, ref, drv, params=slow,
                                     headers={"Idempotency-Key": "same-1"}))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = [r.status for r in results]
    assert statuses.count(201) == 1 and statuses.count(200) == 5, statuses
    assert len({r.json()["id"] for r in results}) == 1
    # Up to 4 queued + running jobs per key (the default), then 429.
    statuses = [client.submit(key, ref, drv, params=slow).status for _ in range(4)]
    assert statuses == [201, 201, 201, 429], statuses
    res = client.submit(key, ref, drv, params=slow)
    assert res.status == 429 and "limit" in res.detail
    assert client.submit(server.new_key("another"), ref, tiny_inputs["driving"].read_bytes(),
                         params={"steps": "1"}).status == 201  # limits are per key
    jobs = client.get("/api/v1/jobs", key=key).json()["jobs"]
    assert len(jobs) == 4
    for job in jobs:
        client.post(f"/api/v1/jobs/{job['id']}/cancel", key=key)
    for job in jobs:
        assert client.wait(key, job["id"], timeout=60)["state"] == "cancelled"
    assert client.submit(key, ref, tiny_inputs["driving"].read_bytes(),
                         params={"steps": "1"}).status == 201  # slots are free again


def test_odd_file_names_are_kept_for_display_only(server, client, key, tiny_inputs):
    names = ["../../../etc/passwd", "..\\..\\boot.ini", "фото 🧍‍♀️.png", "x\u202egnp.exe",
             "a" * 600 + ".png", "con", "\u0000nul.png"]
    ids = []
    for name in names:
        res = client.submit(key, tiny_inputs["reference"].read_bytes(),
                            tiny_inputs["driving"].read_bytes(), ref_name=name,
                            drv_name=name + ".mp4")
        assert res.status == 201, (name, res.body)
        job = res.json()
        ids.append(job["id"])
        shown = job["inputs"]["reference"]["name"]
        assert "/" not in shown and "\\" not in shown and "\x00" not in shown
        assert len(shown) <= 200
        client.post(f"/api/v1/jobs/{job['id']}/cancel", key=key)
        files = sorted(p.name for p in (server.data_dir / "jobs" / job["id"]).iterdir())
        assert files == ["driving.mp4", "reference.png"], files
    assert "фото 🧍‍♀️.png" in [j["inputs"]["reference"]["name"] for j in
                                client.get("/api/v1/jobs", key=key).json()["jobs"]]
    assert not (server.data_dir / "etc").exists()


def test_defaults_bind_to_loopback():
    from kinemate.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8000


def _stick_figure_track(path, frames=3):
    """A hand-made pose JSON (kinemate format): a standing person raising an arm."""
    from kinemate.pose import PoseTrack

    track = PoseTrack.empty(frames, 128, 128, fps=10)
    body = {0: (64, 20), 1: (64, 36), 2: (50, 38), 3: (44, 56), 4: (40, 72), 5: (78, 38),
            6: (84, 56), 7: (88, 72), 8: (56, 74), 9: (55, 96), 10: (54, 118), 11: (72, 74),
            12: (73, 96), 13: (74, 118), 14: (60, 17), 15: (68, 17), 16: (56, 19), 17: (72, 19)}
    for f in range(frames):
        for k, (x, y) in body.items():
            if k == 4:
                y -= 20 * f  # the right wrist rises
            track.body[f, k] = (x, y, 0.9)
    track.confidence[:] = 1.0
    track.save(path)
    return path


def test_pose_control_is_not_run_on_a_densepose_model(server, client, key, tiny_inputs,
                                                      tmp_path):
    """A DensePose model given skeleton maps would return a still, blurred photo: once the
    worker has its model, such a job is refused at submission (an accepted job must be able
    to run) with a message naming the model's control kind."""
    pose_json = _stick_figure_track(tmp_path / "moves.pose.json").read_bytes()
    deadline = time.monotonic() + 120
    while client.get("/api/v1/health").json()["worker"].get("control_kind") is None:
        assert time.monotonic() < deadline, "the worker did not load its model"
        time.sleep(0.2)
    bad = client.submit(key, tiny_inputs["reference"].read_bytes(), pose_json,
                        drv_name="moves.json", params={"control": "densepose"})
    assert bad.status == 422 and "DensePose video" in bad.detail
    res = client.submit(key, tiny_inputs["reference"].read_bytes(), pose_json,
                        drv_name="moves.json", params={"control": "pose"})
    assert res.status == 422 and "control kind 'densepose'" in res.detail, res.body


def test_pose_json_driving_with_preview(pose_server, tiny_inputs, tmp_path):
    client, key = pose_server.client, pose_server.new_key()
    pose_json = _stick_figure_track(tmp_path / "moves.pose.json").read_bytes()
    res = client.submit(key, tiny_inputs["reference"].read_bytes(), pose_json,
                        drv_name="moves.json", params={"control": "pose"})
    assert res.status == 201, res.body
    job = res.json()
    assert job["inputs"]["driving"]["kind"] == "pose" and job["inputs"]["driving"]["frames"] == 3
    preview = client.get(f"/api/v1/jobs/{job['id']}/preview", key=key)
    assert preview.status == 200, preview.body
    assert preview.headers["x-kinemate-control"] == "pose"
    (tmp_path / "preview.png").write_bytes(preview.body)
    from kinemate.io import read_image

    image = read_image(tmp_path / "preview.png")
    assert image.shape[:2] == (64, 64)
    assert (image.max(axis=2) > 60).mean() > 0.01  # coloured limbs on black
    done = client.wait(key, job["id"])
    assert done["state"] == "succeeded", done


def test_unloadable_model_is_reported_and_jobs_are_refused(tmp_path, tiny_inputs):
    from service_helpers import Server

    (tmp_path / "not-a-model").mkdir()
    server = Server(tmp_path / "data", tmp_path / "not-a-model").start(until=("error",))
    try:
        health = server.client.get("/api/v1/health").json()
        assert health["worker"]["state"] == "error"
        assert "neither a kinemate model folder" in health["worker"]["error"]
        res = server.client.submit(server.new_key(), tiny_inputs["reference"].read_bytes(),
                                   tiny_inputs["driving"].read_bytes())
        assert res.status == 503 and "failed to load" in res.detail
    finally:
        server.stop()


def test_formats_are_recognised_by_content_not_name(server, client, key, tiny_inputs, tmp_path):
    """Every supported container and image format is accepted whatever its name says."""
    import io
    import subprocess

    from PIL import Image

    from kinemate.io import ffmpeg_exe

    codecs = {"webm": ["-c:v", "libvpx", "-b:v", "200k"], "mov": ["-c:v", "libx264"],
              "avi": ["-c:v", "mjpeg"], "gif": [], "mkv": ["-c:v", "libx264"]}
    photo = Image.open(tiny_inputs["reference"])
    for i, (ext, args) in enumerate(codecs.items()):
        clip = tmp_path / f"clip.{ext}"
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i",
                        str(tiny_inputs["driving"]), *args, str(clip)], check=True, timeout=120)
        image_format = ["JPEG", "WEBP", "BMP", "TIFF", "PNG"][i]
        buf = io.BytesIO()
        photo.save(buf, image_format)
        res = client.submit(key, buf.getvalue(), clip.read_bytes(), ref_name="photo.gif",
                            drv_name="notes.txt")  # names that lie
        assert res.status == 201, (ext, image_format, res.body)
        job = res.json()
        assert job["inputs"]["driving"]["frames"] == 4, (ext, job["inputs"])
        assert job["inputs"]["reference"]["kind"] == image_format.lower()
        client.post(f"/api/v1/jobs/{job['id']}/cancel", key=key)
        client.wait(key, job["id"])


def test_a_job_that_cannot_run_fails_with_a_clear_message(pose_server, tmp_path):
    """Pose control needs a person in the photo: a photo of noise makes the job fail (not the
    server), with a message that names no server paths."""
    server, client, key = pose_server, pose_server.client, pose_server.new_key()
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), np.uint8)).save(
        buf, "PNG")
    pose_json = _stick_figure_track(tmp_path / "moves.pose.json").read_bytes()
    res = client.submit(key, buf.getvalue(), pose_json, drv_name="moves.json",
                        params={"control": "pose"})
    assert res.status == 201, res.body
    job = client.wait(key, res.json()["id"])
    assert job["state"] == "failed", job
    assert "person" in job["error"] and str(server.data_dir) not in job["error"], job["error"]
    assert "--no-retarget" not in job["error"]  # CLI words are translated for the API
    res = client.get(f"/api/v1/jobs/{job['id']}/result", key=key)
    assert res.status == 409 and "failed" in res.detail
    assert client.get("/api/v1/health").json()["worker"]["state"] == "ready"
