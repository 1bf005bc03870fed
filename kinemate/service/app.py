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
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from kinemate import __version__
from kinemate.service import media
from kinemate.service.config import ServiceConfig
from kinemate.service.middleware import BodyLimit, BodyTooLarge, security_headers, too_large
from kinemate.service.params import validation_message
from kinemate.service.routes import jobs, pages, service
from kinemate.service.store import JobStore, SQLiteJobStore, owner_only
from kinemate.service.worker import Runner, Worker


def create_app(config: ServiceConfig, *, store: JobStore | None = None,
               runner: Runner | None = None) -> FastAPI:
    """Build the app. ``runner`` defaults to the real pipeline (loaded once, in the worker
    thread); ``store`` defaults to SQLite under ``config.data_dir``."""
    _make_data_dirs(config)
    store = store if store is not None else SQLiteJobStore(config.db_path)
    if runner is None:
        from kinemate.service.runner import PipelineRunner

        runner = PipelineRunner(config)
    worker = Worker(store, config, runner, prepare=getattr(runner, "load", None))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        _clean_orphans(config, store)
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
    app.state.checks = threading.BoundedSemaphore(config.limits.max_concurrent_checks)

    app.add_middleware(BodyLimit, max_bytes=config.limits.max_request_bytes)
    app.middleware("http")(security_headers)

    app.add_exception_handler(BodyTooLarge, _body_too_large)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(media.UploadRejected, _rejected)

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


def _clean_orphans(config: ServiceConfig, store: JobStore, min_age_s: float = 3600.0) -> None:
    """Remove job folders that never became jobs (a request died between upload and
    acceptance). Folders younger than ``min_age_s`` may belong to a request in flight."""
    known = store.all_job_ids()
    now = time.time()
    for path in Path(config.jobs_dir).iterdir():
        if path.is_dir() and path.name not in known and now - path.stat().st_mtime > min_age_s:
            shutil.rmtree(path, ignore_errors=True)
