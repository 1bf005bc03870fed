"""The service under stress from its own life: uploads that are cheap to send and expensive to
check, cancellation while a job is prepared, restarts (SIGKILL, SIGTERM) in the middle of a
job, clients that give up, previews that cannot be made. Real servers on loopback, real
files through ffmpeg."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from service_helpers import TINY_SIZE, Server, multipart

from kinemate.io.video import ffmpeg_exe

BIG_FRAMES, BIG_SIDE = 1500, 1024  # the frame limit; 60 s at 25 fps (the duration limit)


# -- inputs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_video(tmp_path_factory) -> bytes:
    """A tiny MP4 (a few dozen KB) whose frames take seconds to decode: 1500 frames of
    1024x1024, one solid colour, H.264 at the highest compression."""
    path = tmp_path_factory.mktemp("big") / "big.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"color=c=gray:s={BIG_SIDE}x{BIG_SIDE}:r=25",
                    "-frames:v", str(BIG_FRAMES), "-c:v", "libx264", "-preset", "ultrafast",
                    "-crf", "51", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path.read_bytes()


@pytest.fixture(scope="module")
def lying_video(tmp_path_factory) -> bytes:
    """An AVI (MJPEG) whose container and first frames are sound but whose frames after the
    fifth are blanked out: it declares 40 frames, only 5 decode."""
    path = tmp_path_factory.mktemp("lie") / "lie.avi"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc=s=64x64:r=25", "-frames:v", "40", "-c:v", "mjpeg",
                    str(path)], check=True)
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xd8"]
    ends = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xd9"]
    assert len(starts) == len(ends) == 40
    for a, b in zip(starts[5:], ends[5:]):
        data[a:b + 2] = bytes(b + 2 - a)
    return bytes(data)


def _jobs_in_db(server: Server) -> dict[str, tuple]:
    with sqlite3.connect(server.data_dir / "kinemate.db") as db:
        return {r[0]: r[1:] for r in db.execute(
            "SELECT id, state, attempts, interruptions, error FROM jobs")}


def _log_since(server: Server, offset: int) -> str:
    return server.log_path.read_bytes()[offset:].decode("utf-8", "replace")


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


# -- 1. acceptance is bounded by the upload's header; the worker decodes every frame ----------
def test_a_video_is_accepted_from_its_header_and_fully_decoded_by_the_worker(
        client, key, tiny_inputs, lying_video):
    ref = tiny_inputs["reference"].read_bytes()
    res = client.submit(key, ref, lying_video, drv_name="clip.avi")
    assert res.status == 201, res.body  # its container and first frame are sound
    job = res.json()
    assert job["inputs"]["driving"]["frames"] == 40  # as the container declares
    done = client.wait(key, job["id"], timeout=180)
    assert done["state"] == "failed", done
    assert done["error"] == ("the driving video declares 40 frames but only 5 decode — it is "
                             "damaged or truncated; export it again and upload the complete "
                             "file"), done["error"]


def test_a_big_video_is_checked_by_the_worker_where_it_can_be_cancelled(
        server, client, key, tiny_inputs, big_video):
    res = client.submit(key, tiny_inputs["reference"].read_bytes(), big_video)
    assert res.status == 201, res.body
    job = res.json()
    assert job["inputs"]["driving"]["frames"] == BIG_FRAMES
    assert (job["inputs"]["driving"]["width"], job["inputs"]["driving"]["height"]) == (
        BIG_SIDE, BIG_SIDE)
    client.wait(key, job["id"], states=(), timeout=300,
                predicate=lambda j: j["progress"].get("stage") == "checking")
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", key=key).status == 200
    done = client.wait(key, job["id"], timeout=120)
    assert done["state"] == "cancelled", done
    assert done["progress"]["stage"] == "checking"  # stopped there, before any sampling
    assert done["progress"]["frames"] < BIG_FRAMES


# -- 2. cancel while a job is being prepared ---------------------------------------------------
def test_cancel_while_the_controls_are_prepared_stops_the_job_there(
        server, client, key, tiny_inputs, big_video):
    res = client.submit(key, tiny_inputs["reference"].read_bytes(), big_video)
    assert res.status == 201, res.body
    job_id = res.json()["id"]
    client.wait(key, job_id, states=(), timeout=300,
                predicate=lambda j: j["progress"].get("stage") == "preparing")
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", key=key).status == 200
    done = client.wait(key, job_id, timeout=120)
    assert done["state"] == "cancelled", done
    # stopped while preparing: no sampler step ran, nothing was written
    assert done["progress"]["stage"] == "preparing" and done["progress"]["step"] == 0, done
    assert done["progress"]["frames"] < BIG_FRAMES
    files = sorted(p.name for p in (server.data_dir / "jobs" / job_id).iterdir())
    assert files == ["driving.mp4", "reference.png"], files


# -- 3 + 5. restarts are not attempts; spill folders do not outlive their process --------------
def test_sigkill_and_sigterm_mid_preparation(tmp_path, model_dir, tiny_inputs, big_video):
    if model_dir is None:
        pytest.skip("needs the golden DensePose model (its controls are spilled at once)")
    temp_root = tmp_path / "tmp"  # the server's system temp folder
    temp_root.mkdir()
    server = Server(tmp_path / "data", model_dir, ["--max-upload-mb", "8"],
                    env={"TMPDIR": str(temp_root)}).start()
    client = server.client
    key = server.new_key("restarts")

    def spills(pid: int) -> list[Path]:
        return sorted(temp_root.glob(f"kinemate-controls-{pid}-*"))

    def preparing_controls(job_id: str) -> None:
        client.wait(key, job_id, states=(), timeout=300, predicate=lambda j: j["state"] ==
                    "running" and j["progress"].get("part") == "controls")

    try:
        res = client.submit(key, tiny_inputs["reference"].read_bytes(), big_video)
        assert res.status == 201, res.body
        job_id = res.json()["id"]
        preparing_controls(job_id)
        first = server.proc.pid
        assert len(spills(first)) == 1  # the control frames being spilled
        server.kill()  # SIGKILL: nothing can clean up
        assert _jobs_in_db(server)[job_id][:2] == ("running", 1)
        assert len(spills(first)) == 1
        # what a run killed while writing leaves in the job folder
        unfinished = server.data_dir / "jobs" / job_id / "result.kinemate-tmp-0badf00d.mp4"
        unfinished.write_bytes(b"half a video")

        offset = server.log_path.stat().st_size
        server.restart()
        assert spills(first) == []  # removed at start-up: its process is dead
        assert f"kinemate-controls-{first}-" in _log_since(server, offset)
        preparing_controls(job_id)  # requeued and running again
        assert not unfinished.exists()  # removed before the rerun
        job = client.get(f"/api/v1/jobs/{job_id}", key=key).json()
        assert (job["attempts"], job["interruptions"]) == (1, 1)  # the kill was no attempt

        second = server.proc.pid
        assert len(spills(second)) == 1
        server.stop()  # SIGTERM: the job goes back to the queue, its scratch files go away
        assert server.proc.returncode is not None
        assert spills(second) == []
        assert _jobs_in_db(server)[job_id] == ("queued", 0, 2, None)
        log = _log_since(server, offset)
        assert "Traceback" not in log, log
        assert f"job {job_id}: interrupted by shutdown; back in the queue" in log

        server.restart()
        client.post(f"/api/v1/jobs/{job_id}/cancel", key=key)
        assert client.wait(key, job_id, timeout=120)["state"] == "cancelled"
    finally:
        server.stop()


def test_a_worker_stuck_at_shutdown_hands_its_job_back(tmp_path):
    """A run that does not reach a progress report before shutdown ends (a long sampler
    step) is handed back by the stopping worker, and this process's spill folders go."""
    import tempfile
    import threading

    from kinemate.service.config import ServiceConfig
    from kinemate.service.store import SQLiteJobStore
    from kinemate.service.worker import Worker

    config = ServiceConfig(data_dir=tmp_path, poll_seconds=0.05)
    store = SQLiteJobStore(config.db_path)
    owner = store.create_key("k")[0].id
    store.create_job(f"{1:032x}", owner, {}, {}, max_active=9)
    started, release = threading.Event(), threading.Event()
    spill = Path(tempfile.mkdtemp(prefix=f"kinemate-controls-{os.getpid()}-"))

    def runner(job, job_dir, report):
        started.set()
        release.wait(30)  # no report until the test lets go
        return {}

    worker = Worker(store, config, runner)
    worker.start()
    try:
        assert started.wait(30)
        worker.stop(timeout=0.5)
        job = store.get_job(f"{1:032x}")
        assert (job.state, job.attempts, job.interruptions) == ("queued", 0, 1)
        assert not spill.exists()
    finally:
        release.set()
        if spill.exists():
            spill.rmdir()


