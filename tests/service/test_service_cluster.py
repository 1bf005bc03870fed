"""The service as a pool: one API process (no worker of its own), two `kinemate worker`
processes, a real PostgreSQL server and a real S3-compatible object store (moto's server),
all on loopback. Jobs run exactly once across workers, a SIGKILLed worker's job resumes on
the other from its saved step with the same frames, a PostgreSQL restart while clients
submit gives clear 503s and loses no accepted job, and /metrics reports the pool."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from service_helpers import BUNDLED_MODEL, S3Server, Server, WorkerProcess

from kinemate.service.store import open_store

BUCKET = "kinemate-media"
QUICK = {"steps": "1", "watermark": "false"}  # 4 frames at 64x64: the cheapest real job


@pytest.fixture(scope="module")
def pool(postgres, model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    s3 = S3Server(root).start()
    s3.client().create_bucket(Bucket=BUCKET)
    db = postgres.create_database()
    store = open_store(db)  # migrates the new database
    media = f"s3://{BUCKET}/jobs"
    weights = model_dir or BUNDLED_MODEL
    api = Server(root / "api", weights, ["--no-worker", "--db", db, "--media", media,
                                         "--max-upload-mb", "8"], env=s3.env)
    workers = [WorkerProcess(db, media, weights, root, ["--lease-seconds", "3"], env=s3.env,
                             name=f"w{i}").start() for i in range(2)]
    api.start(until=("none",))
    for w in workers:
        w.wait_ready(store)
    yield {"api": api, "workers": workers, "store": store, "s3": s3, "db": db,
           "postgres": postgres, "root": root, "weights": weights}
    for proc in [*workers, api]:  # all at once, then wait for each
        if proc.proc.poll() is None:
            proc.proc.terminate()
    for proc in [*workers, api]:
        proc.stop()
    s3.stop()


def _key(pool, **quota) -> str:
    return pool["store"].create_key("pool", **quota)[1]


def _frames(pool, key, job_id, tmp_path) -> np.ndarray:
    from kinemate.io import read_video

    res = pool["api"].client.get(f"/api/v1/jobs/{job_id}/result", key=key)
    assert res.status == 200, res.body
    path = tmp_path / f"{job_id}.mp4"
    path.write_bytes(res.body)
    return read_video(path)[0]


def test_jobs_run_once_across_workers_and_a_killed_worker_resumes_elsewhere(
        pool, tiny_inputs, tmp_path):
    client, store = pool["api"].client, pool["store"]
    key = _key(pool, max_active=20)
    ref, drv = tiny_inputs["reference"].read_bytes(), tiny_inputs["driving"].read_bytes()
    long_params = {"steps": "8", "watermark": "false"}
    long_id = client.submit(key, ref, tiny_inputs["driving16"].read_bytes(),
                            params=long_params).json()["id"]
    quick = [client.submit(key, ref, drv, params=QUICK) for _ in range(5)]
    assert all(r.status == 201 for r in quick), [r.body for r in quick]
    quick_ids = [r.json()["id"] for r in quick]

    # SIGKILL the worker running the long job once it has saved a step to the object store.
    s3 = pool["s3"].client()
    state_key = f"jobs/{long_id}/sampler-state.safetensors"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = store.get_job(long_id)
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=state_key).get("KeyCount", 0)
        if job.state == "running" and job.progress.get("step", 0) >= 2 and listed:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the long job never saved a step: {store.get_job(long_id)}")
    victim = next(w for w in pool["workers"] if f":{w.pid}:" in store.get_job(long_id).worker)
    victim.kill()
    killed_at = store.get_job(long_id).progress["step"]

    for job_id in quick_ids + [long_id]:
        done = client.wait(key, job_id, timeout=240)
        assert done["state"] == "succeeded", (done, [w.log() for w in pool["workers"]])
    long_job = store.get_job(long_id)
    assert long_job.fence == 2 and long_job.interruptions == 1 and long_job.attempts == 1
    assert long_job.result["resumed_at_step"] >= 1  # not from scratch
    assert killed_at >= 2
    assert long_job.result["file"] == "result-r2.mp4"  # published by the second run only
    for job_id in quick_ids:
        job = store.get_job(job_id)
        assert job.fence == 1 and job.result["file"] == "result-r1.mp4", job  # ran once
    names = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"jobs/{long_id}/")
             ["Contents"]}
    assert f"jobs/{long_id}/sampler-state.safetensors" not in names  # removed on success

    # Same inputs and seed: the same frames whichever worker ran it, resumed or not.
    first = _frames(pool, key, quick_ids[0], tmp_path)
    assert first.shape == (4, 64, 64, 3)
    for job_id in quick_ids[1:]:
        assert np.array_equal(_frames(pool, key, job_id, tmp_path), first)
    again = client.submit(key, ref, tiny_inputs["driving16"].read_bytes(),
                          params=long_params).json()["id"]
    assert client.wait(key, again, timeout=240)["state"] == "succeeded"
    assert np.array_equal(_frames(pool, key, again, tmp_path),
                          _frames(pool, key, long_id, tmp_path))

    # Deleting a job removes its objects.
    assert client.request("DELETE", f"/api/v1/jobs/{again}", key=key).status == 204
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"jobs/{again}/")["KeyCount"] == 0

    survivor = next(w for w in pool["workers"] if w is not victim)
    metrics = pool["api"].client.get("/metrics").body.decode()
    assert 'kinemate_jobs{state="succeeded"} 6.0' in metrics, metrics  # 7 ran, 1 deleted
    assert "kinemate_queue_depth 0.0" in metrics and "kinemate_store_up 1.0" in metrics
    assert 'kinemate_workers{state="ready"}' in metrics
    from service_helpers import Client

    worker_metrics = Client(f"http://127.0.0.1:{survivor.metrics_port}").get("/metrics")
    text = worker_metrics.body.decode()
    count = [line for line in text.splitlines() if line.startswith("kinemate_step_seconds_count")]
    assert count and float(count[0].split()[-1]) >= 1, text[:2000]
    assert "kinemate_queue_latency_seconds_count" in text
    victim.start().wait_ready(store)  # back for the next test


def test_postgres_restart_while_clients_submit_gives_503s_and_loses_nothing(
        pool, tiny_inputs):
    client, store, postgres = pool["api"].client, pool["store"], pool["postgres"]
    key = _key(pool, max_active=50)
    ref, drv = tiny_inputs["reference"].read_bytes(), tiny_inputs["driving"].read_bytes()
    answers: list = []
    stop = threading.Event()

    def submit() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            res = client.submit(key, ref, drv, params=QUICK,
                                headers={"Idempotency-Key": f"restart-{n}"})
            answers.append(res)
            time.sleep(0.15)

    thread = threading.Thread(target=submit)
    thread.start()
    time.sleep(1.0)
    postgres.restart(down_s=1.5)
    time.sleep(1.5)
    stop.set()
    thread.join(60)

    statuses = [r.status for r in answers]
    assert set(statuses) <= {201, 503}, [(r.status, r.body) for r in answers]
    refused = [r for r in answers if r.status == 503]
    assert refused, statuses  # the database was down for 1.5 s: some requests saw it
    for r in refused:
        assert "temporarily unavailable" in r.detail and "job database" in r.detail, r.detail
        assert r.headers.get("retry-after") == "5"
    accepted = [r.json()["id"] for r in answers if r.status == 201]
    assert len(accepted) >= 4, statuses
    for job_id in accepted:  # every accepted job is kept and runs
        assert client.wait(key, job_id, timeout=240)["state"] == "succeeded"
    assert store.count_active_jobs(store.authenticate(key).id) == 0
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and len(health["pool"]) == 2, health


def test_pool_fields_priority_and_model_are_checked(pool, tiny_inputs):
    client = pool["api"].client
    ref, drv = tiny_inputs["reference"].read_bytes(), tiny_inputs["driving"].read_bytes()
    plain = _key(pool)
    res = client.submit(plain, ref, drv, params={**QUICK, "priority": "5"})
    assert res.status == 403 and "priority 0 at most" in res.detail, res.body
    res = client.submit(plain, ref, drv, params={**QUICK, "model": "no-such-model"})
    assert res.status == 422 and "no worker serves a model named 'no-such-model'" in res.detail
    urgent = _key(pool, max_priority=9)
    res = client.submit(urgent, ref, drv, params={**QUICK, "priority": "9"})
    assert res.status == 201 and res.json()["params"]["priority"] == 9
    assert client.wait(urgent, res.json()["id"], timeout=120)["state"] == "succeeded"
