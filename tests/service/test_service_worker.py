"""The worker loop with injected runners (the runner is an injectable callable by design):
bugs in a runner fail that job only, cancellation reaches a running job, a model that cannot
load is reported."""

from __future__ import annotations

import dataclasses
import time

import pytest

from kinemate.errors import WeightsError
from kinemate.service.config import ServiceConfig
from kinemate.service.store import SQLiteJobStore
from kinemate.service.worker import Worker


@pytest.fixture()
def setup(tmp_path):
    config = ServiceConfig(data_dir=tmp_path, poll_seconds=0.05, lease_seconds=2.0)
    store = SQLiteJobStore(config.db_path)
    owner = store.create_key("k")[0].id
    return config, store, owner


def _wait(store, job_id, states=("succeeded", "failed", "cancelled"), timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get_job(job_id)
        if job.state in states:
            return job
        time.sleep(0.02)
    raise AssertionError(f"{job_id} stuck in {store.get_job(job_id).state}")


def test_a_runner_bug_fails_that_job_and_the_worker_goes_on(setup):
    config, store, owner = setup

    def runner(job, job_dir, report):
        report({"stage": "denoising", "step": 1})
        if job.params["n"] == 0:
            raise RuntimeError("boom")
        return {"file": "result.mp4"}

    for n in range(2):
        store.create_job(f"{n:032x}", owner, {"n": n}, {}, max_active=9)
    worker = Worker(store, config, runner)
    worker.start()
    try:
        bad, good = _wait(store, f"{0:032x}"), _wait(store, f"{1:032x}")
    finally:
        worker.stop()
    assert bad.state == "failed" and "internal error (RuntimeError: boom)" in bad.error
    assert good.state == "succeeded" and good.result["file"] == "result.mp4"
    assert good.result["seconds"] >= 0 and good.progress["step"] == 1


def test_cancel_reaches_a_running_job_at_its_next_report(setup):
    config, store, owner = setup
    reports = []

    def runner(job, job_dir, report):
        for step in range(1000):
            reports.append(step)
            report({"step": step})
            time.sleep(0.01)
        return {}

    store.create_job(f"{1:032x}", owner, {}, {}, max_active=9)
    worker = Worker(store, config, runner)
    worker.start()
    try:
        _wait(store, f"{1:032x}", states=("running",))
        while len(reports) < 3:
            time.sleep(0.01)
        store.request_cancel(f"{1:032x}", owner)
        job = _wait(store, f"{1:032x}")
    finally:
        worker.stop()
    assert job.state == "cancelled" and len(reports) < 1000


def test_a_model_that_cannot_load_is_reported(setup):
    config, store, owner = setup

    def prepare():
        raise WeightsError("weights folder /x does not exist; pass the folder")

    worker = Worker(store, config, lambda *a: {}, prepare=prepare)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while worker.state != "error" and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
    assert worker.error == "weights folder /x does not exist; pass the folder"


def test_shutdown_hands_the_job_back_to_the_queue_not_counted_as_an_attempt(setup):
    config, store, owner = setup
    config = dataclasses.replace(config, lease_seconds=0.5)

    def runner(job, job_dir, report):
        while True:
            report({})
            time.sleep(0.01)

    store.create_job(f"{1:032x}", owner, {}, {}, max_active=9)
    worker = Worker(store, config, runner)
    worker.start()
    _wait(store, f"{1:032x}", states=("running",))
    worker.stop()
    job = store.get_job(f"{1:032x}")  # not cancelled, not failed, not an attempt
    assert (job.state, job.attempts, job.interruptions) == ("queued", 0, 1)
    nxt = Worker(store, config, lambda job, d, report: {"file": "r.mp4"})
    nxt.start()
    try:
        job = _wait(store, f"{1:032x}")
    finally:
        nxt.stop()
    assert (job.state, job.attempts, job.interruptions) == ("succeeded", 1, 1)
