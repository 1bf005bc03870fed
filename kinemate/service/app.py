"""The HTTP API and the web page (FastAPI).

Routes (all JSON except downloads; every error is ``{"detail": "<what was wrong and what to
do>"}`` with a 4xx status):

* ``POST /api/v1/jobs`` — multipart: ``reference`` (photo), ``driving`` (video or pose
  JSON), optional ``steps``, ``guidance``, ``seed``, ``control``, ``size``, ``fit``,
  ``watermark``; optional header ``Idempotency-Key``. 201 with the job (200 when the same
  idempotency key was already used).
* ``GET /api/v1/jobs`` — the caller's jobs, newest first.
* ``GET /api/v1/jobs/{id}`` — state and progress.
* ``POST /api/v1/jobs/{id}/cancel``; ``DELETE /api/v1/jobs/{id}`` (a finished job, with its
  files).
* ``GET /api/v1/jobs/{id}/result`` and ``/grid`` — the MP4s once the job succeeded.
* ``GET /api/v1/jobs/{id}/preview`` — PNG of the first frame's control map.
* ``GET /api/v1/health``, ``GET /api/v1/limits`` — no key needed.
* ``GET /`` — the web page; ``/docs`` — OpenAPI docs (Swagger UI, needs a CDN);
  ``/reference`` — the same description as one static page that works offline.

Authentication: ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``). A job is visible
only to the key that created it; anyone else gets 404, as for a job that does not exist.
"""


import contextlib
import logging
import math
import re
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from kinemate import __version__
from kinemate.service import media
from kinemate.service.config import ServiceConfig
from kinemate.service.store import JobStore, KeyRecord, LimitReached, SQLiteJobStore
from kinemate.service.worker import Runner, Worker

log = logging.getLogger("kinemate.service")
STATIC = Path(__file__).with_name("static")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
FIELDS = ("steps", "guidance", "seed", "control", "size", "fit", "watermark", "retarget")
MAX_SEED = 2**63 - 1
# The web page loads only its own files; media are shown from blob: URLs made by its script.
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
            "connect-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


# -- request body limit -----------------------------------------------------------------
class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse a request body above ``max_bytes`` — from its Content-Length
    before reading anything, or while it streams in (chunked uploads)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    return await _send_json(send, 413 if declared > 0 else 400, _too_large(
                        self.max_bytes) if declared > 0 else "the Content-Length header is not "
                        "a number — send a well-formed request")
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        return await self.app(scope, limited_receive, send)


def _too_large(max_bytes: int) -> str:
    return (f"the request is larger than the limit of {max_bytes / 2**20:.0f} MiB — upload "
            "smaller files (shorter or downscaled video)")


