"""The worker: takes queued jobs one at a time and runs them on the device.

A runner is any callable ``runner(job, job_dir, report) -> dict``: it reads the inputs in
``job_dir``, writes its outputs there (atomically), calls ``report(progress_dict)`` as it
goes (``report`` raises :class:`JobCancelled` when the owner cancelled the job) and returns
the result record (file names relative to ``job_dir`` and facts worth showing). The default
runner, :class:`PipelineRunner`, loads the animation pipeline once and calls
:func:`kinemate.pipeline.animate_file`; tests and other deployments can inject their own.

Before the runner, the worker decodes every frame of an uploaded video
(:func:`kinemate.service.media.check_video_frames`; acceptance only read its header and first
frame), so a video that does not hold what its header says fails the job with that message.

Leases: while a job runs, a heartbeat thread renews its lease every third of
``lease_seconds``. If the process dies (crash, out of memory, SIGKILL), the lease runs out
and any worker — or this one after a restart, at once, because it sees that the process
named in the lease is gone — puts the job back in the queue. A run that ended because the
server stopped does not count as an attempt of the job (see
:meth:`~kinemate.service.store.SQLiteJobStore.requeue_stale`): on SIGTERM the worker hands
its job back (:meth:`~kinemate.service.store.SQLiteJobStore.release`); after a SIGKILL the
next worker tells a kill by the out-of-memory killer (blamed on the job) from other kills
(not) by the host's count of such kills, which the lease records (:func:`oom_kill_count`).
On start-up the worker removes the control spill folders of dead processes.

Many workers: a worker runs in the API process (``kinemate serve``) or on its own
(``kinemate worker --db URL``), any number of them on any number of hosts sharing one
database and one media storage (:mod:`kinemate.service.storage`). Each claim of a job is a
new *run* with its own fencing token (``job.fence``): the worker passes it with every
progress report, lease renewal and result, and the store refuses them once another run
replaced this one, so a worker that lost its lease (paused, cut off) stops at its next
report and never publishes a result. A job whose run exceeds its time limit fails. Workers
record themselves in the ``workers`` table (state, device, models, current job) for
``/api/v1/health`` and ``/metrics``. A database that does not answer for a while (a
restart) pauses the worker; it continues once it is back.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Protocol

from kinemate.errors import KinemateError
from kinemate.io.atomic import TMP_TAG, remove_quietly
from kinemate.service import media, metrics
from kinemate.service.config import ServiceConfig
from kinemate.service.storage import LocalStorage, Storage, StorageUnavailable, scratch_root
from kinemate.service.store import Job, JobStore, StoreUnavailable

log = logging.getLogger("kinemate.service")

Report = Callable[[dict], None]
#: Least time between two progress reports of a long loop (each is a database write).
REPORT_INTERVAL_S = 0.25


class JobCancelled(Exception):
    """Raised inside a running job when its owner cancelled it (or the worker lost it)."""


class JobTimedOut(Exception):
    """Raised inside a running job when its run took longer than its time limit."""


class Runner(Protocol):
    def __call__(self, job: Job, job_dir: Path, report: Report) -> dict: ...


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def oom_kill_count() -> int | None:
    """How many processes the kernel of this host has killed for lack of memory since it
    booted (``oom_kill`` in /proc/vmstat, Linux 4.13+; it counts cgroup limits too), or
    None where that is not known."""
    try:
        with open("/proc/vmstat", "rb") as f:
            for line in f:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def oom_killed_since(mark: int | None) -> bool:
    """True when the host killed a process for lack of memory since its count was ``mark``."""
    now = oom_kill_count()
    return mark is not None and now is not None and now > mark


def trim_heap() -> None:
    """Give the C heap's free memory back to the system (glibc ``malloc_trim``; elsewhere
    nothing). A job or a preview frees most of what it allocated (decoded frames, pose
    models, tensors), but glibc keeps freed pages mapped: without this the server's resident
    memory kept the high-water mark of every thread that ever ran one (pose extraction 40
    times: about 950 MiB resident; trimmed after each: about 160 MiB)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def throttled(report: Report, interval: float = REPORT_INTERVAL_S) -> Report:
    """``report``, called at most once per ``interval`` seconds (the first call always)."""
    last = [float("-inf")]

    def send(progress: dict) -> None:
        now = time.monotonic()
        if now - last[0] >= interval:
            last[0] = now
            report(progress)

    return send