# -- 3. what a dead worker's job is blamed on -------------------------------------------------
def test_requeue_blames_memory_only_when_the_host_killed_for_memory(tmp_path):
    from kinemate.service.store import SQLiteJobStore
    from kinemate.service.worker import oom_kill_count, oom_killed_since

    store = SQLiteJobStore(tmp_path / "kinemate.db")
    owner = store.create_key("k")[0].id
    store.create_job(f"{1:032x}", owner, {}, {}, max_active=9)
    dead = lambda worker: True  # noqa: E731
    for n in range(1, 4):  # killed from outside three times: never counted
        job = store.claim_next("w", 60, oom_kills=7)
        store.set_progress(job.id, "w", {"stage": "denoising", "step": 2, "total_steps": 25})
        assert store.requeue_stale(max_attempts=1, worker_is_dead=dead, oom_killed=lambda m: False,
                                   max_interruptions=4) == [job.id]
        job = store.get_job(job.id)
        assert (job.state, job.attempts, job.interruptions) == ("queued", 0, n)
    store.claim_next("w", 60)
    assert store.requeue_stale(max_attempts=1, worker_is_dead=dead, oom_killed=lambda m: False,
                               max_interruptions=4) == []
    job = store.get_job(f"{1:032x}")
    assert job.state == "failed" and job.error.startswith(
        "the server stopped 4 times while running this job (the last time before it reported "
        "progress) without running out of memory")
    # killed for memory: an attempt, and the message says so and where
    store.create_job(f"{2:032x}", owner, {}, {}, max_active=9)
    job = store.claim_next("w", 60, oom_kills=7)
    store.set_progress(job.id, "w", {"stage": "denoising", "step": 3, "total_steps": 25})
    assert store.requeue_stale(max_attempts=1, worker_is_dead=dead,
                               oom_killed=lambda mark: mark == 7) == []
    job = store.get_job(job.id)
    assert job.state == "failed" and job.error == (
        "the server ran out of memory running this job once (the system stopped it; the last "
        "time while denoising (step 3 of 25)) — try fewer frames or a smaller size")
    # the host's count: a number on Linux, compared with the mark a lease recorded
    count = oom_kill_count()
    if count is not None:
        assert not oom_killed_since(count) and oom_killed_since(count - 1)
    assert not oom_killed_since(None)


