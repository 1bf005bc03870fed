"""Pool mechanics of a worker, in process with real stores: a run that lost its lease never
publishes (fencing) and leaves the new run's files alone, a run past its time limit fails,
a database outage pauses a worker without losing its job, and the model cache keeps the
loaded models within its budget, least recently used out first."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from kinemate.service.config import ServiceConfig
from kinemate.service.modelcache import ModelCache, model_bytes
from kinemate.service.store import open_store
from kinemate.service.worker import Worker


def _wait(store, job_id, states=("succeeded", "failed", "cancelled"), timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get_job(job_id)
        if job.state in states:
            return job
        time.sleep(0.02)
    raise AssertionError(f"{job_id} stuck in {store.get_job(job_id)}")


@pytest.fixture()
def pool(db_url, tmp_path):
    config = ServiceConfig(data_dir=tmp_path, db_url=db_url, poll_seconds=0.05,
                           lease_seconds=1.0)
    store = open_store(db_url)
    owner = store.create_key("k")[0].id
    return config, store, owner


class _StateRunner:
    """Writes a resumable state file as it goes, like the pipeline runner."""

    state_file = "state.bin"

    def __init__(self, hold: threading.Event | None = None):
        self.hold, self.discarded = hold, []

    def discard(self, job_dir: Path) -> None:
        self.discarded.append(job_dir)
        (job_dir / self.state_file).unlink(missing_ok=True)

    def __call__(self, job, job_dir: Path, report) -> dict:
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / self.state_file).write_text(f"run {job.fence}")
        if self.hold is not None:
            while not self.hold.is_set():  # a stalled process: no reports, no result
                time.sleep(0.01)
        report({"stage": "denoising", "step": 1})
        return {"file": f"result-{job.fence}.txt"}


def test_a_run_that_lost_its_lease_neither_publishes_nor_discards(pool):
    config, store, owner = pool
    store.create_job(f"{1:032x}", owner, {}, {}, max_active=9)
    hold = threading.Event()
    runner = _StateRunner(hold)
    stalled = Worker(store, config, runner)
    stalled._heartbeat = lambda *a: None  # its heartbeats never arrive (paused, cut off)
    job = store.claim_next(stalled.id, config.lease_seconds)
    thread = threading.Thread(target=stalled.run_job, args=(job,))
    thread.start()
    time.sleep(config.lease_seconds + 0.3)
    assert store.requeue_stale(max_attempts=3) == [job.id]  # another worker's recovery
    second = store.claim_next("other-worker", 60)
    assert second.fence == job.fence + 1
    hold.set()  # the stalled run wakes up, reports (told to stop), never publishes
    thread.join(10)
    now = store.get_job(job.id)
    assert now.state == "running" and now.worker == "other-worker" and now.result == {}
    assert runner.discarded == []  # the new run's state file is not its to remove
    assert store.finish(job.id, "other-worker", "succeeded", fence=second.fence)


def test_a_run_past_its_time_limit_fails(pool):
    config, store, owner = pool

    def slow(job, job_dir, report):
        for step in range(1000):
            report({"stage": "denoising", "step": step})
            time.sleep(0.02)
        return {}

    store.create_job(f"{2:032x}", owner, {}, {}, max_active=9, time_limit=0.3)
    store.create_job(f"{3:032x}", owner, {}, {}, max_active=9)
    worker = Worker(store, config, slow)
    worker.start()
    try:
        failed = _wait(store, f"{2:032x}")
        assert failed.state == "failed" and "time limit of 0.3 s" in failed.error
        _wait(store, f"{3:032x}", states=("running",))
        time.sleep(0.5)
        assert store.get_job(f"{3:032x}").state == "running"  # no limit: still going
        store.request_cancel(f"{3:032x}", owner)
        assert _wait(store, f"{3:032x}").state == "cancelled"
    finally:
        worker.stop()


def test_a_worker_waits_out_a_database_restart(postgres, tmp_path):
    """PostgreSQL goes away mid-job: the job keeps running, its result is recorded once the
    database is back, and the worker takes the next job."""
    db = postgres.create_database()
    config = ServiceConfig(data_dir=tmp_path, db_url=db, poll_seconds=0.05, lease_seconds=6.0)
    store = open_store(db)
    owner = store.create_key("k")[0].id
    inside = threading.Event()
    release = threading.Event()

    def runner(job, job_dir, report):
        if job.id == f"{1:032x}":
            inside.set()
            release.wait(20)
        report({"stage": "denoising", "step": 1})  # the database may be down: not fatal
        return {"file": "result.mp4"}

    for i in (1, 2):
        store.create_job(f"{i:032x}", owner, {}, {}, max_active=9)
    worker = Worker(store, config, runner)
    worker.start()
    try:
        assert inside.wait(20)
        postgres.stop()
        release.set()
        time.sleep(1.0)  # the job ends while the database is down
        postgres.start()
        first, second = _wait(store, f"{1:032x}"), _wait(store, f"{2:032x}")
    finally:
        worker.stop()
    assert (first.state, first.fence, first.interruptions) == ("succeeded", 1, 0)
    assert second.state == "succeeded"


def test_model_cache_keeps_the_budget_least_recently_used_out_first():
    import torch

    @dataclasses.dataclass
    class Pipe:  # a pipeline holds its networks as attributes
        denoiser: torch.nn.Module
        vae: torch.nn.Module

    sizes = {"a": 1000, "b": 2000, "c": 500}
    loaded = []

    def load(name):
        loaded.append(name)
        shared = torch.nn.Linear(1, 1, bias=False)
        return Pipe(torch.nn.Sequential(torch.nn.Linear(sizes[name], 1, bias=False), shared),
                    shared)

    one = model_bytes(load("c"))
    assert one == (500 + 1) * 4  # each tensor once, though two attributes hold it
    loaded.clear()
    cache = ModelCache(load, budget_bytes=(1000 + 2000 + 2) * 4)
    a = cache.get("a")
    cache.get("b")
    assert cache.get("a") is a and loaded == ["a", "b"]  # a hit: not loaded again
    cache.get("c")  # over budget: b, the least recently used, goes
    assert cache.loaded() == ["a", "c"] and cache.evictions == 1
    cache.get("b")  # a is now the oldest
    assert cache.loaded() == ["c", "b"] and loaded == ["a", "b", "c", "b"]
    assert cache.total_bytes <= cache.budget
    tiny = ModelCache(load, budget_bytes=0)
    tiny.get("a")
    tiny.get("b")
    assert tiny.loaded() == ["b"]  # the one in use stays, alone above the budget


def test_key_quota_commands_on_postgres(postgres):
    import subprocess
    import sys

    db = postgres.create_database()

    def kinemate(*args):
        run = subprocess.run([sys.executable, "-m", "kinemate", "serve", "keys", *args,
                              "--db", db], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return run

    made = kinemate("create", "--name", "studio", "--max-active", "10", "--weight", "2",
                    "--max-priority", "5")
    secret = made.stdout.strip()
    assert "postgresql://" in made.stderr and secret not in made.stderr
    store = open_store(db)
    key = store.authenticate(secret)
    assert (key.max_active, key.weight, key.max_priority) == (10, 2.0, 5)
    assert "max_active=10 weight=2 max_priority=5" in kinemate("list").stdout
    assert "max_active=3 weight=2 max_priority=1" in kinemate(
        "set", key.id, "--max-active", "3", "--max-priority", "1").stdout
    assert store.authenticate(secret).max_active == 3
