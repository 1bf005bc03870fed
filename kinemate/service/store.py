"""Persistent job store: API keys and jobs.

:class:`JobStore` is the small interface the rest of the service uses; :class:`SQLiteJobStore`
is the embedded default (one file, WAL mode, durable commits). Every state change is a
single atomic statement, written so that it maps one to one onto PostgreSQL for several
workers on several machines:

* claiming work — SQLite: ``UPDATE jobs SET state='running', worker=?, ... WHERE id =
  (SELECT id FROM jobs WHERE state='queued' ORDER BY seq LIMIT 1) AND state='queued'
  RETURNING *`` inside ``BEGIN IMMEDIATE``; PostgreSQL: the same UPDATE with the sub-select
  ending in ``FOR UPDATE SKIP LOCKED`` (two workers never get the same job and never wait
  on each other);
* the per-key limit on active jobs — an ``INSERT ... SELECT ... WHERE (SELECT count(*) ...)
  < limit`` in one transaction (PostgreSQL: the same in a transaction that first takes
  ``pg_advisory_xact_lock(hashtext(owner))`` so two inserts of one key serialise);
* crash recovery — a running job carries a lease (``lease_expires``) that its worker renews;
  :meth:`JobStore.requeue_stale` puts jobs whose lease ran out, or whose worker process is
  known to be dead, back into the queue. A run that ended because its server stopped (a
  restart, SIGTERM or SIGKILL) is an *interruption* and does not count as an attempt; a run
  that killed its server by exhausting memory does (the job fails after ``max_attempts``).
  :meth:`JobStore.release` hands a job back to the queue on a graceful stop.

API keys are stored as SHA-256 digests of the secret (the secret is 256 random bits, so a
slow password hash would add nothing); the secret is shown once, when it is created.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Callable, Protocol

from kinemate.errors import ConfigError

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled")
KEY_PREFIX = "km_"


class LimitReached(Exception):
    """The key already has as many queued + running jobs as it may."""


@dataclasses.dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclasses.dataclass(frozen=True)
class Job:
    id: str
    owner: str
    state: str
    params: dict
    inputs: dict
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    lease_expires: float | None = None
    attempts: int = 0  # runs that count: not those interrupted by the server stopping
    cancel_requested: bool = False
    progress: dict = dataclasses.field(default_factory=dict)
    error: str | None = None
    result: dict = dataclasses.field(default_factory=dict)
    idempotency_key: str | None = None
    interruptions: int = 0  # runs that ended because the server stopped (not the job's fault)


class JobStore(Protocol):
    """What the service needs from a database. Implementations must make each method atomic."""

    # keys
    def create_key(self, name: str) -> tuple[KeyRecord, str]: ...
    def list_keys(self) -> list[KeyRecord]: ...
    def revoke_key(self, key_id: str) -> KeyRecord | None: ...
    def revoke_keys_named(self, name: str) -> list[KeyRecord]: ...
    def authenticate(self, secret: str) -> KeyRecord | None: ...

    # jobs, API side
    def create_job(
        self, job_id: str, owner: str, params: dict, inputs: dict, *,
        max_active: int, idempotency_key: str | None = None,
    ) -> tuple[Job, bool]: ...
    def get_job(self, job_id: str, owner: str | None = None) -> Job | None: ...
    def list_jobs(self, owner: str, limit: int = 100) -> list[Job]: ...
    def find_job_by_idempotency_key(self, owner: str, key: str) -> Job | None: ...
    def count_active_jobs(self, owner: str) -> int: ...
    def request_cancel(self, job_id: str, owner: str) -> Job | None: ...
    def delete_job(self, job_id: str, owner: str) -> bool: ...
    def all_job_ids(self) -> set[str]: ...

    # jobs, worker side
    def claim_next(self, worker: str, lease_seconds: float, *,
                   oom_kills: int | None = None) -> Job | None: ...
    def renew_lease(self, job_id: str, worker: str, lease_seconds: float, *,
                    oom_kills: int | None = None) -> bool: ...
    def release(self, job_id: str, worker: str) -> bool: ...
    def set_progress(self, job_id: str, worker: str, progress: dict) -> bool: ...
    def finish(
        self, job_id: str, worker: str, state: str, *, result: dict | None = None,
        error: str | None = None,
    ) -> bool: ...
    def requeue_stale(
        self, *, max_attempts: int, worker_is_dead: Callable[[str], bool] | None = None,
        oom_killed: Callable[[int | None], bool] | None = None, max_interruptions: int = 10,
    ) -> list[str]: ...


def owner_only(path: Path) -> None:
    """Give an existing file (0600) or folder (0700) to its owner alone, whatever mode it was
    created with (an operator's data folder made beforehand, an older kinemate's database)."""
    mode = 0o700 if path.is_dir() else 0o600
    if stat.S_IMODE(path.stat().st_mode) == mode:
        return
    try:
        path.chmod(mode)
    except PermissionError as exc:
        raise ConfigError(f"cannot make {path} private to its owner (mode {mode:o}): {exc.strerror}; "
                          f"run kinemate as the user owning it, or chown it to that user") from exc


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  REAL NOT NULL,
    revoked_at  REAL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    owner            TEXT NOT NULL REFERENCES api_keys(id),
    state            TEXT NOT NULL CHECK (state IN
                         ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    params           TEXT NOT NULL,
    inputs           TEXT NOT NULL,
    idempotency_key  TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    worker           TEXT,
    lease_expires    REAL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress         TEXT NOT NULL DEFAULT '{}',
    error            TEXT,
    result           TEXT NOT NULL DEFAULT '{}',
    interruptions    INTEGER NOT NULL DEFAULT 0,
    lease_oom_kills  INTEGER,
    UNIQUE (owner, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_owner_state ON jobs (owner, state);
"""
# Added to ``jobs`` after its first version; a database from before gets them when opened.
_ADDED_COLUMNS = ("interruptions INTEGER NOT NULL DEFAULT 0", "lease_oom_kills INTEGER")


