"""An accepted job is never lost: SIGKILL the server mid-job, restart it, the job finishes."""

from __future__ import annotations

import sqlite3

from kinemate.io import read_video


def test_sigkill_mid_job_then_restart_finishes_the_job(server, tiny_inputs, tmp_path):
    key = server.new_key("crash")
    client = server.client
    res = client.submit(key, tiny_inputs["reference"].read_bytes(),
                        tiny_inputs["driving16"].read_bytes(), params={"steps": "4"})
    assert res.status == 201, res.body
    job_id = res.json()["id"]
    queued_too = client.submit(key, tiny_inputs["reference"].read_bytes(),
                               tiny_inputs["driving"].read_bytes()).json()["id"]
    before = {row[0] for row in sqlite3.connect(server.data_dir / "kinemate.db").execute(
        "SELECT id FROM jobs")}
    # Wait until the pipeline is inside this job (progress beyond 'starting'), then kill -9.
    client.wait(key, job_id, states=(), timeout=180, predicate=lambda j: j["state"] == "running"
                and j["progress"].get("stage") not in (None, "starting"))
    server.kill()
    with sqlite3.connect(server.data_dir / "kinemate.db") as db:
        state, attempts = db.execute("SELECT state, attempts FROM jobs WHERE id = ?",
                                     (job_id,)).fetchone()
    assert (state, attempts) == ("running", 1)  # died mid-job; its lease names a dead process
    assert not (server.data_dir / "jobs" / job_id / "result.mp4").exists()  # nothing half-written

    server.restart()  # same data folder and port, a new process
    done = client.wait(key, job_id, timeout=180)
    assert done["state"] == "succeeded", (done, server.log())
    assert (done["attempts"], done["interruptions"]) == (1, 1)  # the kill was not the job's fault
    assert client.wait(key, queued_too, timeout=120)["state"] == "succeeded"
    res = client.get(f"/api/v1/jobs/{job_id}/result", key=key)
    assert res.status == 200
    (tmp_path / "out.mp4").write_bytes(res.body)
    frames, _ = read_video(tmp_path / "out.mp4")
    assert frames.shape == (16, 64, 64, 3)
    assert "requeued 1 job" in server.log()
    after = {row[0] for row in sqlite3.connect(server.data_dir / "kinemate.db").execute(
        "SELECT id FROM jobs")}
    assert before <= after  # every accepted job survived the crash


def test_two_servers_on_one_data_dir_share_the_queue(server, model_dir, tiny_inputs):
    """Several workers on one database: every job runs exactly once, both workers take jobs."""
    from service_helpers import Server

    other = Server(server.data_dir, model_dir, ["--max-upload-mb", "8"]).start()
    try:
        key = server.new_key("two-workers")
        ids = []
        for i in range(4):  # the per-key limit
            via = (server if i % 2 else other).client  # either server accepts jobs
            res = via.submit(key, tiny_inputs["reference"].read_bytes(),
                             tiny_inputs["driving"].read_bytes(), params={"steps": "2"})
            assert res.status == 201, res.body
            ids.append(res.json()["id"])
        for job_id in ids:
            job = server.client.wait(key, job_id, timeout=180)
            assert job["state"] == "succeeded" and job["attempts"] == 1, job
        with sqlite3.connect(server.data_dir / "kinemate.db") as db:
            workers = {row[0].rsplit(":", 1)[0] for row in db.execute(
                f"SELECT worker FROM jobs WHERE id IN ({','.join('?' * len(ids))})", ids)}
        assert len(workers) == 2, workers  # host:pid of both processes
    finally:
        other.stop()
