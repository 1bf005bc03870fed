"""Persistent job store: API keys, jobs and workers, on SQLite or PostgreSQL.

:class:`JobStore` is the small interface the rest of the service uses. :class:`SQLJobStore`
implements it once, in SQL that both databases run; :class:`SQLiteJobStore` (one file, WAL
mode, durable commits: the default for one machine) and :class:`PostgresJobStore` (many
workers on many hosts, through psycopg 3) add their connections and the few statements that
differ. :func:`open_store` picks one from a URL (``postgresql://...``) or a file path.

One schema, versioned: :data:`MIGRATIONS` are applied in order when a store is opened (the
version is kept in ``schema_version``; concurrent openers serialise on a lock), so every
process that starts brings an older database up to date.

Every state change is one atomic statement or transaction:

* claiming work — ``UPDATE jobs SET state='running', worker=?, fence=fence+1, ... WHERE id =
  (SELECT ... WHERE state='queued' ORDER BY <schedule> LIMIT 1 [FOR UPDATE OF j SKIP LOCKED])
  AND state='queued' RETURNING *``; SQLite runs it inside ``BEGIN IMMEDIATE``, PostgreSQL's
  ``SKIP LOCKED`` means two workers never get the same job and never wait on each other. The
  schedule: highest ``priority`` first, then fair share (the key with the fewest jobs started
  in the last :data:`FAIR_SHARE_WINDOW_S` per unit of its ``weight``), then oldest first. A
  worker only claims jobs of the models it serves.
* fencing — each claim increments the job's ``fence``; progress, lease renewal, release and
  the final result are only recorded with the fence of the current run, so a worker that
  lost its lease (paused, partitioned) can never publish over the run that replaced it.
* the per-key limit on active jobs — an ``INSERT ... SELECT ... WHERE (SELECT count(*) ...)
  < limit`` in one transaction (PostgreSQL: after ``pg_advisory_xact_lock(hashtext(owner))``
  so two inserts of one key serialise); a key's own ``max_active`` overrides the server's.
* crash recovery — a running job carries a lease (``lease_expires``) that its worker renews;
  :meth:`requeue_stale` puts jobs whose lease ran out, or whose worker process is known to be
  dead, back into the queue. A run that ended because its server stopped (a restart, SIGTERM
  or SIGKILL) is an *interruption* and does not count as an attempt; a run that killed its
  server by exhausting memory does (the job fails after ``max_attempts``).
  :meth:`release` hands a job back to the queue on a graceful stop.

A database that cannot be reached (PostgreSQL restarting, the network) raises
:class:`StoreUnavailable`; a statement that never reached the server is retried on a fresh
connection first. The API answers it with 503.

API keys are stored as SHA-256 digests of the secret (the secret is 256 random bits, so a
slow password hash would add nothing); the secret is shown once, when it is created.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Callable, Protocol

from kinemate.errors import ConfigError, KinemateError

log = logging.getLogger("kinemate.service")

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled")
STATES = ACTIVE_STATES + FINAL_STATES
KEY_PREFIX = "km_"
FAIR_SHARE_WINDOW_S = 3600.0  # jobs a key started this recently count against its share


class LimitReached(Exception):
    """The key already has as many queued + running jobs as it may (``limit``)."""

    def __init__(self, owner: str, limit: int | None = None):
        super().__init__(owner)
        self.owner, self.limit = owner, limit


class StoreUnavailable(KinemateError):
    """The job database cannot be reached (restarting, network, too many connections).

    ``ambiguous``: the connection broke while a change was being committed, so whether it
    was recorded is unknown (a client retries with its Idempotency-Key)."""

    def __init__(self, message: str, *, ambiguous: bool = False):
        super().__init__(message)
        self.ambiguous = ambiguous


@dataclasses.dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    created_at: float
    revoked_at: float | None = None
    max_active: int | None = None  # queued + running jobs at most (None: the server's limit)
    weight: float = 1.0  # share of the pool against other keys (fair share)
    max_priority: int = 0  # highest job priority this key may ask for

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
    priority: int = 0
    model: str | None = None  # a model name the workers serve (None: a worker's default)
    time_limit: float | None = None  # seconds one run may take
    fence: int = 0  # incremented by every claim: the token of the current run


@dataclasses.dataclass(frozen=True)
class WorkerRecord:
    id: str
    host: str
    device: str
    state: str
    info: dict
    started_at: float
    seen_at: float
    current_job: str | None = None


class JobStore(Protocol):
    """What the service needs from a database. Implementations must make each method atomic."""

    # keys
    def create_key(self, name: str, **quota) -> tuple[KeyRecord, str]: ...
    def list_keys(self) -> list[KeyRecord]: ...
    def set_key_quota(self, key_id: str, **quota) -> KeyRecord | None: ...
    def revoke_key(self, key_id: str) -> KeyRecord | None: ...
    def revoke_keys_named(self, name: str) -> list[KeyRecord]: ...
    def authenticate(self, secret: str) -> KeyRecord | None: ...

    # jobs, API side
    def create_job(
        self, job_id: str, owner: str, params: dict, inputs: dict, *,
        max_active: int, idempotency_key: str | None = None, priority: int = 0,
        model: str | None = None, time_limit: float | None = None,
    ) -> tuple[Job, bool]: ...
    def get_job(self, job_id: str, owner: str | None = None) -> Job | None: ...
    def list_jobs(self, owner: str, limit: int = 100) -> list[Job]: ...
    def find_job_by_idempotency_key(self, owner: str, key: str) -> Job | None: ...
    def count_active_jobs(self, owner: str) -> int: ...
    def request_cancel(self, job_id: str, owner: str) -> Job | None: ...
    def delete_job(self, job_id: str, owner: str) -> bool: ...
    def all_job_ids(self) -> set[str]: ...
    def job_counts(self) -> dict[str, int]: ...
    def oldest_queued_age(self) -> float | None: ...

    # jobs, worker side
    def claim_next(self, worker: str, lease_seconds: float, *, oom_kills: int | None = None,
                   models: list[str] | None = None) -> Job | None: ...
    def renew_lease(self, job_id: str, worker: str, lease_seconds: float, *,
                    oom_kills: int | None = None, fence: int | None = None) -> bool: ...
    def release(self, job_id: str, worker: str, *, fence: int | None = None) -> bool: ...
    def set_progress(self, job_id: str, worker: str, progress: dict, *,
                     fence: int | None = None) -> bool: ...
    def finish(
        self, job_id: str, worker: str, state: str, *, result: dict | None = None,
        error: str | None = None, fence: int | None = None,
    ) -> bool: ...
    def requeue_stale(
        self, *, max_attempts: int, worker_is_dead: Callable[[str], bool] | None = None,
        oom_killed: Callable[[int | None], bool] | None = None, max_interruptions: int = 10,
    ) -> list[str]: ...

    # workers
    def register_worker(self, worker: str, *, device: str, state: str, info: dict,
                        current_job: str | None = None) -> None: ...
    def list_workers(self, seen_within: float | None = None) -> list[WorkerRecord]: ...
    def remove_worker(self, worker: str) -> None: ...


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


# -- schema ------------------------------------------------------------------------------
# {serial} {real}: the column types that differ (SQLite / PostgreSQL). Each migration runs
# once, in one transaction; version 1 is the schema of the SQLite-only releases (written
# with IF NOT EXISTS so that a database from before migrations existed is adopted as it is).
_V1 = """
CREATE TABLE IF NOT EXISTS api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  {real} NOT NULL,
    revoked_at  {real}
);
CREATE TABLE IF NOT EXISTS jobs (
    seq              {serial},
    id               TEXT NOT NULL UNIQUE,
    owner            TEXT NOT NULL REFERENCES api_keys(id),
    state            TEXT NOT NULL CHECK (state IN
                         ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    params           TEXT NOT NULL,
    inputs           TEXT NOT NULL,
    idempotency_key  TEXT,
    created_at       {real} NOT NULL,
    updated_at       {real} NOT NULL,
    started_at       {real},
    finished_at      {real},
    worker           TEXT,
    lease_expires    {real},
    attempts         INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress         TEXT NOT NULL DEFAULT '{{}}',
    error            TEXT,
    result           TEXT NOT NULL DEFAULT '{{}}',
    interruptions    INTEGER NOT NULL DEFAULT 0,
    lease_oom_kills  INTEGER,
    UNIQUE (owner, idempotency_key)
)
"""
# Version 2: the shared pool (scheduling, fencing, quotas) and the workers' registry.
_V2 = """
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN model TEXT;
ALTER TABLE jobs ADD COLUMN time_limit {real};
ALTER TABLE jobs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN max_active INTEGER;
ALTER TABLE api_keys ADD COLUMN weight {real} NOT NULL DEFAULT 1;
ALTER TABLE api_keys ADD COLUMN max_priority INTEGER NOT NULL DEFAULT 0;
CREATE TABLE workers (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    device      TEXT NOT NULL,
    state       TEXT NOT NULL,
    info        TEXT NOT NULL DEFAULT '{{}}',
    started_at  {real} NOT NULL,
    seen_at     {real} NOT NULL,
    current_job TEXT
)
"""
MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1), (2, _V2))
# Indexes are (re)created at every start: a database whose index was dropped gets it back.
_INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_owner_state ON jobs (owner, state);
CREATE INDEX IF NOT EXISTS jobs_owner_started ON jobs (owner, started_at)
"""
# Added to ``jobs`` in version 1 after its first release (SQLite files from before).
_V1_ADDED_COLUMNS = ("interruptions INTEGER NOT NULL DEFAULT 0", "lease_oom_kills INTEGER")


def _statements(script: str, types: dict[str, str]) -> list[str]:
    return [s.strip() for s in script.format(**types).split(";") if s.strip()]


class _Reconnect(Exception):
    """The statement never reached the database: run the whole operation again."""


def _atomic(method):
    """Run a store operation again (up to 3 times, on a fresh connection) when its
    connection turned out to be dead before anything was sent; then StoreUnavailable."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        for attempt in range(3):
            try:
                return method(self, *args, **kwargs)
            except _Reconnect as exc:
                last = exc
                time.sleep(0.05 * attempt)
        raise StoreUnavailable(f"the job database does not answer ({last}) — try again in a "
                               "few seconds")

    return run


class SQLJobStore:
    """:class:`JobStore` in SQL that SQLite and PostgreSQL both run (``?`` placeholders).

    Subclasses provide ``_connect()``, ``_begin(conn, immediate)``/``_end(conn, ok)``,
    ``_types`` and the dialect strings below."""

    _types: dict[str, str] = {}
    _skip_locked = ""  # appended to the claim's sub-select
    _lock_rows = ""  # appended to requeue_stale's select of running jobs

    def __init__(self) -> None:
        self._local = threading.local()

    # -- connections and transactions ---------------------------------------------------
    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _drop_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is broken already
                pass

    def close(self) -> None:
        self._drop_conn()

    def _sql(self, sql: str) -> str:
        return sql

    def _execute(self, conn, sql: str, params: tuple = ()):
        return conn.execute(self._sql(sql), params)

    class _Tx:
        def __init__(self, store: "SQLJobStore", immediate: bool):
            self.store, self.immediate = store, immediate

        def __enter__(self) -> "SQLJobStore._Tx":
            self.conn = self.store._conn()
            self.sent = 0
            self.store._begin(self.conn, self.immediate, self)
            return self

        def execute(self, sql: str, params: tuple = ()):
            cur = self.store._guarded(self.conn, sql, params, first=self.sent == 0)
            self.sent += 1
            return cur

        def executemany(self, sql: str, seq) -> None:
            for params in seq:
                self.execute(sql, params)

        def __exit__(self, exc_type, exc, tb) -> None:
            self.exc_info = (exc_type, exc, tb)
            self.store._end(self.conn, exc_type is None, self)

    def _tx(self, immediate: bool = True) -> "SQLJobStore._Tx":
        return self._Tx(self, immediate)

    def _guarded(self, conn, sql: str, params: tuple, *, first: bool):
        return self._execute(conn, sql, params)

    def _read(self, sql: str, params: tuple = ()):
        """A statement outside a transaction (a read: safe to send again)."""
        return self._guarded(self._conn(), sql, params, first=True)

    # -- schema -------------------------------------------------------------------------
    def migrate(self) -> int:
        """Apply the migrations this database lacks (each once, in order) and create the
        indexes; returns the schema version."""
        with self._tx() as db:
            self._lock_migrations(db)
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                       f"applied_at {self._types['real']} NOT NULL)")
            row = db.execute("SELECT max(version) AS v FROM schema_version").fetchone()
            version = row["v"] or 0
            for number, script in MIGRATIONS:
                if number <= version:
                    continue
                for statement in _statements(script, self._types):
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                           (number, time.time()))
                log.info("job database: schema migrated to version %d", number)
                version = number
            self._adopt_v1(db)
            for statement in _statements(_INDEXES, self._types):
                db.execute(statement)
        return version

    def _lock_migrations(self, db) -> None:
        pass

    def _adopt_v1(self, db) -> None:
        pass

    def schema_version(self) -> int:
        return self._read("SELECT max(version) AS v FROM schema_version").fetchone()["v"]

    # -- keys ---------------------------------------------------------------------------
    @staticmethod
    def _key(row) -> KeyRecord:
        return KeyRecord(row["id"], row["name"], row["created_at"], row["revoked_at"],
                         row["max_active"], float(row["weight"]), row["max_priority"])

    @staticmethod
    def _check_quota(max_active: int | None, weight: float | None,
                     max_priority: int | None) -> None:
        if max_active is not None and not 1 <= max_active <= 100000:
            raise ConfigError(f"`max_active` must be 1-100000 (got {max_active})")
        if weight is not None and not 0.001 <= weight <= 1000:
            raise ConfigError(f"`weight` must be between 0.001 and 1000 (got {weight:g})")
        if max_priority is not None and not 0 <= max_priority <= 9:
            raise ConfigError(f"`max_priority` must be 0-9 (got {max_priority})")

    @_atomic
    def create_key(self, name: str, *, max_active: int | None = None, weight: float = 1.0,
                   max_priority: int = 0) -> tuple[KeyRecord, str]:
        self._check_quota(max_active, weight, max_priority)
        key_id = secrets.token_hex(6)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys (id, name, secret_hash, created_at, max_active, weight, "
                "max_priority) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key_id, name, hash_secret(secret), now, max_active, weight, max_priority),
            )
        return KeyRecord(key_id, name, now, None, max_active, weight, max_priority), secret

    @_atomic
    def set_key_quota(self, key_id: str, *, max_active: int | None = None,
                      weight: float | None = None, max_priority: int | None = None,
                      clear_max_active: bool = False) -> KeyRecord | None:
        """Change a key's quota (None leaves a value as it is; ``clear_max_active``: back to
        the server's limit). The key, or None when no key has that id."""
        self._check_quota(max_active, weight, max_priority)
        with self._tx() as db:
            db.execute(
                "UPDATE api_keys SET max_active = CASE WHEN ? = 1 THEN NULL "
                "ELSE coalesce(?, max_active) END, weight = coalesce(?, weight), "
                "max_priority = coalesce(?, max_priority) WHERE id = ?",
                (int(clear_max_active), max_active, weight, max_priority, key_id))
            row = db.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else self._key(row)

    @_atomic
    def list_keys(self) -> list[KeyRecord]:
        rows = self._read("SELECT * FROM api_keys ORDER BY created_at").fetchall()
        return [self._key(r) for r in rows]

    def revoke_key(self, key_id: str) -> KeyRecord | None:
        """Revoke the active key with this id (an id only, never a name); the key revoked,
        or None when no active key has that id."""
        revoked = self._revoke("id", key_id)
        return revoked[0] if revoked else None

    def revoke_keys_named(self, name: str) -> list[KeyRecord]:
        """Revoke every active key with exactly this name; the keys revoked."""
        return self._revoke("name", name)

    @_atomic
    def _revoke(self, column: str, value: str) -> list[KeyRecord]:
        now = time.time()
        where = {"id": "id = ?", "name": "name = ?"}[column]
        with self._tx() as db:
            rows = db.execute(f"SELECT * FROM api_keys WHERE {where} AND revoked_at IS NULL "
                              "ORDER BY created_at", (value,)).fetchall()
            db.executemany("UPDATE api_keys SET revoked_at = ? WHERE id = ?",
                           [(now, r["id"]) for r in rows])
        return [dataclasses.replace(self._key(r), revoked_at=now) for r in rows]

    @_atomic
    def authenticate(self, secret: str) -> KeyRecord | None:
        # Format km_<id>_<random>; look the id up, then compare digests in constant time.
        if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
            return None
        key_id, _, rest = secret[len(KEY_PREFIX):].partition("_")
        if not key_id or not rest:
            return None
        row = self._read("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None or row["revoked_at"] is not None:
            return None
        if not hmac.compare_digest(row["secret_hash"], hash_secret(secret)):
            return None
        return self._key(row)

    # -- jobs ---------------------------------------------------------------------------
    @staticmethod
    def _job(row) -> Job:
        return Job(
            id=row["id"], owner=row["owner"], state=row["state"],
            params=json.loads(row["params"]), inputs=json.loads(row["inputs"]),
            created_at=row["created_at"], updated_at=row["updated_at"],
            started_at=row["started_at"], finished_at=row["finished_at"],
            worker=row["worker"], lease_expires=row["lease_expires"],
            attempts=row["attempts"], cancel_requested=bool(row["cancel_requested"]),
            progress=json.loads(row["progress"]), error=row["error"],
            result=json.loads(row["result"]), idempotency_key=row["idempotency_key"],
            interruptions=row["interruptions"], priority=row["priority"], model=row["model"],
            time_limit=row["time_limit"], fence=row["fence"],
        )

    def _lock_owner(self, db, owner: str) -> None:
        """Serialise job inserts of one key (SQLite: BEGIN IMMEDIATE did already)."""

    @_atomic
    def create_job(
        self, job_id: str, owner: str, params: dict, inputs: dict, *,
        max_active: int, idempotency_key: str | None = None, priority: int = 0,
        model: str | None = None, time_limit: float | None = None,
    ) -> tuple[Job, bool]:
        """Insert a queued job unless the owner is at its limit (its key's ``max_active``,
        else ``max_active``).

        Returns ``(job, created)``; with an ``idempotency_key`` already used by this owner
        the existing job comes back with ``created=False``. Raises :class:`LimitReached`.
        """
        now = time.time()
        with self._tx() as db:
            self._lock_owner(db, owner)
            if idempotency_key is not None:
                row = db.execute(
                    "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?",
                    (owner, idempotency_key),
                ).fetchone()
                if row is not None:
                    return self._job(row), False
            cur = db.execute(
                "INSERT INTO jobs (id, owner, state, params, inputs, idempotency_key, "
                "created_at, updated_at, priority, model, time_limit) "
                "SELECT ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ? WHERE (SELECT count(*) FROM jobs "
                "WHERE owner = ? AND state IN ('queued', 'running')) < (SELECT "
                "coalesce(max(max_active), ?) FROM api_keys WHERE id = ?)",
                (job_id, owner, json.dumps(params), json.dumps(inputs), idempotency_key,
                 now, now, priority, model, time_limit, owner, max_active, owner),
            )
            if cur.rowcount == 0:
                row = db.execute("SELECT max_active FROM api_keys WHERE id = ?",
                                 (owner,)).fetchone()
                raise LimitReached(owner, (row and row["max_active"]) or max_active)
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row), True

    @_atomic
    def get_job(self, job_id: str, owner: str | None = None) -> Job | None:
        if owner is None:
            row = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        else:
            row = self._read("SELECT * FROM jobs WHERE id = ? AND owner = ?",
                             (job_id, owner)).fetchone()
        return None if row is None else self._job(row)

    @_atomic
    def list_jobs(self, owner: str, limit: int = 100) -> list[Job]:
        rows = self._read("SELECT * FROM jobs WHERE owner = ? ORDER BY seq DESC LIMIT ?",
                          (owner, limit)).fetchall()
        return [self._job(r) for r in rows]

    @_atomic
    def find_job_by_idempotency_key(self, owner: str, key: str) -> Job | None:
        """The owner's job created with this Idempotency-Key (the UNIQUE (owner,
        idempotency_key) index answers it)."""
        row = self._read("SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?",
                         (owner, key)).fetchone()
        return None if row is None else self._job(row)

    @_atomic
    def count_active_jobs(self, owner: str) -> int:
        """The owner's queued + running jobs (from the jobs_owner_state index)."""
        return self._read("SELECT count(*) AS n FROM jobs WHERE owner = ? AND state IN "
                          "('queued', 'running')", (owner,)).fetchone()["n"]

    @_atomic
    def all_job_ids(self) -> set[str]:
        return {r["id"] for r in self._read("SELECT id FROM jobs").fetchall()}

    @_atomic
    def job_counts(self) -> dict[str, int]:
        """How many jobs are in each state (every state, 0 included)."""
        counts = dict.fromkeys(STATES, 0)
        for r in self._read("SELECT state, count(*) AS n FROM jobs GROUP BY state").fetchall():
            counts[r["state"]] = r["n"]
        return counts

    @_atomic
    def oldest_queued_age(self) -> float | None:
        """Seconds the oldest queued job has waited (None when none waits)."""
        row = self._read("SELECT min(created_at) AS t FROM jobs WHERE state = 'queued'"
                         ).fetchone()
        return None if row["t"] is None else max(time.time() - row["t"], 0.0)

    @_atomic
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

    @_atomic
    def delete_job(self, job_id: str, owner: str) -> bool:
        """Delete a finished job's record (the caller removes its files)."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM jobs WHERE id = ? AND owner = ? AND state IN "
                "('succeeded', 'failed', 'cancelled')", (job_id, owner))
            return cur.rowcount == 1

    @_atomic
    def claim_next(self, worker: str, lease_seconds: float, *, oom_kills: int | None = None,
                   models: list[str] | None = None) -> Job | None:
        """Take the next queued job by the schedule (priority, fair share, age; see the
        module docstring). ``oom_kills``: the host's count of out-of-memory kills now (see
        :meth:`requeue_stale`); ``models``: the model names this worker serves (a job that
        names none runs on any worker; None: every job)."""
        now = time.time()
        where, params = "", []
        if models is not None:
            where = " AND (j.model IS NULL" + "".join(
                " OR j.model = ?" for _ in models) + ")"
            params = list(models)
        with self._tx() as db:
            row = db.execute(
                "UPDATE jobs SET state = 'running', worker = ?, lease_expires = ?, "
                "lease_oom_kills = ?, attempts = attempts + 1, fence = fence + 1, "
                "started_at = coalesce(started_at, ?), updated_at = ?, progress = '{}' "
                "WHERE id = (SELECT j.id FROM jobs j JOIN api_keys k ON k.id = j.owner "
                f"WHERE j.state = 'queued'{where} ORDER BY j.priority DESC, "
                "(SELECT count(*) FROM jobs r WHERE r.owner = j.owner AND r.started_at > ?) "
                f"/ k.weight ASC, j.seq ASC LIMIT 1{self._skip_locked}) "
                "AND state = 'queued' RETURNING *",
                (worker, now + lease_seconds, oom_kills, now, now, *params,
                 now - FAIR_SHARE_WINDOW_S),
            ).fetchone()
        return None if row is None else self._job(row)

    @staticmethod
    def _fenced(fence: int | None) -> tuple[str, tuple]:
        return ("", ()) if fence is None else (" AND fence = ?", (fence,))

    @_atomic
    def renew_lease(self, job_id: str, worker: str, lease_seconds: float, *,
                    oom_kills: int | None = None, fence: int | None = None) -> bool:
        extra, args = self._fenced(fence)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_expires = ?, lease_oom_kills = ? WHERE id = ? "
                f"AND worker = ? AND state = 'running'{extra}",
                (time.time() + lease_seconds, oom_kills, job_id, worker, *args),
            )
            return cur.rowcount == 1

    @_atomic
    def release(self, job_id: str, worker: str, *, fence: int | None = None) -> bool:
        """Hand a running job back to the queue because its server is stopping (not the
        job's fault): the run is an interruption, not an attempt. A job whose owner asked to
        cancel it is cancelled instead. False when ``worker`` no longer runs the job."""
        now = time.time()
        extra, args = self._fenced(fence)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled' "
                "ELSE 'queued' END, finished_at = CASE WHEN cancel_requested = 1 THEN ? END, "
                "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, "
                "interruptions = interruptions + 1, "
                "worker = NULL, lease_expires = NULL, lease_oom_kills = NULL, "
                "progress = '{}', updated_at = ? "
                f"WHERE id = ? AND worker = ? AND state = 'running'{extra}",
                (now, now, job_id, worker, *args),
            )
            return cur.rowcount == 1

    @_atomic
    def set_progress(self, job_id: str, worker: str, progress: dict, *,
                     fence: int | None = None) -> bool:
        """Record progress; returns True when the job must stop: its owner asked to cancel
        it, or this worker no longer runs it (its lease was lost)."""
        extra, args = self._fenced(fence)
        with self._tx() as db:
            row = db.execute(
                "UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ? AND worker = ? "
                f"AND state = 'running'{extra} RETURNING cancel_requested",
                (json.dumps(progress), time.time(), job_id, worker, *args),
            ).fetchone()
        return row is None or bool(row["cancel_requested"])

    @_atomic
    def finish(
        self, job_id: str, worker: str, state: str, *, result: dict | None = None,
        error: str | None = None, fence: int | None = None,
    ) -> bool:
        """Record the end of the run; False (nothing recorded) when ``worker`` (with
        ``fence``: this run) no longer holds the job."""
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state}")
        now = time.time()
        extra, args = self._fenced(fence)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, result = ?, error = ?, finished_at = ?, "
                "updated_at = ?, lease_expires = NULL WHERE id = ? AND worker = ? "
                f"AND state = 'running'{extra}",
                (state, json.dumps(result or {}), error, now, now, job_id, worker, *args),
            )
            return cur.rowcount == 1

    @_atomic
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
        asked to cancel it is cancelled. Each change names the run (its fence), so two
        workers recovering at once change a job once."""
        now = time.time()
        requeued = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, worker, lease_expires, lease_oom_kills, attempts, interruptions, "
                "cancel_requested, progress, fence FROM jobs WHERE state = 'running'"
                + self._lock_rows
            ).fetchall()
            for r in rows:
                expired = r["lease_expires"] is None or r["lease_expires"] < now
                dead = worker_is_dead is not None and r["worker"] and worker_is_dead(r["worker"])
                if not (expired or dead):
                    continue
                run = (r["id"], r["fence"])
                if r["cancel_requested"]:
                    db.execute(
                        "UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?, "
                        "worker = NULL, lease_expires = NULL WHERE id = ? AND fence = ? "
                        "AND state = 'running'", (now, now, *run))
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
                        "attempts = ?, interruptions = ?, error = ? WHERE id = ? AND fence = ? "
                        "AND state = 'running'",
                        (now, now, attempts, interruptions, error, *run),
                    )
                else:
                    cur = db.execute(
                        "UPDATE jobs SET state = 'queued', updated_at = ?, worker = NULL, "
                        "lease_expires = NULL, lease_oom_kills = NULL, attempts = ?, "
                        "interruptions = ? WHERE id = ? AND fence = ? AND state = 'running'",
                        (now, attempts, interruptions, *run),
                    )
                    if cur.rowcount == 1:
                        requeued.append(r["id"])
        return requeued

    # -- workers ------------------------------------------------------------------------
    @_atomic
    def register_worker(self, worker: str, *, device: str, state: str, info: dict,
                        current_job: str | None = None) -> None:
        """Insert or refresh a worker's row (its heartbeat: ``seen_at``)."""
        now = time.time()
        host = worker.rsplit(":", 2)[0]
        with self._tx(immediate=True) as db:
            db.execute(
                "INSERT INTO workers (id, host, device, state, info, started_at, seen_at, "
                "current_job) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "device = excluded.device, state = excluded.state, info = excluded.info, "
                "seen_at = excluded.seen_at, current_job = excluded.current_job",
                (worker, host, device, state, json.dumps(info, default=str), now, now,
                 current_job))

    @_atomic
    def list_workers(self, seen_within: float | None = None) -> list[WorkerRecord]:
        """Workers, those seen in the last ``seen_within`` seconds when given."""
        cutoff = -1.0 if seen_within is None else time.time() - seen_within
        rows = self._read("SELECT * FROM workers WHERE seen_at >= ? ORDER BY started_at",
                          (cutoff,)).fetchall()
        return [WorkerRecord(r["id"], r["host"], r["device"], r["state"], json.loads(r["info"]),
                             r["started_at"], r["seen_at"], r["current_job"]) for r in rows]

    @_atomic
    def remove_worker(self, worker: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM workers WHERE id = ?", (worker,))


class SQLiteJobStore(SQLJobStore):
    """:class:`JobStore` on one SQLite file in WAL mode (safe across threads and processes
    of one machine)."""

    _types = {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL"}
    url_scheme = "sqlite"

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Owner-only from its creation: SQLite creates the -wal and -shm files with the mode
        # of the database file.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        for path in (self.path, self.path.with_name(self.path.name + "-wal"),
                     self.path.with_name(self.path.name + "-shm")):
            if path.exists():
                owner_only(path)
        self.migrate()

    def __repr__(self) -> str:
        return f"SQLiteJobStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # an accepted job survives power loss
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _begin(self, conn, immediate: bool, tx) -> None:
        conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")

    def _end(self, conn, ok: bool, tx) -> None:
        conn.execute("COMMIT" if ok else "ROLLBACK")

    def _adopt_v1(self, db) -> None:
        """Columns added to version 1 after its first release (an old file's jobs table,
        kept as it was by CREATE TABLE IF NOT EXISTS, lacks them); checked at every open."""
        have = {r["name"] for r in db.execute("PRAGMA table_info(jobs)").fetchall()}
        for column in _V1_ADDED_COLUMNS:
            if column.split()[0] not in have:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {column}")


def _pg_error_words(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


class PostgresJobStore(SQLJobStore):
    """:class:`JobStore` on PostgreSQL (psycopg 3): any number of API processes and workers on
    any number of hosts. One connection per thread, opened on first use and replaced when
    it breaks (a database restart)."""

    _types = {"serial": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION"}
    _skip_locked = " FOR UPDATE OF j SKIP LOCKED"
    _lock_rows = " FOR UPDATE SKIP LOCKED"
    url_scheme = "postgresql"
    _MIGRATION_LOCK = 0x6B696E65  # pg_advisory_xact_lock key of the migrations ("kine")

    def __init__(self, url: str, *, connect_timeout: float = 5.0):
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise ConfigError("a postgresql:// job database needs psycopg 3: pip install "
                              "'psycopg[binary]' (requirements/service.txt)") from exc
        super().__init__()
        self.url = url
        self.connect_timeout = connect_timeout
        self.migrate()

    def __repr__(self) -> str:
        return f"PostgresJobStore({redact_url(self.url)!r})"

    def _connect(self):
        import psycopg
        from psycopg.rows import dict_row

        try:
            return psycopg.connect(
                self.url, autocommit=True, row_factory=dict_row,
                connect_timeout=max(int(self.connect_timeout), 1),
                keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
                application_name="kinemate")
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(
                f"cannot connect to the job database {redact_url(self.url)} "
                f"({_pg_error_words(exc)}) — it may be restarting: try again in a few "
                "seconds") from None

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def _guarded(self, conn, sql: str, params: tuple, *, first: bool):
        import psycopg

        try:
            return conn.execute(self._sql(sql), params)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            broken = conn.broken or conn.closed
            self._drop_conn()
            if first and broken:
                raise _Reconnect(_pg_error_words(exc)) from None
            raise StoreUnavailable(
                f"the job database connection failed ({_pg_error_words(exc)}) — try again in "
                "a few seconds", ambiguous=not first) from None

    def _begin(self, conn, immediate: bool, tx) -> None:
        tx.pg = conn.transaction()
        try:
            tx.pg.__enter__()
        except Exception as exc:  # noqa: BLE001 - BEGIN on a dead connection
            import psycopg

            self._drop_conn()
            if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
                raise _Reconnect(_pg_error_words(exc)) from None
            raise

    def _end(self, conn, ok: bool, tx) -> None:
        import psycopg

        try:
            tx.pg.__exit__(*tx.exc_info)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._drop_conn()
            if ok:
                raise StoreUnavailable(
                    f"the job database connection broke while a change was committed "
                    f"({_pg_error_words(exc)}) — whether it was recorded is unknown; retry "
                    "(with the same Idempotency-Key for a new job)", ambiguous=True) from None

    def _lock_migrations(self, db) -> None:
        db.execute("SELECT pg_advisory_xact_lock(?)", (self._MIGRATION_LOCK,))

    def _lock_owner(self, db, owner: str) -> None:
        db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (owner,))


def redact_url(url: str) -> str:
    """A database or storage URL without its password (for messages and logs)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def open_store(url: str | Path) -> SQLJobStore:
    """The job store a ``--db`` value names: ``postgresql://user:pass@host:5432/db``
    (also ``postgres://``), ``sqlite:///path/kinemate.db`` or a plain file path."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresJobStore(text)
    if text.startswith("sqlite:///"):
        return SQLiteJobStore(text[len("sqlite://"):])
    if "://" in text:
        raise ConfigError(f"unknown job database URL {redact_url(text)!r} — use "
                          "postgresql://USER:PASSWORD@HOST:PORT/DB, sqlite:///PATH or a file "
                          "path")
    return SQLiteJobStore(text)


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