def worker_is_dead(worker: str, *, me: str | None = None) -> bool:
    """True when ``worker`` names a process on this host that no longer exists (or an
    earlier incarnation of this process id). Workers on other hosts are judged by their
    lease alone."""
    try:
        host, pid_text, _token = worker.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    if me is not None and worker == me:
        return False
    if pid == os.getpid():
        return True  # same process id, different token: a previous life of this id
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Worker:
    """Runs jobs from ``store`` one at a time in a background thread."""

    def __init__(self, store: JobStore, config: ServiceConfig, runner: Runner, *,
                 prepare: Callable[[], dict] | None = None, storage: Storage | None = None):
        self.store = store
        self.config = config
        self.runner = runner
        self.prepare = prepare
        self.storage = storage if storage is not None else LocalStorage(config.jobs_dir)
        self.id = make_worker_id()
        self.state = "starting"  # starting | loading | ready | error | stopped
        self.error: str | None = None
        self.info: dict = {}
        self.current_job: str | None = None
        self.jobs_done = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_seen = float("-inf")
        self._store_down_since: float | None = None

    @property
    def models(self) -> list[str]:
        """Model names this worker serves (it claims jobs naming one of them, or none)."""
        return list(getattr(self.runner, "model_names", None) or [])

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="kinemate-worker", daemon=True)
        self._thread.start()

    def run_forever(self) -> None:
        """Run in this thread until :meth:`request_stop` (``kinemate worker``); a running
        job is handed back to the queue at its next progress report."""
        try:
            self._main()
        finally:
            if self.state != "error":
                self.state = "stopped"
            self._quietly(self.store.remove_worker, self.id)
            if not self.storage.in_place:
                import shutil

                shutil.rmtree(scratch_root(), ignore_errors=True)

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; a running job stops at its next progress report and goes back
        to the queue (not counted as an attempt). If it does not stop within ``timeout``
        (a long sampler step), it is handed back anyway and its scratch files are removed:
        the process is about to end, and the job reruns."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                job_id = self.current_job
                if job_id is not None and self._quietly(self.store.release, job_id, self.id,
                                                        fence=self._fence):
                    log.info("job %s: still running at shutdown; handed back to the queue",
                             job_id)
                from kinemate.pipeline.scratch import remove_stale_spills

                remove_stale_spills(pid=os.getpid())
        self.state = "stopped"
        self._quietly(self.store.remove_worker, self.id)

    def _quietly(self, call, *args, **kwargs):
        """``call(...)``, or None when the database does not answer (logged)."""
        try:
            return call(*args, **kwargs)
        except StoreUnavailable as exc:
            log.warning("%s", exc)
            return None

    def _register(self, force: bool = False) -> None:
        """Refresh this worker's row in ``workers`` (at most every worker_seen_seconds)."""
        now = time.monotonic()
        if not force and now - self._last_seen < self.config.worker_seen_seconds:
            return
        self._last_seen = now
        cache = getattr(self.runner, "cache", None)
        info = {**self.info, "models": self.models, "jobs_done": self.jobs_done,
                "loaded": cache.loaded() if cache is not None else []}
        if self.error:
            info["error"] = self.error
        try:
            self.store.register_worker(self.id, device=self.config.device, state=self.state,
                                       info=info, current_job=self.current_job)
        except StoreUnavailable as exc:
            log.warning("could not record this worker in the database: %s", exc)

    def recover(self) -> list[str]:
        ids = self.store.requeue_stale(
            max_attempts=self.config.max_attempts,
            worker_is_dead=lambda w: worker_is_dead(w, me=self.id),
            oom_killed=oom_killed_since, max_interruptions=self.config.max_interruptions,
        )
        if ids:
            log.warning("requeued %d job(s) left running by a dead worker: %s", len(ids), ids)
        for other in self.store.list_workers():  # rows of killed workers of this host
            if other.id != self.id and worker_is_dead(other.id, me=self.id):
                self.store.remove_worker(other.id)
        return ids

    def _main(self) -> None:
        self._quietly(self.recover)
        from kinemate.pipeline.scratch import remove_stale_spills

        for path in remove_stale_spills():
            log.info("removed %s, left by a process that no longer runs", path)
        if not self.storage.in_place:
            from kinemate.service.storage import remove_dead_scratch

            for path in remove_dead_scratch():
                log.info("removed %s, left by a worker that no longer runs", path)
        if self.prepare is not None:
            self.state = "loading"
            self._register(force=True)
            try:
                self.info = dict(self.prepare() or {})
            except Exception as exc:  # noqa: BLE001 - reported through /health and logs
                self.state = "error"
                self.error = str(exc) if isinstance(exc, KinemateError) else repr(exc)
                log.error("the worker cannot load the model: %s", self.error)
                self._register(force=True)
                return
        self.state = "ready"
        self._register(force=True)
        last_recover = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_recover > self.config.lease_seconds / 2:
                    self.recover()
                    last_recover = time.monotonic()
                self._register()
                job = self.store.claim_next(self.id, self.config.lease_seconds,
                                            oom_kills=oom_kill_count(), models=self.models)
                self._store_back()
            except StoreUnavailable as exc:
                self._store_down(exc)
                self._stop.wait(min(2.0, self.config.poll_seconds * 4))
                continue
            if job is None:
                self._stop.wait(self.config.poll_seconds)
                continue
            self.run_job(job)

    def _store_down(self, exc: Exception) -> None:
        if self._store_down_since is None:
            self._store_down_since = time.monotonic()
            log.warning("the job database does not answer; waiting for it: %s", exc)

    def _store_back(self) -> None:
        if self._store_down_since is not None:
            log.warning("the job database answers again (after %.1f s)",
                        time.monotonic() - self._store_down_since)
            self._store_down_since = None

    # -- one job -----------------------------------------------------------------------
    _fence: int | None = None

    def run_job(self, job: Job) -> None:
        self.current_job, self._fence = job.id, job.fence
        fence = job.fence
        in_place = self.storage.in_place
        job_dir = (self.storage.local_dir(job.id) if in_place
                   else scratch_root() / f"{job.id}-r{fence}")
        state_file = getattr(self.runner, "state_file", None)
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job.id, fence, stop_beat),
                                daemon=True)
        beat.start()
        started = time.monotonic()
        deadline = started + job.time_limit if job.time_limit else None
        if job.attempts + job.interruptions <= 1 and job.started_at is not None:
            metrics.QUEUE_SECONDS.observe(max(job.started_at - job.created_at, 0.0))
        log.info("job %s: start (attempt %d, run %d)", job.id, job.attempts, fence)
        self._register(force=True)
        synced = [0.0]

        def report(progress: dict) -> None:
            try:
                stop = self.store.set_progress(job.id, self.id, progress, fence=fence)
            except StoreUnavailable as exc:  # keep working; the lease says whether it is ours
                self._store_down(exc)
                stop = False
            else:
                self._store_back()
            if stop or self._stop.is_set():
                raise JobCancelled(job.id)
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimedOut(job.id)
            if not in_place and state_file:  # another host resumes from the last saved step
                path = job_dir / state_file
                mtime = path.stat().st_mtime if path.is_file() else 0.0
                if mtime > synced[0]:
                    self.storage.put(job.id, state_file, path)
                    synced[0] = mtime

        outcome = "failed"
        try:
            report({"stage": "starting", "fraction": 0.0})
            if not in_place:
                self._fetch_inputs(job, job_dir, state_file)
            _remove_unfinished_outputs(job_dir)  # of a run killed before it could clean up
            self._check_inputs(job, job_dir, report)
            result = dict(self.runner(job, job_dir, report) or {})
            result.setdefault("seconds", round(time.monotonic() - started, 3))
            if not in_place:
                result = self._upload_results(job, job_dir, result, fence)
            if self._publish(job, fence, "succeeded", result=result):
                outcome = "succeeded"
                if not in_place and state_file:
                    self.storage.remove(job.id, state_file)
                log.info("job %s: done in %.1f s", job.id, time.monotonic() - started)
            else:
                outcome = "lost"
                log.warning("job %s: finished, but this worker no longer holds it (its lease "
                            "ran out and another run took over): the result is not published",
                            job.id)
                if not in_place:
                    for name in {result.get("file"), result.get("grid")} - {None}:
                        self._quietly_storage(self.storage.remove, job.id, name)
        except JobCancelled:
            current = self._quietly(self.store.get_job, job.id)
            mine = current is not None and current.fence == fence and current.state == "running"
            if not mine:
                outcome = "lost"
                log.warning("job %s: this worker no longer holds it (its lease ran out and "
                            "another run took over); stopped", job.id)
            elif self._stop.is_set() and not current.cancel_requested:
                # Shutting down, not cancelled: back to the queue, not counted as an attempt.
                self._quietly(self.store.release, job.id, self.id, fence=fence)
                outcome = "released"
                log.info("job %s: interrupted by shutdown; back in the queue", job.id)
            else:
                outcome = "cancelled"
                if self._publish(job, fence, "cancelled", error="cancelled by its owner"):
                    self._discard(job, job_dir)
                log.info("job %s: cancelled", job.id)
        except JobTimedOut:
            limit = job.time_limit or 0
            if self._publish(job, fence, "failed", error=(
                    f"the job ran longer than the time limit of {limit:g} s per run and was "
                    "stopped — ask for fewer frames, fewer steps or a smaller size")):
                self._discard(job, job_dir)
            log.info("job %s: stopped at its time limit (%g s)", job.id, limit)
        except KinemateError as exc:
            # Messages name files by path; the owner knows them as the job's inputs.
            message = str(exc).replace(f"{job_dir}{os.sep}", "").replace(str(job_dir), "job")
            if isinstance(exc, (StoreUnavailable, StorageUnavailable)):
                outcome = "lost"  # not the job's fault: its lease runs out, it runs again
                log.warning("job %s: left for another run: %s", job.id, message)
            elif self._publish(job, fence, "failed", error=message):
                self._discard(job, job_dir)
                log.info("job %s: failed: %s", job.id, exc)
        except Exception as exc:  # noqa: BLE001 - a bug; keep the worker alive, record it
            log.error("job %s: internal error\n%s", job.id, traceback.format_exc())
            if self._publish(job, fence, "failed",
                             error=f"internal error ({type(exc).__name__}: {exc}); "
                                   "the server log has details"):
                self._discard(job, job_dir)
        finally:
            stop_beat.set()
            beat.join(5)
            self.current_job, self._fence = None, None
            metrics.JOB_SECONDS.labels(outcome).observe(time.monotonic() - started)
            metrics.JOBS_FINISHED.labels(outcome).inc()
            self.jobs_done += outcome == "succeeded"
            cache = getattr(self.runner, "cache", None)
            if cache is not None:
                metrics.CACHE_BYTES.set(cache.total_bytes)
                metrics.CACHE_MODELS.set(len(cache.loaded()))
            if not in_place:
                import shutil

                shutil.rmtree(job_dir, ignore_errors=True)
            self._register(force=True)
            trim_heap()

    def _publish(self, job: Job, fence: int, state: str, **fields) -> bool:
        """The fenced ``finish``; while the database does not answer, tried again until it
        does or the lease would have run out (then the job runs again elsewhere)."""
        give_up = time.monotonic() + max(self.config.lease_seconds, 5.0)
        while True:
            try:
                done = self.store.finish(job.id, self.id, state, fence=fence, **fields)
                self._store_back()
                return done
            except StoreUnavailable as exc:
                self._store_down(exc)
                if time.monotonic() > give_up:
                    log.warning("job %s: could not record its end (%s): it runs again", job.id,
                                state)
                    return False
                time.sleep(0.5)

    def _quietly_storage(self, call, *args) -> None:
        try:
            call(*args)
        except StorageUnavailable as exc:
            log.warning("%s", exc)

    def _fetch_inputs(self, job: Job, job_dir: Path, state_file: str | None) -> None:
        """Copy a job's uploads (and its saved sampler state) from the storage into the
        worker's scratch folder."""
        job_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for role, record in job.inputs.items():
            name = record.get("file") if isinstance(record, dict) else None
            if name and not self.storage.fetch(job.id, name, job_dir / name):
                raise StorageUnavailable(f"the {role} file of job {job.id} is missing from "
                                         f"the media storage {self.storage.url}")
        if state_file:
            self.storage.fetch(job.id, state_file, job_dir / state_file)

    def _upload_results(self, job: Job, job_dir: Path, result: dict, fence: int) -> dict:
        """Upload the result files under names of this run (``result-r<fence>.mp4``)."""
        result = dict(result)
        for field in ("file", "grid"):
            name = result.get(field)
            if not name:
                continue
            stem, dot, suffix = name.rpartition(".")
            stored = f"{stem}-r{fence}.{suffix}" if dot else f"{name}-r{fence}"
            self.storage.put(job.id, stored, job_dir / name)
            result[field] = stored
        return result

    def _discard(self, job: Job, job_dir: Path) -> None:
        """What the runner keeps to resume a job (its sampler state) is of no use once the
        job ended as cancelled or failed; a job handed back to the queue keeps it. Only the
        run that recorded the end discards it (another run may be using it)."""
        discard = getattr(self.runner, "discard", None)
        if discard is not None:
            discard(job_dir)
        state_file = getattr(self.runner, "state_file", None)
        if not self.storage.in_place and state_file:
            self._quietly_storage(self.storage.remove, job.id, state_file)

    def _check_inputs(self, job: Job, job_dir: Path, report: Report) -> None:
        """Decode every frame of an uploaded video (stage "checking"); raises
        :class:`~kinemate.service.media.UploadRejected` when it does not hold what its
        header declared, :class:`JobCancelled` when the job is cancelled meanwhile."""
        driving = job.inputs.get("driving", {})
        if driving.get("kind") != "video":
            return
        send = throttled(report)

        def on_frame(count: int, declared: int) -> None:
            send({"stage": "checking", "frames": count, "total_frames": declared,
                  "fraction": 0.0})

        media.check_video_frames(job_dir / driving["file"], driving, self.config.limits,
                                 on_frame=on_frame)

    def _heartbeat(self, job_id: str, fence: int, stop: threading.Event) -> None:
        """Renew this job's lease; meanwhile also requeue jobs of dead workers (so a long job
        here does not hold up recovery of another worker's crash)."""
        interval = max(self.config.lease_seconds / 3, 0.2)
        last_recover = time.monotonic()
        while not stop.wait(interval):
            try:
                if not self.store.renew_lease(job_id, self.id, self.config.lease_seconds,
                                              oom_kills=oom_kill_count(), fence=fence):
                    log.warning("job %s: its lease was lost (another run took over); it "
                                "stops at its next progress report", job_id)
                    return
                self._register()
                if time.monotonic() - last_recover > self.config.lease_seconds / 2:
                    self.recover()
                    last_recover = time.monotonic()
            except Exception:  # noqa: BLE001 - a busy database must not kill the heartbeat
                log.warning("could not renew the lease of job %s", job_id, exc_info=True)


def _remove_unfinished_outputs(job_dir: Path) -> None:
    """Temporary result files (``result.kinemate-tmp-*.mp4``, ``grid...``) of an earlier run
    of this job that was killed before it could remove them."""
    for name in ("result", "grid"):
        for path in job_dir.glob(f"{name}{TMP_TAG}*"):
            remove_quietly(path)
