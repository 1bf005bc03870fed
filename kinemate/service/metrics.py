"""Prometheus metrics (text format, ``prometheus_client``).

The API process answers ``GET /metrics`` with what the job database says at scrape time
(queue depth, jobs by state, the oldest queued job's wait, workers seen lately) and what this
process measured itself (when it runs a worker: sampler step time, job time, queue latency,
jobs finished, the model cache, GPU memory). A ``kinemate worker`` process serves its own
measures on ``--metrics-port``; Prometheus scrapes the API and every worker.
"""

from __future__ import annotations

import sys
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WORKER_SEEN_S = 30.0  # 3 refreshes (worker_seen_seconds)  # a worker seen within this is counted as alive

# What this process measures (a worker's).
REGISTRY = CollectorRegistry(auto_describe=True)
STEP_SECONDS = Histogram(
    "kinemate_step_seconds", "Time of one sampler step (all context windows of a video)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=REGISTRY)
JOB_SECONDS = Histogram(
    "kinemate_job_run_seconds", "Time a worker spent running a job (one run)", ["state"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=REGISTRY)
QUEUE_SECONDS = Histogram(
    "kinemate_queue_latency_seconds", "Time from a job's acceptance to its first start",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600), registry=REGISTRY)
JOBS_FINISHED = Counter("kinemate_worker_jobs_total", "Runs ended by this process, by outcome",
                        ["outcome"], registry=REGISTRY)
CACHE_BYTES = Gauge("kinemate_model_cache_bytes", "Bytes of the models this worker holds",
                    registry=REGISTRY)
CACHE_MODELS = Gauge("kinemate_model_cache_models", "Models this worker holds loaded",
                     registry=REGISTRY)


class _GpuCollector:
    """GPU memory of this process, per CUDA device (only once torch is imported with CUDA)."""

    def collect(self):
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            return
        allocated = GaugeMetricFamily("kinemate_gpu_memory_allocated_bytes",
                                      "GPU memory held by tensors of this process", labels=["device"])
        reserved = GaugeMetricFamily("kinemate_gpu_memory_reserved_bytes",
                                     "GPU memory reserved by this process's caching allocator",
                                     labels=["device"])
        peak = GaugeMetricFamily("kinemate_gpu_memory_peak_bytes",
                                 "Peak GPU memory held by tensors of this process",
                                 labels=["device"])
        total = GaugeMetricFamily("kinemate_gpu_memory_total_bytes", "GPU memory of the device",
                                  labels=["device"])
        free = GaugeMetricFamily("kinemate_gpu_memory_free_bytes",
                                 "GPU memory free on the device (all processes)", labels=["device"])
        for i in range(torch.cuda.device_count()):
            if not torch.cuda.is_initialized():
                break
            dev = f"cuda:{i}"
            allocated.add_metric([dev], torch.cuda.memory_allocated(i))
            reserved.add_metric([dev], torch.cuda.memory_reserved(i))
            peak.add_metric([dev], torch.cuda.max_memory_allocated(i))
            free_b, total_b = torch.cuda.mem_get_info(i)
            free.add_metric([dev], free_b)
            total.add_metric([dev], total_b)
        yield from (allocated, reserved, peak, total, free)


REGISTRY.register(_GpuCollector())


class StoreCollector:
    """What the job database says, read at scrape time."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        from kinemate.service.store import StoreUnavailable

        up = GaugeMetricFamily("kinemate_store_up", "1 when the job database answered")
        try:
            counts = self.store.job_counts()
            oldest = self.store.oldest_queued_age()
            workers = self.store.list_workers(seen_within=WORKER_SEEN_S)
        except StoreUnavailable:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily("kinemate_queue_depth", "Jobs waiting for a worker")
        depth.add_metric([], counts["queued"])
        yield depth
        jobs = GaugeMetricFamily("kinemate_jobs", "Jobs in the database by state", labels=["state"])
        for state, n in counts.items():
            jobs.add_metric([state], n)
        yield jobs
        wait = GaugeMetricFamily("kinemate_queue_oldest_wait_seconds",
                                 "How long the oldest queued job has waited (0: none waits)")
        wait.add_metric([], oldest or 0.0)
        yield wait
        alive = GaugeMetricFamily("kinemate_workers", f"Workers seen in the last "
                                  f"{WORKER_SEEN_S:g} s, by state", labels=["state"])
        by_state: dict[str, int] = {}
        for w in workers:
            by_state[w.state] = by_state.get(w.state, 0) + 1
        for state, n in sorted(by_state.items()):
            alive.add_metric([state], n)
        yield alive


def api_metrics(store) -> bytes:
    """The text of ``GET /metrics``: the database's view and this process's measures."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return generate_latest(registry) + generate_latest(REGISTRY)


class StepTimer:
    """Times sampler steps: ``tick()`` at every step callback, ``start()`` at the first."""

    def __init__(self):
        self.last: float | None = None

    def start(self) -> None:
        self.last = time.perf_counter()

    def tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            STEP_SECONDS.observe(now - self.last)
        self.last = now