class SQLiteJobStore:
    """:class:`JobStore` on one SQLite file in WAL mode (safe across threads and processes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Owner-only from its creation: SQLite creates the -wal and -shm files with the mode
        # of the database file.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        for path in (self.path, self.path.with_name(self.path.name + "-wal"),
                     self.path.with_name(self.path.name + "-shm")):
            if path.exists():
                owner_only(path)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)
        self._add_missing_columns()

    # -- connections -------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # an accepted job survives power loss
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    class _Tx:
        def __init__(self, conn: sqlite3.Connection, immediate: bool):
            self.conn, self.immediate = conn, immediate

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self, immediate: bool = True) -> "SQLiteJobStore._Tx":
        return self._Tx(self._conn(), immediate)

    def _add_missing_columns(self) -> None:
        """Columns added since a database file was created (CREATE TABLE IF NOT EXISTS leaves
        an existing table as it is)."""
        conn = self._conn()
        have = {r["name"] for r in conn.execute("PRAGMA table_info(jobs)")}
        for column in _ADDED_COLUMNS:
            if column.split()[0] not in have:
                try:
                    conn.execute(f"ALTER TABLE jobs ADD COLUMN {column}")
                except sqlite3.OperationalError as exc:  # another process added it just now
                    if "duplicate column" not in str(exc):
                        raise

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- keys --------------------------------------------------------------------------
    @staticmethod
    def _key(row: sqlite3.Row) -> KeyRecord:
        return KeyRecord(row["id"], row["name"], row["created_at"], row["revoked_at"])

    def create_key(self, name: str) -> tuple[KeyRecord, str]:
        key_id = secrets.token_hex(6)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys (id, name, secret_hash, created_at) VALUES (?, ?, ?, ?)",
                (key_id, name, hash_secret(secret), now),
            )
        return KeyRecord(key_id, name, now), secret

    def list_keys(self) -> list[KeyRecord]:
        rows = self._conn().execute("SELECT * FROM api_keys ORDER BY created_at").fetchall()
        return [self._key(r) for r in rows]

    def revoke_key(self, key_id: str) -> KeyRecord | None:
        """Revoke the active key with this id (an id only, never a name); the key revoked,
        or None when no active key has that id."""
        revoked = self._revoke("id", key_id)
        return revoked[0] if revoked else None

    def revoke_keys_named(self, name: str) -> list[KeyRecord]:
        """Revoke every active key with exactly this name; the keys revoked."""
        return self._revoke("name", name)

    def _revoke(self, column: str, value: str) -> list[KeyRecord]:
        now = time.time()
        where = {"id": "id = ?", "name": "name = ?"}[column]
        with self._tx() as db:
            rows = db.execute(f"SELECT * FROM api_keys WHERE {where} AND revoked_at IS NULL "
                              "ORDER BY created_at", (value,)).fetchall()
            db.executemany("UPDATE api_keys SET revoked_at = ? WHERE id = ?",
                           [(now, r["id"]) for r in rows])
        return [KeyRecord(r["id"], r["name"], r["created_at"], now) for r in rows]

    def authenticate(self, secret: str) -> KeyRecord | None:
        # Format km_<id>_<random>; look the id up, then compare digests in constant time.
        if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
            return None
        key_id, _, rest = secret[len(KEY_PREFIX):].partition("_")
        if not key_id or not rest:
            return None
        row = self._conn().execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None or row["revoked_at"] is not None:
            return None
        if not hmac.compare_digest(row["secret_hash"], hash_secret(secret)):
            return None
        return self._key(row)

    # -- jobs --------------------------------------------------------------------------
    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(
            id=row["id"], owner=row["owner"], state=row["state"],
            params=json.loads(row["params"]), inputs=json.loads(row["inputs"]),
            created_at=row["created_at"], updated_at=row["updated_at"],
            started_at=row["started_at"], finished_at=row["finished_at"],
            worker=row["worker"], lease_expires=row["lease_expires"],
            attempts=row["attempts"], cancel_requested=bool(row["cancel_requested"]),
            progress=json.loads(row["progress"]), error=row["error"],
            result=json.loads(row["result"]), idempotency_key=row["idempotency_key"],
            interruptions=row["interruptions"],
        )

    def create_job(
        self, job_id: str, owner: str, params: dict, inputs: dict, *,
        max_active: int, idempotency_key: str | None = None,
    ) -> tuple[Job, bool]:
        """Insert a queued job unless the owner is at its limit.

        Returns ``(job, created)``; with an ``idempotency_key`` already used by this owner
        the existing job comes back with ``created=False``. Raises :class:`LimitReached`.
        """
        now = time.time()
        with self._tx() as db:
            if idempotency_key is not None:
                row = db.execute(
                    "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?",
                    (owner, idempotency_key),
                ).fetchone()
                if row is not None:
                    return self._job(row), False
            cur = db.execute(
                "INSERT INTO jobs (id, owner, state, params, inputs, idempotency_key, "
                "created_at, updated_at) "
                "SELECT ?, ?, 'queued', ?, ?, ?, ?, ? WHERE (SELECT count(*) FROM jobs "
                "WHERE owner = ? AND state IN ('queued', 'running')) < ?",
                (job_id, owner, json.dumps(params), json.dumps(inputs), idempotency_key,
                 now, now, owner, max_active),
            )
            if cur.rowcount == 0:
                raise LimitReached(owner)
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row), True

    def get_job(self, job_id: str, owner: str | None = None) -> Job | None:
        if owner is None:
            row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        else:
            row = self._conn().execute(
                "SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)
            ).fetchone()
        return None if row is None else self._job(row)

    def list_jobs(self, owner: str, limit: int = 100) -> list[Job]:
        rows = self._conn().execute(
            "SELECT * FROM jobs WHERE owner = ? ORDER BY seq DESC LIMIT ?", (owner, limit)
        ).fetchall()
        return [self._job(r) for r in rows]

    def find_job_by_idempotency_key(self, owner: str, key: str) -> Job | None:
        """The owner's job created with this Idempotency-Key (the UNIQUE (owner,
        idempotency_key) index answers it)."""
        row = self._conn().execute(
            "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?", (owner, key)
        ).fetchone()
        return None if row is None else self._job(row)

    def count_active_jobs(self, owner: str) -> int:
        """The owner's queued + running jobs (from the jobs_owner_state index)."""
        return self._conn().execute(
            "SELECT count(*) FROM jobs WHERE owner = ? AND state IN ('queued', 'running')",
            (owner,),
        ).fetchone()[0]

    def all_job_ids(self) -> set[str]:
        return {r[0] for r in self._conn().execute("SELECT id FROM jobs").fetchall()}

    def request_cancel(self, job_id: str, owner: str) -> Job | None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ? "
                "WHERE id = ? AND owner = ? AND state = 'queued'",
                (now, now, job_id, owner),
            )
            db.execute(
                "UPDATE jobs SET cancel_requested = 1, updated_at = ? "
                "WHERE id = ? AND owner = ? AND state = 'running'",
                (now, job_id, owner),
            )
            row = db.execute(
                "SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)
            ).fetchone()
        return None if row is None else self._job(row)

    def delete_job(self, job_id: str, owner: str) -> bool:
        """Delete a finished job's record (the caller removes its folder)."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM jobs WHERE id = ? AND owner = ? AND state IN "
                "('succeeded', 'failed', 'cancelled')", (job_id, owner))
            return cur.rowcount == 1

    def claim_next(self, worker: str, lease_seconds: float, *,
                   oom_kills: int | None = None) -> Job | None:
        """Take the oldest queued job. ``oom_kills``: the host's count of out-of-memory kills
        now (see :meth:`requeue_stale`)."""
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "UPDATE jobs SET state = 'running', worker = ?, lease_expires = ?, "
                "lease_oom_kills = ?, attempts = attempts + 1, "
                "started_at = coalesce(started_at, ?), updated_at = ?, progress = '{}' "
                "WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1) "
                "AND state = 'queued' RETURNING *",
                (worker, now + lease_seconds, oom_kills, now, now),
            ).fetchone()
        return None if row is None else self._job(row)

    def renew_lease(self, job_id: str, worker: str, lease_seconds: float, *,
                    oom_kills: int | None = None) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_expires = ?, lease_oom_kills = ? WHERE id = ? "
                "AND worker = ? AND state = 'running'",
                (time.time() + lease_seconds, oom_kills, job_id, worker),
            )
            return cur.rowcount == 1

    def release(self, job_id: str, worker: str) -> bool:
        """Hand a running job back to the queue because its server is stopping (not the
        job's fault): the run is an interruption, not an attempt. A job whose owner asked to
        cancel it is cancelled instead. False when ``worker`` no longer runs the job."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' "
                "ELSE 'queued' END, finished_at = CASE WHEN cancel_requested THEN ? END, "
                "attempts = max(attempts - 1, 0), interruptions = interruptions + 1, "
                "worker = NULL, lease_expires = NULL, lease_oom_kills = NULL, "
                "progress = '{}', updated_at = ? "
                "WHERE id = ? AND worker = ? AND state = 'running'",
                (now, now, job_id, worker),
            )
            return cur.rowcount == 1

    def set_progress(self, job_id: str, worker: str, progress: dict) -> bool:
        """Record progress; returns True when the owner asked to cancel the job."""
        with self._tx() as db:
            row = db.execute(
                "UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ? AND worker = ? "
                "AND state = 'running' RETURNING cancel_requested",
                (json.dumps(progress), time.time(), job_id, worker),
            ).fetchone()
        # A job this worker no longer owns (requeued elsewhere) must stop as well.
        return row is None or bool(row[0])

    def finish(
        self, job_id: str, worker: str, state: str, *, result: dict | None = None,
        error: str | None = None,
    ) -> bool:
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state}")
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, result = ?, error = ?, finished_at = ?, "
                "updated_at = ?, lease_expires = NULL WHERE id = ? AND worker = ? "
                "AND state = 'running'",
                (state, json.dumps(result or {}), error, now, now, job_id, worker),
            )
            return cur.rowcount == 1

    def requeue_stale(
        self, *, max_attempts: int, worker_is_dead: Callable[[str], bool] | None = None,
        oom_killed: Callable[[int | None], bool] | None = None, max_interruptions: int = 10,
    ) -> list[str]:
        """Put running jobs whose lease ran out, or whose worker is dead
        (``worker_is_dead(worker)``), back into the queue; returns their ids.

        Why the run ended decides whether it counts. ``oom_killed(lease_oom_kills)`` says
        whether the host killed a process for lack of memory since the dead worker last
        renewed its lease (the count it recorded): then the job is blamed, the run counts
        as an attempt and after ``max_attempts`` the job fails, saying so. Otherwise the
        server was stopped from outside (a restart, SIGKILL) or crashed: an interruption,
        not counted as an attempt; only a job interrupted ``max_interruptions`` times
        fails (so a job that crashes its server cannot loop for ever). A job whose owner
        asked to cancel it is cancelled."""
        now = time.time()
        requeued = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, worker, lease_expires, lease_oom_kills, attempts, interruptions, "
                "cancel_requested, progress FROM jobs WHERE state = 'running'"
            ).fetchall()
            for r in rows:
                expired = r["lease_expires"] is None or r["lease_expires"] < now
                dead = worker_is_dead is not None and r["worker"] and worker_is_dead(r["worker"])
                if not (expired or dead):
                    continue
                if r["cancel_requested"]:
                    db.execute(
                        "UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?, "
                        "worker = NULL, lease_expires = NULL WHERE id = ?",
                        (now, now, r["id"]),
                    )
                    continue
                where = _stage_words(json.loads(r["progress"] or "{}"))
                out_of_memory = bool(dead and oom_killed is not None
                                     and oom_killed(r["lease_oom_kills"]))
                attempts, interruptions = r["attempts"], r["interruptions"]
                error = None
                if out_of_memory:
                    if attempts >= max_attempts:
                        error = (f"the server ran out of memory running this job "
                                 f"{_times(attempts)} (the system stopped it; the last time "
                                 f"{where}) — try fewer frames or a smaller size")
                else:
                    attempts, interruptions = max(attempts - 1, 0), interruptions + 1
                    if interruptions >= max_interruptions:
                        error = (f"the server stopped {_times(interruptions)} while running "
                                 f"this job (the last time {where}) without running out of memory "
                                 "or reporting an error: killed, restarted or crashed; it is "
                                 "not run again — ask the operator to look at the server log")
                if error is not None:
                    db.execute(
                        "UPDATE jobs SET state = 'failed', finished_at = ?, updated_at = ?, "
                        "worker = NULL, lease_expires = NULL, lease_oom_kills = NULL, "
                        "attempts = ?, interruptions = ?, error = ? WHERE id = ?",
                        (now, now, attempts, interruptions, error, r["id"]),
                    )
                else:
                    db.execute(
                        "UPDATE jobs SET state = 'queued', updated_at = ?, worker = NULL, "
                        "lease_expires = NULL, lease_oom_kills = NULL, attempts = ?, "
                        "interruptions = ? WHERE id = ?",
                        (now, attempts, interruptions, r["id"]),
                    )
                    requeued.append(r["id"])
        return requeued


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _stage_words(progress: dict) -> str:
    """Where a job was, for a message: "while denoising (step 3 of 25)"."""
    stage = progress.get("stage")
    if stage == "denoising":
        return f"while denoising (step {progress.get('step')} of {progress.get('total_steps')})"
    if stage == "writing":
        return (f"while writing frame {progress.get('frames')} of "
                f"{progress.get('total_frames')}")
    if stage in ("checking", "preparing"):
        return f"while {stage} its inputs"
    return "before it reported progress" if not stage or stage == "starting" else f"at {stage}"
