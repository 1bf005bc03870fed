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
from kinemate.service import media
from kinemate.service.config import ServiceConfig
from kinemate.service.store import Job, JobStore

log = logging.getLogger("kinemate.service")

Report = Callable[[dict], None]
#: Least time between two progress reports of a long loop (each is a database write).
REPORT_INTERVAL_S = 0.25


class JobCancelled(Exception):
    """Raised inside a running job when its owner cancelled it."""


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
                 prepare: Callable[[], dict] | None = None):
        self.store = store
        self.config = config
        self.runner = runner
        self.prepare = prepare
        self.id = make_worker_id()
        self.state = "starting"  # starting | loading | ready | error | stopped
        self.error: str | None = None
        self.info: dict = {}
        self.current_job: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="kinemate-worker", daemon=True)
        self._thread.start()

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
                if job_id is not None and self.store.release(job_id, self.id):
                    log.info("job %s: still running at shutdown; handed back to the queue",
                             job_id)
                from kinemate.pipeline.scratch import remove_stale_spills

                remove_stale_spills(pid=os.getpid())
        self.state = "stopped"

    def recover(self) -> list[str]:
        ids = self.store.requeue_stale(
            max_attempts=self.config.max_attempts,
            worker_is_dead=lambda w: worker_is_dead(w, me=self.id),
            oom_killed=oom_killed_since, max_interruptions=self.config.max_interruptions,
        )
        if ids:
            log.warning("requeued %d job(s) left running by a dead worker: %s", len(ids), ids)
        return ids

    def _main(self) -> None:
        self.recover()
        from kinemate.pipeline.scratch import remove_stale_spills

        for path in remove_stale_spills():
            log.info("removed %s, left by a process that no longer runs", path)
        if self.prepare is not None:
            self.state = "loading"
            try:
                self.info = dict(self.prepare() or {})
            except Exception as exc:  # noqa: BLE001 - reported through /health and logs
                self.state = "error"
                self.error = str(exc) if isinstance(exc, KinemateError) else repr(exc)
                log.error("the worker cannot load the model: %s", self.error)
                return
        self.state = "ready"
        last_recover = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - last_recover > self.config.lease_seconds / 2:
                self.recover()
                last_recover = time.monotonic()
            job = self.store.claim_next(self.id, self.config.lease_seconds,
                                        oom_kills=oom_kill_count())
            if job is None:
                self._stop.wait(self.config.poll_seconds)
                continue
            self.run_job(job)

    # -- one job -----------------------------------------------------------------------
    def run_job(self, job: Job) -> None:
        self.current_job = job.id
        job_dir = Path(self.config.jobs_dir) / job.id
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job.id, stop_beat), daemon=True)
        beat.start()
        started = time.monotonic()
        log.info("job %s: start (attempt %d)", job.id, job.attempts)

        def report(progress: dict) -> None:
            if self.store.set_progress(job.id, self.id, progress) or self._stop.is_set():
                raise JobCancelled(job.id)

        try:
            report({"stage": "starting", "fraction": 0.0})
            _remove_unfinished_outputs(job_dir)  # of a run killed before it could clean up
            self._check_inputs(job, job_dir, report)
            result = dict(self.runner(job, job_dir, report) or {})
            result.setdefault("seconds", round(time.monotonic() - started, 3))
            self.store.finish(job.id, self.id, "succeeded", result=result)
            log.info("job %s: done in %.1f s", job.id, time.monotonic() - started)
        except JobCancelled:
            if self._stop.is_set() and not self.store.get_job(job.id).cancel_requested:
                # Shutting down, not cancelled: back to the queue, not counted as an attempt.
                self.store.release(job.id, self.id)
                log.info("job %s: interrupted by shutdown; back in the queue", job.id)
            else:
                self.store.finish(job.id, self.id, "cancelled", error="cancelled by its owner")
                self._discard(job_dir)
                log.info("job %s: cancelled", job.id)
        except KinemateError as exc:
            # Messages name files by path; the owner knows them as the job's inputs.
            message = str(exc).replace(f"{job_dir}{os.sep}", "").replace(str(job_dir), "job")
            self.store.finish(job.id, self.id, "failed", error=message)
            self._discard(job_dir)
            log.info("job %s: failed: %s", job.id, exc)
        except Exception as exc:  # noqa: BLE001 - a bug; keep the worker alive, record it
            log.error("job %s: internal error\n%s", job.id, traceback.format_exc())
            self.store.finish(job.id, self.id, "failed",
                              error=f"internal error ({type(exc).__name__}: {exc}); "
                                    "the server log has details")
            self._discard(job_dir)
        finally:
            stop_beat.set()
            beat.join(5)
            self.current_job = None
            trim_heap()

    def _discard(self, job_dir: Path) -> None:
        """What the runner keeps to resume a job (its sampler state) is of no use once the
        job ended as cancelled or failed; a job handed back to the queue keeps it."""
        discard = getattr(self.runner, "discard", None)
        if discard is not None:
            discard(job_dir)

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

    def _heartbeat(self, job_id: str, stop: threading.Event) -> None:
        """Renew this job's lease; meanwhile also requeue jobs of dead workers (so a long job
        here does not hold up recovery of another worker's crash)."""
        interval = max(self.config.lease_seconds / 3, 0.2)
        last_recover = time.monotonic()
        while not stop.wait(interval):
            try:
                if not self.store.renew_lease(job_id, self.id, self.config.lease_seconds,
                                              oom_kills=oom_kill_count()):
                    return
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
