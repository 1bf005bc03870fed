"""``/api/v1/health`` and ``/api/v1/limits``: what anyone may ask of the server (no key)."""

from __future__ import annotations

import dataclasses
import time

from fastapi import APIRouter

from kinemate import __version__
from kinemate.service.params import sampling_bounds
from kinemate.service.routes.deps import Config, CurrentWorker, Store
from kinemate.service.store import StoreUnavailable

router = APIRouter(prefix="/api/v1", tags=["service"])
HEALTH_FACTS = ("model", "control_kind", "default_size", "device", "uses_reference", "preset")


POOL_SEEN_S = 30.0


@router.get("/health")
def health(worker: CurrentWorker, store: Store, config: Config):
    """Whether the server is up and the worker has its model loaded (no key needed); with
    several workers, ``pool`` lists those seen in the last 30 s. ``status`` is
    ``degraded`` while the job database does not answer."""
    out = {"status": "ok", "version": __version__, "worker": {
        "state": worker.state if config.start_worker else "none", "error": worker.error,
        "current_job": worker.current_job,
        **{k: v for k, v in worker.info.items() if k in HEALTH_FACTS}}}
    try:
        out["pool"] = [{"id": w.id, "device": w.device, "state": w.state,
                        "current_job": w.current_job, "models": w.info.get("models", []),
                        "model": w.info.get("model"), "seen_s_ago": round(time.time() - w.seen_at, 1)}
                       for w in store.list_workers(seen_within=POOL_SEEN_S)]
        out["database"] = "ok"
    except StoreUnavailable as exc:
        out["status"], out["database"] = "degraded", str(exc)
    return out


@router.get("/limits")
def limits(config: Config, worker: CurrentWorker, store: Store):
    """The limits every upload is checked against, and under ``options`` each sampling
    field: its type, bounds (``ge``, ``le``, ``gt``; null where none), help and the loaded
    model's default (null until the model is loaded). No key needed."""
    info = worker.info
    if not info.get("options"):  # no worker here (--no-worker): a worker of the pool's
        try:
            ready = [w for w in store.list_workers(seen_within=POOL_SEEN_S)
                     if w.info.get("options")]
            info = ready[-1].info if ready else info
        except StoreUnavailable:
            pass
    return {**dataclasses.asdict(config.limits),
            "options": sampling_bounds(config.limits, info.get("options"))}
