"""The job store, on SQLite and on a real PostgreSQL server (the same tests, parametrised by
the ``db_url`` fixture): atomic claims, limits, idempotency, leases, fencing, scheduling,
migrations and crash recovery."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from kinemate.service.store import LimitReached, SQLiteJobStore, open_store
from kinemate.service.worker import worker_is_dead


@pytest.fixture()
def store(db_url):
    store = open_store(db_url)
    yield store
    store.close()


def _is_pg(store) -> bool:
    return not isinstance(store, SQLiteJobStore)


def _plan(store, sql: str, params: tuple) -> str:
    """The query plan of ``sql``: SQLite's EXPLAIN QUERY PLAN, PostgreSQL's EXPLAIN (with
    sequential scans priced out, as on a large table)."""
    if _is_pg(store):
        conn = store._conn()
        conn.execute("SET enable_seqscan = off")
        try:
            return " ".join(r["QUERY PLAN"] for r in conn.execute(
                "EXPLAIN " + sql.replace("?", "%s"), params))
        finally:
            conn.execute("RESET enable_seqscan")
    return " ".join(r[-1] for r in store._conn().execute("EXPLAIN QUERY PLAN " + sql, params))


def _job(store, owner, i, **kw):
    return store.create_job(f"{i:032x}", owner, {"steps": 1}, {"reference": {}}, max_active=kw.pop(
        "max_active", 100), **kw)


def test_schema_and_hashed_keys(store, tmp_path):
    record, secret = store.create_key("alice")
    assert store.schema_version() == 2
    if _is_pg(store):
        raw = json.dumps([dict(r) for r in store._read("SELECT * FROM api_keys").fetchall()])
    else:
        assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        raw = ((tmp_path / "kinemate.db").read_bytes()
               + (tmp_path / "kinemate.db-wal").read_bytes()).decode("latin-1")
    assert record.id in raw and secret not in raw
    assert store.authenticate(secret).id == record.id
    assert store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.authenticate("km_" + record.id + "_guess") is None
    assert store.authenticate("") is None
    assert store.revoke_key("alice") is None  # a name is not an id
    assert store.authenticate(secret).id == record.id
    assert store.revoke_key(record.id).id == record.id
    assert store.authenticate(secret) is None


def test_each_job_is_claimed_once_under_concurrency(db_url):
    store = open_store(db_url)
    owner = store.create_key("k")[0].id
    for i in range(40):
        _job(store, owner, i)
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(n):
        own = open_store(db_url)  # own connection, like another process
        while (job := own.claim_next(f"w{n}", 30)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(f"{i:032x}" for i in range(40))  # all, none twice


def test_claims_in_fifo_order_and_other_processes_see_them(db_url):
    store = open_store(db_url)
    owner = store.create_key("k")[0].id
    for i in range(3):
        _job(store, owner, i)
    code = ("import sys; from kinemate.service.store import open_store; "
            "print(open_store(sys.argv[1]).claim_next('other', 30).id)")
    out = subprocess.run([sys.executable, "-c", code, db_url],
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
    plan = _plan(store, "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?",
                 (a, "retry-1"))
    if _is_pg(store):
        assert "Index" in plan and "Seq Scan" not in plan, plan
    else:
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
    plan = _plan(store, "SELECT count(*) FROM jobs WHERE owner = ? "
                 "AND state IN ('queued', 'running')", (a,))
    if _is_pg(store):  # the planner's choice among the owner's indexes, never a scan
        assert "Index" in plan and "Seq Scan" not in plan, plan
    else:
        assert "jobs_owner_state" in plan and "SCAN" not in plan, plan


def test_an_existing_database_gets_the_new_index(db_url):
    """A database whose index was dropped gets it back when it is opened."""
    old = open_store(db_url)
    owner = old.create_key("k")[0].id
    _job(old, owner, 1, idempotency_key="x")
    old._conn().execute("DROP INDEX jobs_owner_state")
    old.close()

    store = open_store(db_url)
    if _is_pg(store):
        names = {r["indexname"] for r in store._read(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'").fetchall()}
    else:
        names = {r[0] for r in store._conn().execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'")}
    assert "jobs_owner_state" in names
    assert store.count_active_jobs(owner) == 1
    assert store.find_job_by_idempotency_key(owner, "x").id == f"{1:032x}"


def test_a_worker_that_lost_its_lease_cannot_publish(store):
    """Fencing: every claim is a new run; the old run's progress, renewal, release and
    result are refused once the job was requeued and claimed again."""
    owner = store.create_key("k")[0].id
    _job(store, owner, 1)
    first = store.claim_next("w1", lease_seconds=0.1)
    time.sleep(0.2)
    assert store.requeue_stale(max_attempts=3) == [first.id]
    second = store.claim_next("w1", lease_seconds=60)  # the same worker id, a new run
    assert second.fence == first.fence + 1
    assert store.renew_lease(first.id, "w1", 60, fence=first.fence) is False
    assert store.set_progress(first.id, "w1", {"step": 9}, fence=first.fence) is True  # stop
    assert store.finish(first.id, "w1", "succeeded", result={"file": "old"},
                        fence=first.fence) is False
    assert store.release(first.id, "w1", fence=first.fence) is False
    assert store.set_progress(second.id, "w1", {"step": 1}, fence=second.fence) is False
    assert store.finish(second.id, "w1", "succeeded", result={"file": "new"},
                        fence=second.fence) is True
    done = store.get_job(first.id)
    assert (done.state, done.result, done.progress) == ("succeeded", {"file": "new"}, {"step": 1})


def test_schedule_priority_then_fair_share_then_age(store):
    a = store.create_key("a", max_priority=5)[0].id
    b = store.create_key("b")[0].id
    c = store.create_key("c", weight=2.0)[0].id
    for i in range(4):
        _job(store, a, i)  # a's four jobs are the oldest
    _job(store, b, 10)
    _job(store, c, 20)
    _job(store, c, 21)
    _job(store, b, 11, priority=0)
    _job(store, a, 5, priority=3)  # the newest, but urgent
    order = []
    while (job := store.claim_next("w", 60)) is not None:
        order.append((job.owner, int(job.id, 16)))
        store.finish(job.id, "w", "succeeded")
    assert order[0] == (a, 5)  # priority first
    # then fair share: per key, jobs started in the last hour / weight (a: 1 already, so b
    # and c go first; c, of weight 2, twice), ties to the oldest job
    assert [o for o, _ in order[1:]] == [b, c, c, a, b, a, a, a], order
    assert [i for o, i in order if o == a] == [5, 0, 1, 2, 3]  # each key's jobs in order


def test_workers_claim_only_the_models_they_serve(store):
    owner = store.create_key("k")[0].id
    _job(store, owner, 1, model="photo")
    _job(store, owner, 2)
    _job(store, owner, 3, model="magicanimate")
    assert store.claim_next("w", 60, models=["magicanimate"]).id == f"{2:032x}"
    assert store.claim_next("w", 60, models=["magicanimate"]).id == f"{3:032x}"
    assert store.claim_next("w", 60, models=["magicanimate"]) is None
    assert store.claim_next("w", 60, models=["photo", "x"]).model == "photo"


def test_per_key_quota_overrides_the_server_limit(store):
    small = store.create_key("small", max_active=1)[0]
    big = store.create_key("big", max_active=3)[0]
    _job(store, small.id, 1, max_active=2)
    with pytest.raises(LimitReached) as caught:
        _job(store, small.id, 2, max_active=2)
    assert caught.value.limit == 1
    for i in range(3):
        _job(store, big.id, 10 + i, max_active=2)  # above the server's 2
    updated = store.set_key_quota(small.id, max_active=2, weight=3.0)
    assert (updated.max_active, updated.weight, updated.max_priority) == (2, 3.0, 0)
    _job(store, small.id, 2, max_active=2)
    assert store.set_key_quota(small.id, clear_max_active=True).max_active is None
    assert store.set_key_quota("nobody", weight=1.0) is None
    from kinemate.errors import ConfigError
    with pytest.raises(ConfigError, match="weight"):
        store.create_key("bad", weight=0)


def test_workers_registry_and_job_counts(store):
    store.register_worker("h1:10:aa", device="cpu", state="ready", info={"models": ["x"]})
    store.register_worker("h2:11:bb", device="cuda:0", state="loading", info={})
    store.register_worker("h1:10:aa", device="cpu", state="busy", info={"models": ["x"]},
                          current_job="j1")
    workers = {w.id: w for w in store.list_workers()}
    assert workers["h1:10:aa"].state == "busy" and workers["h1:10:aa"].current_job == "j1"
    assert workers["h2:11:bb"].host == "h2" and workers["h1:10:aa"].info == {"models": ["x"]}
    assert len(store.list_workers(seen_within=60)) == 2
    store.remove_worker("h2:11:bb")
    assert [w.id for w in store.list_workers()] == ["h1:10:aa"]
    owner = store.create_key("k")[0].id
    for i in range(3):
        _job(store, owner, i)
    store.claim_next("w", 60)
    counts = store.job_counts()
    assert counts == {"queued": 2, "running": 1, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert 0 <= store.oldest_queued_age() < 60


def test_a_database_from_before_migrations_is_brought_up_to_date(tmp_path):
    """A SQLite file of the first release (no schema_version, no interruptions column) is
    adopted as version 1 and migrated to version 2, its jobs kept."""
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL,
                secret_hash TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL);
            CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                owner TEXT NOT NULL REFERENCES api_keys(id), state TEXT NOT NULL,
                params TEXT NOT NULL, inputs TEXT NOT NULL, idempotency_key TEXT,
                created_at REAL NOT NULL, updated_at REAL NOT NULL, started_at REAL,
                finished_at REAL, worker TEXT, lease_expires REAL,
                attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,
                progress TEXT NOT NULL DEFAULT '{}', error TEXT,
                result TEXT NOT NULL DEFAULT '{}', UNIQUE (owner, idempotency_key));
            INSERT INTO api_keys VALUES ('k1', 'old', 'x', 1.0, NULL);
            INSERT INTO jobs (id, owner, state, params, inputs, created_at, updated_at)
                VALUES ('j1', 'k1', 'queued', '{}', '{}', 1.0, 1.0);""")
    store = SQLiteJobStore(path)
    assert store.schema_version() == 2
    job = store.claim_next("w", 60)
    assert (job.id, job.fence, job.interruptions, job.priority) == ("j1", 1, 0, 0)
    assert [k.weight for k in store.list_keys()] == [1.0]