def test_release_cancels_a_job_its_owner_cancelled(tmp_path):
    from kinemate.service.store import SQLiteJobStore

    store = SQLiteJobStore(tmp_path / "kinemate.db")
    owner = store.create_key("k")[0].id
    store.create_job(f"{1:032x}", owner, {}, {}, max_active=9)
    job = store.claim_next("w", 60)
    store.request_cancel(job.id, owner)
    assert store.release(job.id, "other") is False  # not its worker
    assert store.release(job.id, "w") is True
    assert store.get_job(job.id).state == "cancelled"


def test_a_database_from_before_gets_the_new_columns(tmp_path):
    from kinemate.service.store import SQLiteJobStore

    path = tmp_path / "kinemate.db"
    SQLiteJobStore(path).close()
    with sqlite3.connect(path) as db:  # as an older kinemate left it
        db.execute("ALTER TABLE jobs DROP COLUMN interruptions")
        db.execute("ALTER TABLE jobs DROP COLUMN lease_oom_kills")
    store = SQLiteJobStore(path)
    owner = store.create_key("k")[0].id
    store.create_job(f"{1:032x}", owner, {}, {}, max_active=9)
    job = store.claim_next("w", 60, oom_kills=3)
    assert store.release(job.id, "w") and store.get_job(job.id).interruptions == 1


