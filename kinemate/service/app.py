"""The HTTP API and the web page (FastAPI).

Routes (all JSON except downloads; every error is ``{"detail": "<what was wrong and what to
do>"}`` with a 4xx status):

* ``POST /api/v1/jobs`` — multipart: ``reference`` (photo), ``driving`` (video or pose
  JSON), optional sampling fields (``steps``, ``guidance``, ``seed``, ``context_frames``,
  ``context_overlap``, ``closed_loop``, ``init_strength``, ``pad_to``; left out: the model's
  default) and ``control``, ``size``, ``fit``, ``watermark``, ``retarget``; optional header
  ``Idempotency-Key``. 201 with the job (200 when the same idempotency key was already used).
* ``GET /api/v1/jobs`` — the caller's jobs, newest first.
* ``GET /api/v1/jobs/{id}`` — state and progress.
* ``POST /api/v1/jobs/{id}/cancel``; ``DELETE /api/v1/jobs/{id}`` (a finished job, with its
  files).
* ``GET /api/v1/jobs/{id}/result`` and ``/grid`` — the MP4s once the job succeeded.
* ``GET /api/v1/jobs/{id}/preview`` — PNG of the first frame's control map.
* ``GET /api/v1/health``, ``GET /api/v1/limits`` — no key needed.
* ``GET /metrics`` — Prometheus text format (queue depth, jobs by state, workers, step time,
  GPU memory); no key needed (restrict it at the proxy).
* ``GET /`` — the web page; ``/reference`` — the OpenAPI description as one static page
  that works offline (``/docs`` and ``/redoc`` redirect there: FastAPI's Swagger UI and ReDoc
  pages load scripts and fonts from a CDN); ``/openapi.json``.

Authentication: ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``). A job is visible
only to the key that created it; anyone else gets 404, as for a job that does not exist.

The routes live in :mod:`kinemate.service.routes`, the uploads in
:mod:`kinemate.service.uploads`, the job fields in :mod:`kinemate.service.params`.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from kinemate import __version__
from kinemate.service import media
from kinemate.service.config import ServiceConfig
from kinemate.service.middleware import BodyLimit, BodyTooLarge, security_headers, too_large
from kinemate.service.params import validation_message
from kinemate.service.routes import jobs, pages, service
from kinemate.service.storage import StorageUnavailable, open_storage
from kinemate.service.store import JobStore, StoreUnavailable, open_store, owner_only
from kinemate.service.worker import Runner, Worker


def create_app(config: ServiceConfig, *, store: JobStore | None = None,
               runner: Runner | None = None) -> FastAPI:
    """Build the app. ``runner`` defaults to the real pipeline (loaded once, in the worker
    thread); ``store`` defaults to ``config.db_url`` (PostgreSQL or SQLite), else SQLite
    under ``config.data_dir``; the media storage is ``config.media_url``."""
    _make_data_dirs(config)
    store = store if store is not None else open_store(config.db)
    storage = open_storage(config.media_url, default_root=config.jobs_dir,
                           cache_dir=config.jobs_dir)
    if runner is None:
        from kinemate.service.runner import PipelineRunner

        runner = PipelineRunner(config)
    worker = Worker(store, config, runner, prepare=getattr(runner, "load", None),
                    storage=storage)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        try:  # (with an object store: the local staging and preview folders)
            _clean_orphans(config, store)
        except StoreUnavailable as exc:  # the database comes back later: start anyway
            import logging

            logging.getLogger("kinemate.service").warning("%s", exc)
        if config.start_worker:
            worker.start()
        try:
            yield
        finally:
            if config.start_worker:
                worker.stop()

    app = FastAPI(
        title="kinemate", version=__version__, lifespan=lifespan,
        docs_url=None, redoc_url=None,  # CDN pages; /docs and /redoc lead to /reference
        description="Animate the person in a photo with the motion of a driving video. "
                    "Create a job with `POST /api/v1/jobs`, poll it, download the result. "
                    "Send your API key as `Authorization: Bearer <key>`. The sampling fields "
                    "are those of the CLI and the Python API, with the same names and bounds; "
                    "one left out takes the model's default (`GET /api/v1/limits` shows them "
                    "with the server's caps).",
    )
    app.state.store, app.state.worker, app.state.config = store, worker, config
    app.state.storage = storage
    app.state.checks = threading.BoundedSemaphore(config.limits.max_concurrent_checks)

    app.add_middleware(BodyLimit, max_bytes=config.limits.max_request_bytes)
    app.middleware("http")(security_headers)

    app.add_exception_handler(BodyTooLarge, _body_too_large)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(media.UploadRejected, _rejected)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(StorageUnavailable, _storage_unavailable)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        from kinemate.service.metrics import CONTENT_TYPE, api_metrics

        return Response(api_metrics(store), media_type=CONTENT_TYPE)

    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    app.include_router(service.router)
    app.include_router(jobs.router)
    return app


def _make_data_dirs(config: ServiceConfig) -> None:
    """The data folder and its jobs folder; uploads are people's photos: owner-only access,
    also when the operator created the folders beforehand (the database: the store)."""
    for folder in (Path(config.data_dir), Path(config.jobs_dir)):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        owner_only(folder)


# -- error handlers: every error is {"detail": "..."} ------------------------------------
async def _body_too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
    return JSONResponse({"detail": too_large(request.app.state.config.limits.max_request_bytes)},
                        413)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail
    if exc.status_code == 404 and detail == "Not Found":
        detail = (f"nothing at {request.url.path[:100]!r} — the API is under /api/v1 "
                  "(see /reference), the web page at /")
    elif exc.status_code == 405 and detail == "Method Not Allowed":
        detail = (f"{request.method} is not allowed on {request.url.path[:100]!r} — see "
                  "/reference for the methods of each route")
    return JSONResponse({"detail": detail}, exc.status_code, headers=exc.headers)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": validation_message(exc.errors())}, 422)


async def _rejected(request: Request, exc: media.UploadRejected) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, exc.status)


RETRY_AFTER_S = 5


async def _store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
    """The job database does not answer (a restart): 503 with Retry-After; nothing about a
    job is decided until it answers again."""
    return JSONResponse({"detail": f"the service is temporarily unavailable: {exc}"}, 503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


async def _storage_unavailable(request: Request, exc: StorageUnavailable) -> JSONResponse:
    return JSONResponse({"detail": f"the service is temporarily unavailable: {exc}"}, 503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


def _clean_orphans(config: ServiceConfig, store: JobStore, min_age_s: float = 3600.0) -> None:
    """Remove job folders that never became jobs (a request died between upload and
    acceptance). Folders younger than ``min_age_s`` may belong to a request in flight."""
    known = store.all_job_ids()
    now = time.time()
    if not Path(config.jobs_dir).is_dir():
        return
    for path in Path(config.jobs_dir).iterdir():
        if path.is_dir() and path.name not in known and now - path.stat().st_mtime > min_age_s:
            shutil.rmtree(path, ignore_errors=True)
