"""``/api/v1/health`` and ``/api/v1/limits``: what anyone may ask of the server (no key)."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter

from kinemate import __version__
from kinemate.service.params import sampling_bounds
from kinemate.service.routes.deps import Config, CurrentWorker

router = APIRouter(prefix="/api/v1", tags=["service"])
HEALTH_FACTS = ("model", "control_kind", "default_size", "device", "uses_reference", "preset")


@router.get("/health")
def health(worker: CurrentWorker):
    """Whether the server is up and the worker has its model loaded (no key needed)."""
    return {"status": "ok", "version": __version__, "worker": {
        "state": worker.state, "error": worker.error, "current_job": worker.current_job,
        **{k: v for k, v in worker.info.items() if k in HEALTH_FACTS}}}


@router.get("/limits")
def limits(config: Config, worker: CurrentWorker):
    """The limits every upload is checked against, and under ``options`` each sampling
    field: its type, bounds (``ge``, ``le``, ``gt``; null where none), help and the loaded
    model's default (null until the model is loaded). No key needed."""
    return {**dataclasses.asdict(config.limits),
            "options": sampling_bounds(config.limits, worker.info.get("options"))}