async def _send_json(send, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# -- parameters -------------------------------------------------------------------------
class JobParams(BaseModel):
    """Generation parameters of a job (form fields of ``POST /api/v1/jobs``)."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(25, ge=1, description="denoising steps")
    guidance: float = Field(7.5, ge=0.0, description="classifier-free guidance scale")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="random seed (default: drawn once, "
                      "kept with the job, so a rerun after a crash gives the same video)")
    control: Literal["auto", "densepose", "pose"] = "auto"
    size: str | None = Field(None, description="output size WxH, multiples of 8 (default: "
                             "the model's)")
    fit: Literal["crop", "letterbox"] = "crop"
    watermark: bool = True
    retarget: bool = Field(True, description="pose control: fit the motion to the person in "
                           "the photo (bone lengths, position)")

    @field_validator("guidance")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("size")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is None or v.strip().lower() in ("", "auto", "default"):
            return None
        m = re.fullmatch(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*", v)
        if not m:
            raise ValueError("must look like 512x512 (width x height)")
        w, h = int(m.group(1)), int(m.group(2))
        if w % 8 or h % 8:
            raise ValueError(f"{w}x{h}: width and height must be multiples of 8")
        return f"{w}x{h}"


def _parse_params(form_fields: dict[str, str], config: ServiceConfig) -> JobParams:
    values: dict[str, Any] = {k: v for k, v in form_fields.items()}
    if values.get("size") is None:
        values.pop("size", None)
    values.setdefault("steps", config.default_steps)
    values.setdefault("guidance", config.default_guidance)
    values.setdefault("watermark", config.watermark_default)
    if values.get("seed") in (None, ""):
        values["seed"] = secrets.randbelow(2**31)
    try:
        params = JobParams.model_validate(values)
    except ValidationError as exc:
        raise HTTPException(422, _validation_message(exc.errors())) from None
    lim = config.limits
    problems = []
    if params.steps > lim.max_steps:
        problems.append(f"steps: at most {lim.max_steps}")
    if params.guidance > lim.max_guidance:
        problems.append(f"guidance: at most {lim.max_guidance:g}")
    if params.size:
        w, h = (int(x) for x in params.size.split("x"))
        if not (lim.min_output_side <= w <= lim.max_output_side
                and lim.min_output_side <= h <= lim.max_output_side):
            problems.append(f"size: {params.size} is outside {lim.min_output_side}.."
                            f"{lim.max_output_side} pixels per side")
    if problems:
        raise HTTPException(422, "; ".join(problems) + " — change these parameters and resend")
    return params


def _validation_message(errors: list[dict]) -> str:
    parts = []
    for err in errors[:10]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = f"unknown field (allowed: reference, driving, {', '.join(FIELDS)})"
        parts.append(f"{loc or 'request'}: {msg}")
    return "; ".join(parts) + " — fix these fields and resend"


# -- app --------------------------------------------------------------------------------
def job_json(job) -> dict:
    """The public view of a job (server-side file names stay private)."""
    base = f"/api/v1/jobs/{job.id}"
    links = {"self": base, "cancel": f"{base}/cancel", "preview": f"{base}/preview"}
    if job.state == "succeeded":
        links["result"] = f"{base}/result"
        if job.result.get("grid"):
            links["grid"] = f"{base}/grid"
    return {
        "id": job.id, "state": job.state, "params": job.params,
        "inputs": {k: {kk: vv for kk, vv in v.items() if kk != "file"}
                   for k, v in job.inputs.items()},
        "progress": job.progress, "error": job.error, "attempts": job.attempts,
        "cancel_requested": job.cancel_requested, "created_at": job.created_at,
        "started_at": job.started_at, "finished_at": job.finished_at,
        "result": {k: v for k, v in job.result.items() if k not in ("file", "grid")},
        "links": links,
    }


def create_app(config: ServiceConfig, *, store: JobStore | None = None,
               runner: Runner | None = None) -> FastAPI:
    """Build the app. ``runner`` defaults to the real pipeline (loaded once, in the worker
    thread); ``store`` defaults to SQLite under ``config.data_dir``."""
    if not Path(config.data_dir).exists():  # uploads are people's photos: owner-only access
        Path(config.data_dir).mkdir(parents=True, mode=0o700)
    Path(config.jobs_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    store = store if store is not None else SQLiteJobStore(config.db_path)
    prepare = None
    if runner is None:
        from kinemate.service.runner import PipelineRunner

        runner = PipelineRunner(config)
        prepare = runner.load
    worker = Worker(store, config, runner, prepare=prepare or getattr(runner, "load", None))
    checks = threading.BoundedSemaphore(config.limits.max_concurrent_checks)

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
        description="Animate the person in a photo with the motion of a driving video. "
                    "Create a job with `POST /api/v1/jobs`, poll it, download the result. "
                    "Send your API key as `Authorization: Bearer <key>`.",
    )
    app.state.store, app.state.worker, app.state.config = store, worker, config
    app.add_middleware(BodyLimit, max_bytes=config.limits.max_request_bytes)

    @app.middleware("http")
    async def _security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        path = request.url.path
        if path == "/" or path.startswith("/static/"):
            response.headers["Content-Security-Policy"] = PAGE_CSP
            response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.exception_handler(BodyTooLarge)
    async def _body_too_large(request: Request, exc: BodyTooLarge):
        return JSONResponse({"detail": _too_large(config.limits.max_request_bytes)}, 413)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = (f"nothing at {request.url.path[:100]!r} — the API is under /api/v1 "
                      "(see /docs), the web page at /")
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            detail = (f"{request.method} is not allowed on {request.url.path[:100]!r} — see "
                      "/docs for the methods of each route")
        return JSONResponse({"detail": detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_message(exc.errors())}, 422)

    @app.exception_handler(media.UploadRejected)
    async def _rejected(request: Request, exc: media.UploadRejected):
        return JSONResponse({"detail": str(exc)}, exc.status)

    # -- auth --------------------------------------------------------------------------
    def current_key(
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> KeyRecord:
        secret = x_api_key
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise HTTPException(401, "the Authorization header must be 'Bearer <API key>'",
                                    headers={"WWW-Authenticate": "Bearer"})
            secret = value.strip()
        if not secret:
            raise HTTPException(401, "an API key is required: send 'Authorization: Bearer "
                                "<key>' (create one with 'kinemate serve keys create')",
                                headers={"WWW-Authenticate": "Bearer"})
        key = store.authenticate(secret)
        if key is None:
            raise HTTPException(401, "this API key is not valid (unknown or revoked) — ask the "
                                "operator for a key ('kinemate serve keys create')",
                                headers={"WWW-Authenticate": "Bearer"})
        return key

    Key = Annotated[KeyRecord, Depends(current_key)]

    def owned_job(job_id: str, key: KeyRecord):
        job = store.get_job(job_id, owner=key.id) if JOB_ID.match(job_id) else None
        if job is None:
            raise HTTPException(404, f"no job {job_id[:64]!r} for this API key — list yours "
                                "with GET /api/v1/jobs")
        return job

    # -- routes ------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/reference", include_in_schema=False)
    def reference():
        from kinemate.service.apidoc import REFERENCE_CSP, render_reference

        if getattr(app.state, "reference_page", None) is None:
            app.state.reference_page = render_reference(app.openapi())
        return Response(app.state.reference_page, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": REFERENCE_CSP, "X-Frame-Options": "DENY"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/v1/health", tags=["service"])
    def health():
        """Whether the server is up and the worker has its model loaded (no key needed)."""
        return {"status": "ok", "version": __version__, "worker": {
            "state": worker.state, "error": worker.error, "current_job": worker.current_job,
            **{k: v for k, v in worker.info.items() if k in ("model", "control_kind",
                                                             "default_size", "device")}}}

    @app.get("/api/v1/limits", tags=["service"])
    def limits():
        """The limits every upload is checked against (no key needed)."""
        import dataclasses

        return dataclasses.asdict(config.limits)

    create_doc = {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["reference", "driving"],
            "properties": {
                "reference": {"type": "string", "format": "binary",
                              "description": "reference photo (PNG, JPEG, WebP, BMP, TIFF)"},
                "driving": {"type": "string", "format": "binary",
                            "description": "driving video (MP4/MOV, WebM/MKV, AVI, GIF) or "
                                           "pose track JSON"},
                **{name: {**prop, "description": prop.get("description", "")}
                   for name, prop in JobParams.model_json_schema()["properties"].items()},
            }}}}},
    }

    @app.post("/api/v1/jobs", status_code=201, tags=["jobs"], openapi_extra=create_doc,
              responses={200: {"description": "the job already created with this "
                                              "Idempotency-Key"},
                         413: {"description": "too large"}, 415: {"description": "wrong type"},
                         422: {"description": "invalid field or file"},
                         429: {"description": "too many active jobs for this key"}})
    async def create_job(request: Request, key: Key,
                         idempotency_key: Annotated[str | None, Header()] = None):
        """Upload a reference photo and a driving video (or pose JSON) and queue a job."""
        if idempotency_key is not None and not re.fullmatch(r"[\x21-\x7e]{1,128}",
                                                            idempotency_key):
            raise HTTPException(422, "Idempotency-Key must be 1-128 visible ASCII characters")
        if worker.state == "error":
            raise HTTPException(503, f"the server cannot run jobs: its model failed to load "
                                f"({worker.error}) — tell the operator; try again later")
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise HTTPException(415, "send the job as multipart/form-data with the files "
                                "'reference' and 'driving' (e.g. curl -F reference=@photo.png "
                                "-F driving=@dance.mp4)")
        if idempotency_key is not None:
            existing = await run_in_threadpool(_existing, store, key.id, idempotency_key)
            if existing is not None:
                return JSONResponse(job_json(existing), 200)
        await run_in_threadpool(_check_active, store, key, config)  # early, before the upload
        form = await request.form(max_files=2, max_fields=len(FIELDS) + 2,
                                  max_part_size=64 * 1024)
        try:
            fields, files = _split_form(form)
            params = _parse_params(fields, config)
            job_id = secrets.token_hex(16)
            job_dir = Path(config.jobs_dir) / job_id
            job_dir.mkdir(parents=True)
            try:
                inputs = await run_in_threadpool(_checked_inputs, files, job_dir, config,
                                                 checks)
                if inputs["driving"]["kind"] == "pose" and params.control == "densepose":
                    raise HTTPException(422, "control 'densepose' needs a DensePose video, but "
                                        "the driving file is a pose JSON — use control 'pose' "
                                        "or 'auto'")
                job, created = await run_in_threadpool(  # the moment of acceptance
                    lambda: store.create_job(job_id, key.id, params.model_dump(), inputs,
                                             max_active=config.limits.max_active_jobs_per_key,
                                             idempotency_key=idempotency_key))
            except BaseException:
                shutil.rmtree(job_dir, ignore_errors=True)
                raise
            if not created:
                shutil.rmtree(job_dir, ignore_errors=True)
                return JSONResponse(job_json(job), 200)
        except LimitReached:
            raise HTTPException(429, _limit_message(config)) from None
        finally:
            await form.close()
        log.info("job %s: accepted for key %s", job.id, key.id)
        return JSONResponse(job_json(job), 201, headers={"Location": f"/api/v1/jobs/{job.id}"})

    @app.get("/api/v1/jobs", tags=["jobs"])
    def list_jobs(key: Key, limit: Annotated[int, Query(ge=1, le=500)] = 50):
        """Your jobs, newest first."""
        return {"jobs": [job_json(j) for j in store.list_jobs(key.id, limit)]}

    @app.get("/api/v1/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str, key: Key):
        """State (queued, running, succeeded, failed, cancelled) and progress of a job."""
        return job_json(owned_job(job_id, key))

    @app.post("/api/v1/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel_job(job_id: str, key: Key):
        """Cancel a queued job at once, or a running one at its next progress report."""
        owned_job(job_id, key)
        return job_json(store.request_cancel(job_id, key.id))

    @app.delete("/api/v1/jobs/{job_id}", tags=["jobs"], status_code=204,
                responses={409: {"description": "the job is still queued or running"}})
    def delete_job(job_id: str, key: Key):
        """Delete a finished job with its uploads and results (cancel a running one first)."""
        job = owned_job(job_id, key)
        if not store.delete_job(job_id, key.id):
            raise HTTPException(409, f"job {job_id} is {job.state}; cancel it and wait until it "
                                "is cancelled, then delete it")
        shutil.rmtree(Path(config.jobs_dir) / job.id, ignore_errors=True)
        return Response(status_code=204)

    def _download(job_id: str, key: KeyRecord, which: str):
        job = owned_job(job_id, key)
        if job.state != "succeeded":
            raise HTTPException(409, f"job {job_id} is {job.state}, there is no result yet — "
                                "poll GET /api/v1/jobs/{id} until its state is 'succeeded'")
        name = job.result.get(which)
        path = Path(config.jobs_dir) / job.id / name if name else None
        if path is None or not path.is_file():
            raise HTTPException(404, f"job {job_id} has no {which} file")
        label = "result" if which == "file" else "grid"
        return FileResponse(path, media_type=_media_type(path),
                            filename=f"kinemate-{job.id[:8]}-{label}{path.suffix}")

    @app.get("/api/v1/jobs/{job_id}/result", tags=["jobs"],
             responses={200: {"content": {"video/mp4": {}}}})
    def get_result(job_id: str, key: Key):
        """The animated video (MP4)."""
        return _download(job_id, key, "file")

    @app.get("/api/v1/jobs/{job_id}/grid", tags=["jobs"],
             responses={200: {"content": {"video/mp4": {}}}})
    def get_grid(job_id: str, key: Key):
        """Side-by-side video: reference | control | result."""
        return _download(job_id, key, "grid")

    @app.get("/api/v1/jobs/{job_id}/preview", tags=["jobs"],
             responses={200: {"content": {"image/png": {}}}})
    def get_preview(job_id: str, key: Key):
        """PNG of the control map of the first driving frame (the pose the model will see)."""
        from kinemate.service.preview import preview_png, resolve_control

        job = owned_job(job_id, key)
        path = preview_png(job, Path(config.jobs_dir) / job.id, worker.info)
        return FileResponse(path, media_type="image/png", headers={
            "Cache-Control": "private, max-age=3600",
            "X-Kinemate-Control": resolve_control(job, worker.info)})

    return app


def _existing(store: JobStore, owner: str, idem: str):
    for job in store.list_jobs(owner, 500):
        if job.idempotency_key == idem:
            return job
    return None


def _limit_message(config: ServiceConfig) -> str:
    n = config.limits.max_active_jobs_per_key
    return (f"this API key already has {n} queued or running jobs (the limit) — wait until one "
            "finishes or cancel one, then resend")


def _check_active(store: JobStore, key: KeyRecord, config: ServiceConfig) -> None:
    active = sum(1 for j in store.list_jobs(key.id, 500) if j.state in ("queued", "running"))
    if active >= config.limits.max_active_jobs_per_key:
        raise HTTPException(429, _limit_message(config))


def _split_form(form) -> tuple[dict[str, str], dict[str, UploadFile]]:
    fields: dict[str, str] = {}
    files: dict[str, UploadFile] = {}
    for name, value in form.multi_items():
        if name in fields or name in files:
            raise HTTPException(422, f"{name!r} is given more than once — send each field once")
        if name in ("reference", "driving"):
            if not isinstance(value, UploadFile):
                raise HTTPException(422, f"{name!r} must be a file upload, not a text field "
                                    f"(curl -F {name}=@file)")
            files[name] = value
        elif isinstance(value, UploadFile):
            raise HTTPException(422, f"{name[:50]!r} must be a text field, not a file"
                                if name in FIELDS else
                                f"unknown file field {name[:50]!r} (expected 'reference' and "
                                "'driving')")
        else:
            fields[name] = value
    missing = [n for n in ("reference", "driving") if n not in files]
    if missing:
        raise HTTPException(422, f"missing file field(s): {', '.join(missing)} — send the "
                            "reference photo as 'reference' and the driving video or pose "
                            "JSON as 'driving'")
    return fields, files


def _copy_capped(upload: UploadFile, dst: Path, cap: int, what: str) -> bytes:
    """Copy an upload to ``dst`` in chunks, refusing more than ``cap`` bytes; returns the
    first bytes (for sniffing)."""
    src = upload.file
    src.seek(0)
    head = b""
    total = 0
    with open(dst, "wb") as out:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > cap:
                raise media.UploadRejected(
                    f"{what} is larger than the limit of {cap / 2**20:.0f} MiB — upload a "
                    "smaller file", 413)
            if len(head) < 64:
                head += chunk[: 64 - len(head)]
            out.write(chunk)
    if total == 0:
        raise media.UploadRejected(f"{what} is empty (0 bytes) — choose the file again")
    return head


def _checked_inputs(files: dict[str, UploadFile], job_dir: Path, config: ServiceConfig,
                    checks: threading.BoundedSemaphore) -> dict:
    """:func:`_store_inputs`, at most ``max_concurrent_checks`` at a time (decoding every
    frame of an upload is CPU work; many at once must not starve the worker)."""
    with checks:
        return _store_inputs(files, job_dir, config)


def _store_inputs(files: dict[str, UploadFile], job_dir: Path, config: ServiceConfig) -> dict:
    """Copy, sniff and check both uploads; returns the ``inputs`` record of the job."""
    lim = config.limits
    inputs = {}
    ref = files["reference"]
    tmp = job_dir / "reference.upload"
    kind = media.sniff(_copy_capped(ref, tmp, lim.max_image_bytes, "the reference image"))
    if kind not in media.IMAGE_KINDS:
        raise media.UploadRejected(
            "the reference is not a PNG, JPEG, WebP, BMP or TIFF image (judged from its content, "
            f"not its name{'; it looks like ' + kind if kind else ''}) — upload a photo", 415)
    final = job_dir / f"reference{media.IMAGE_KINDS[kind]}"
    tmp.rename(final)
    info = media.check_image(final, kind, lim)
    inputs["reference"] = {"file": final.name, "name": media.display_name(ref.filename),
                           "kind": kind, "width": info.width, "height": info.height}

    drv = files["driving"]
    tmp = job_dir / "driving.upload"
    head = _copy_capped(drv, tmp, max(lim.max_video_bytes, lim.max_pose_json_bytes),
                        "the driving file")
    kind = media.sniff(head)
    if kind == "json":
        if tmp.stat().st_size > lim.max_pose_json_bytes:
            raise media.UploadRejected(f"the pose JSON is larger than the limit of "
                                       f"{lim.max_pose_json_bytes / 2**20:.0f} MiB", 413)
        final = job_dir / "driving.json"
        tmp.rename(final)
        pinfo = media.check_pose_json(final, lim)
        inputs["driving"] = {"file": final.name, "name": media.display_name(drv.filename),
                             "kind": "pose", "frames": pinfo.num_frames, "fps": pinfo.fps,
                             "width": pinfo.width, "height": pinfo.height}
    else:
        if kind not in media.VIDEO_KINDS:
            raise media.UploadRejected(
                "the driving file is neither a video (MP4/MOV, WebM/MKV, AVI, GIF) nor a pose "
                f"JSON, judged from its content{'; it looks like ' + kind if kind else ''} — "
                "upload one of those", 415)
        if tmp.stat().st_size > lim.max_video_bytes:
            raise media.UploadRejected(f"the driving video is larger than the limit of "
                                       f"{lim.max_video_bytes / 2**20:.0f} MiB", 413)
        final = job_dir / f"driving{media.VIDEO_KINDS[kind]}"
        tmp.rename(final)
        vinfo = media.check_video(final, kind, lim)
        inputs["driving"] = {"file": final.name, "name": media.display_name(drv.filename),
                             "kind": "video", "container": kind, "frames": vinfo.num_frames,
                             "fps": round(vinfo.fps, 3), "width": vinfo.width,
                             "height": vinfo.height, "duration_s": round(vinfo.duration_s, 3)}
    return inputs


def _media_type(path: Path) -> str:
    return {".mp4": "video/mp4", ".gif": "image/gif", ".png": "image/png"}.get(
        path.suffix.lower(), "application/octet-stream")


def _clean_orphans(config: ServiceConfig, store: JobStore, min_age_s: float = 3600.0) -> None:
    """Remove job folders that never became jobs (a request died between upload and
    acceptance). Folders younger than ``min_age_s`` may belong to a request in flight."""
    known = store.all_job_ids()
    now = time.time()
    for path in Path(config.jobs_dir).iterdir():
        if path.is_dir() and path.name not in known and now - path.stat().st_mtime > min_age_s:
            shutil.rmtree(path, ignore_errors=True)
