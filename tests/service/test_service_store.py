"""The SQLite job store: atomic claims, limits, idempotency, leases and crash recovery."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from kinemate.service.store import LimitReached, SQLiteJobStore
from kinemate.service.worker import worker_is_dead


@pytest.fixture()
def store(tmp_path):
    return SQLiteJobStore(tmp_path / "kinemate.db")


def _job(store, owner, i, **kw):
    return store.create_job(f"{i:032x}", owner, {"steps": 1}, {"reference": {}}, max_active=kw.pop(
        "max_active", 100), **kw)


def test_wal_mode_and_hashed_keys(store, tmp_path):
    record, secret = store.create_key("alice")
    mode = store._conn().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert store.authenticate(secret).id == record.id
    assert store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.authenticate("km_" + record.id + "_guess") is None
    assert store.authenticate("") is None
    raw = (tmp_path / "kinemate.db").read_bytes() + (tmp_path / "kinemate.db-wal").read_bytes()
    assert secret.encode() not in raw
    assert store.revoke_key("alice") is None  # a name is not an id
    assert store.authenticate(secret).id == record.id
    assert store.revoke_key(record.id).id == record.id
    assert store.authenticate(secret) is None


def test_each_job_is_claimed_once_under_concurrency(tmp_path):
    store = SQLiteJobStore(tmp_path / "kinemate.db")
    owner = store.create_key("k")[0].id
    for i in range(40):
        _job(store, owner, i)
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(n):
        own = SQLiteJobStore(tmp_path / "kinemate.db")  # own connection, like another process
        while (job := own.claim_next(f"w{n}", 30)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(f"{i:032x}" for i in range(40))  # all, none twice


def test_claims_in_fifo_order_and_other_processes_see_them(tmp_path):
    store = SQLiteJobStore(tmp_path / "kinemate.db")
    owner = store.create_key("k")[0].id
    for i in range(3):
        _job(store, owner, i)
    code = ("import sys; from kinemate.service.store import SQLiteJobStore; "
            "print(SQLiteJobStore(sys.argv[1]).claim_next('other', 30).id)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "kinemate.db")],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"{0:032x}", out.stderr
    assert store.claim_next("me", 30).id == f"{1:032x}"
    assert store.get_job(f"{0:032x}").worker == "other"


def test_per_key_limit_and_idempotency(store):
    a = store.create_key("a")[0].id
    b = store.create_key("b")[0].id
    for i in range(2):
        _job(store, a, i, max_active=2)
    with pytest.raises(LimitReached):
        _job(store, a, 9, max_active=2)
    _job(store, b, 10, max_active=2)  # limits are per key
    store.request_cancel(f"{0:032x}", a)
    _job(store, a, 11, max_active=2)  # a cancelled job frees a slot
    job, created = _job(store, b, 20, idempotency_key="x")
    again, created2 = _job(store, b, 21, idempotency_key="x")
    assert created and not created2 and again.id == job.id
    assert store.get_job(f"{21:032x}") is None


def test_leases_requeue_dead_workers_and_give_up_after_max_attempts(store):
    """A run whose server was killed for lack of memory counts as an attempt; any other end
    of a run by the server stopping is an interruption (see test_service_resilience.py)."""
    owner = store.create_key("k")[0].id
    _job(store, owner, 1)
    job = store.claim_next("w1", lease_seconds=0.2)
    assert store.set_progress(job.id, "w1", {"step": 1}) is False
    assert store.requeue_stale(max_attempts=3) == []  # lease still valid
    time.sleep(0.3)
    assert store.requeue_stale(max_attempts=3) == [job.id]
    assert store.finish(job.id, "w1", "succeeded") is False  # w1 lost it
    assert store.set_progress(job.id, "w1", {}) is True  # and is told to stop
    job = store.claim_next("w2", 60, oom_kills=0)
    assert (job.attempts, job.interruptions) == (1, 1)  # the expired lease was not the job's fault
    oom = lambda mark: True  # noqa: E731 - the host killed a process for lack of memory
    assert store.requeue_stale(max_attempts=3, worker_is_dead=lambda w: w == "w2",
                               oom_killed=oom) == [job.id]
    job = store.claim_next("w3", 60, oom_kills=0)
    assert job.attempts == 2
    dead = lambda w: True  # noqa: E731
    assert store.requeue_stale(max_attempts=3, worker_is_dead=dead, oom_killed=oom) == [job.id]
    job = store.claim_next("w4", 60, oom_kills=0)
    assert job.attempts == 3
    assert store.requeue_stale(max_attempts=3, worker_is_dead=dead, oom_killed=oom) == []
    failed = store.get_job(job.id)
    assert failed.state == "failed"
    assert "ran out of memory running this job 3 times" in failed.error


def test_only_finished_jobs_of_the_owner_can_be_deleted(store):
    owner = store.create_key("k")[0].id
    _job(store, owner, 1)
    assert store.delete_job(f"{1:032x}", owner) is False  # queued
    job = store.claim_next("w", 60)
    assert store.delete_job(job.id, owner) is False  # running
    store.finish(job.id, "w", "succeeded")
    assert store.delete_job(job.id, "someone-else") is False
    assert store.delete_job(job.id, owner) is True
    assert store.get_job(job.id) is None


def test_cancel_running_job_is_seen_by_its_worker(store):
    owner = store.create_key("k")[0].id
    _job(store, owner, 1)
    job = store.claim_next("w", 60)
    assert store.request_cancel(job.id, owner).cancel_requested
    assert store.set_progress(job.id, "w", {"step": 2}) is True
    assert store.request_cancel(job.id, "someone-else") is None


def test_worker_is_dead_judges_local_processes():
    host = socket.gethostname()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert worker_is_dead(f"{host}:{proc.pid}:abcd")
    assert not worker_is_dead(f"{host}:{os.getppid()}:abcd")
    assert not worker_is_dead(f"another-host:{proc.pid}:abcd")  # judged by its lease only
    assert worker_is_dead(f"{host}:{os.getpid()}:old", me=f"{host}:{os.getpid()}:new")
    assert not worker_is_dead("garbage")


def test_idempotency_lookup_is_indexed_and_per_owner(store):
    a = store.create_key("a")[0].id
    b = store.create_key("b")[0].id
    job, _ = _job(store, a, 1, idempotency_key="retry-1")
    _job(store, a, 2)
    assert store.find_job_by_idempotency_key(a, "retry-1").id == job.id
    assert store.find_job_by_idempotency_key(b, "retry-1") is None  # another owner's token
    assert store.find_job_by_idempotency_key(a, "retry-2") is None
    plan = " ".join(r[-1] for r in store._conn().execute(
        "EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?",
        (a, "retry-1")))
    assert "USING INDEX" in plan and "SCAN" not in plan, plan


def test_active_jobs_are_counted_per_owner_from_an_index(store):
    a = store.create_key("a")[0].id
    b = store.create_key("b")[0].id
    for i in range(5):
        _job(store, a, i)
    _job(store, b, 9)
    assert store.count_active_jobs(a) == 5 and store.count_active_jobs(b) == 1
    running = store.claim_next("w", 60)  # the oldest: one of a's
    assert store.count_active_jobs(a) == 5  # running counts as active
    store.finish(running.id, "w", "succeeded")
    store.request_cancel(f"{1:032x}", a)
    assert store.count_active_jobs(a) == 3
    assert store.count_active_jobs("nobody") == 0
    plan = " ".join(r[-1] for r in store._conn().execute(
        "EXPLAIN QUERY PLAN SELECT count(*) FROM jobs WHERE owner = ? "
        "AND state IN ('queued', 'running')", (a,)))
    assert "jobs_owner_state" in plan and "SCAN" not in plan, plan


def test_an_existing_database_gets_the_new_index(tmp_path):
    """A database made before the index existed is migrated when it is opened."""
    path = tmp_path / "kinemate.db"
    old = SQLiteJobStore(path)
    owner = old.create_key("k")[0].id
    _job(old, owner, 1, idempotency_key="x")
    old._conn().execute("DROP INDEX jobs_owner_state")
    old.close()

    store = SQLiteJobStore(path)
    names = {r[0] for r in store._conn().execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'")}
    assert "jobs_owner_state" in names
    assert store.count_active_jobs(owner) == 1
    assert store.find_job_by_idempotency_key(owner, "x").id == f"{1:032x}"