def test_concurrent_start_ups_migrate_once(db_url):
    """Processes that open a new database at the same moment apply each migration once."""
    code = ("import sys; from kinemate.service.store import open_store; "
            "print(open_store(sys.argv[1]).schema_version())")
    procs = [subprocess.Popen([sys.executable, "-c", code, db_url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [o.strip() for o, _ in outs] == ["2"] * 3, outs
    store = open_store(db_url)
    rows = store._read("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert [r["version"] for r in rows] == [1, 2]


def test_postgres_restart_is_a_clear_error_then_reconnects(postgres):
    from kinemate.service.store import StoreUnavailable

    store = open_store(postgres.create_database())
    owner = store.create_key("k")[0].id
    _job(store, owner, 1)
    postgres.stop()
    try:
        with pytest.raises(StoreUnavailable, match="job database") as caught:
            store.count_active_jobs(owner)
        assert postgres.url().split("@")[1].split("/")[0] in str(caught.value)
    finally:
        postgres.start()
    assert store.count_active_jobs(owner) == 1  # a fresh connection, nothing lost
    assert store.claim_next("w", 60).id == f"{1:032x}"


def test_a_transaction_that_fails_changes_nothing(store):
    owner = store.create_key("k", max_active=1)[0].id
    _job(store, owner, 1)
    with pytest.raises(LimitReached):
        _job(store, owner, 2)
    with pytest.raises(RuntimeError):
        with store._tx() as db:
            db.execute("UPDATE jobs SET priority = 7")
            raise RuntimeError("a bug between two statements")
    assert store.get_job(f"{1:032x}").priority == 0
    assert store.all_job_ids() == {f"{1:032x}"}