# -- 4. a client that gave up gets no job -------------------------------------------------------
def test_a_client_that_disconnects_while_its_upload_is_checked_gets_no_job(
        server, key, tiny_inputs, tmp_path):
    from kinemate.io import write_image

    # a photo that takes a moment to check (16 megapixels, a small PNG)
    ramp = np.linspace(0, 255, 4000, dtype=np.float32).astype(np.uint8)
    write_image(tmp_path / "big.png", np.dstack([np.tile(ramp, (4000, 1))] * 3))
    body, ctype = multipart([
        ("reference", "big.png", (tmp_path / "big.png").read_bytes(), "image/png"),
        ("driving", "dance.mp4", tiny_inputs["driving"].read_bytes(), "video/mp4"),
        ("steps", "1"), ("size", TINY_SIZE)])
    head = (f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    jobs_dir = server.data_dir / "jobs"
    before = set(os.listdir(jobs_dir))
    offset = server.log_path.stat().st_size
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body)
        # the job folder appears once the whole request was read: the checks run now
        folder = _wait_for(lambda: set(os.listdir(jobs_dir)) - before, 60, "the job folder",
                           poll=0.005)
    # ... and the client has gone
    _wait_for(lambda: "no job was created" in _log_since(server, offset), 60, "the log line")
    log = _log_since(server, offset)
    assert "the client disconnected before its job was accepted; no job was created" in log, log
    assert not (jobs_dir / folder.pop()).exists()
    assert server.client.get("/api/v1/jobs", key=key).json()["jobs"] == []


# -- 6. disconnects, failed previews, malformed HTTP ----------------------------------------
def test_a_client_that_disconnects_mid_upload_is_one_log_line(server, key, tiny_inputs):
    body, ctype = multipart([
        ("reference", "photo.png", tiny_inputs["reference"].read_bytes(), "image/png"),
        ("driving", "dance.mp4", tiny_inputs["driving"].read_bytes(), "video/mp4")])
    head = (f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    offset = server.log_path.stat().st_size
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body[: len(body) // 2])
    _wait_for(lambda: "no job was created" in _log_since(server, offset), 60, "the log line")
    time.sleep(0.5)  # anything else it would log about it
    log = _log_since(server, offset)
    assert "the client disconnected while sending the request; no job was created" in log, log
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log


def test_a_failed_preview_is_cached_like_a_made_one(server, client, key, tiny_inputs):
    res = client.submit(key, tiny_inputs["reference"].read_bytes(),
                        tiny_inputs["driving"].read_bytes())
    assert res.status == 201, res.body
    job_id = res.json()["id"]
    client.wait(key, job_id, timeout=180)
    driving = server.data_dir / "jobs" / job_id / "driving.mp4"
    good = driving.read_bytes()
    driving.write_bytes(b"\x00" * 4096)  # the input is damaged after acceptance
    try:
        first = client.get(f"/api/v1/jobs/{job_id}/preview", key=key)
    finally:
        driving.write_bytes(good)
    assert first.status == 422 and first.detail.startswith("no pose preview"), first.body
    again = client.get(f"/api/v1/jobs/{job_id}/preview", key=key)  # not made again
    assert (again.status, again.detail) == (first.status, first.detail)
    assert (server.data_dir / "jobs" / job_id / "preview-error.json").is_file()
    assert not (server.data_dir / "jobs" / job_id / "preview.png").exists()


@pytest.mark.parametrize("raw", [
    b"HELLO\r\n\r\n",  # no request line
    b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",  # a header without colon
    b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n",
])
def test_malformed_http_gets_a_json_error(server, raw):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert b"content-type: application/json" in head.lower(), answer
    import json

    assert "not valid HTTP/1.1" in json.loads(body)["detail"]
