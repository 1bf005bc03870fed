"""``/api/v1/jobs``: create, list, read, cancel and delete jobs, download their results."""

from __future__ import annotations

import logging
import re
import secrets
import shutil
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from kinemate.service.config import ServiceConfig
from kinemate.service.params import FIELDS, form_properties, parse_params
from kinemate.service.routes.deps import Config, CurrentWorker, Key, Store
from kinemate.service.store import Job, KeyRecord, LimitReached, StoreUnavailable
from kinemate.service.uploads import checked_inputs, read_form, split_form

log = logging.getLogger("kinemate.service")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


def _check_control(control: str, inputs: dict, worker_info: dict) -> None:
    """Refuse at submission a control the loaded model cannot follow (a job accepted must be
    able to run): the engine's own rule (:func:`kinemate.pipeline.animate.choose_control`),
    asked with the model's control kind once the worker has loaded it."""
    from kinemate.errors import UsageError
    from kinemate.pipeline.animate import choose_control

    try:
        choose_control(control, worker_info.get("control_kind"),
                       pose_input=inputs["driving"]["kind"] == "pose",
                       model=worker_info.get("model", "the model"))
    except UsageError as exc:
        raise HTTPException(422, f"{exc} — change the field 'control' or the driving file and "
                            "resend") from None


def _check_reference(files: dict, params: dict, worker_info: dict) -> None:
    """A model takes a reference photo (then no prompt) or, like text2video-zero, a prompt
    and no photo; refuse the other at submission. Before the model has loaded, a photo is
    expected (as for every family but the text-conditioned ones)."""
    if worker_info.get("uses_reference", True):
        if "reference" not in files:
            raise HTTPException(422, "missing file field(s): reference — send the reference "
                                "photo as 'reference' and the driving video or pose JSON as "
                                "'driving'")
        if params.get("prompt") is not None or params.get("negative_prompt") is not None:
            raise HTTPException(422, f"{worker_info.get('model', 'this model')} takes its "
                                "appearance from the reference photo; leave out 'prompt' and "
                                "'negative_prompt'")
        return
    model = worker_info.get("model", "this model")
    if "reference" in files:
        raise HTTPException(422, f"{model} takes no reference photo: appearance comes from the "
                            "field 'prompt' — send only 'driving' and 'prompt'")
    if not (params.get("prompt") or "").strip():
        raise HTTPException(422, f"{model} needs the field 'prompt': the text describes the "
                            "person and the scene")


class _ClientGone(Exception):
    """The client closed its connection before its job was accepted."""


def job_json(job: Job) -> dict:
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
        "interruptions": job.interruptions,
        "cancel_requested": job.cancel_requested, "created_at": job.created_at,
        "started_at": job.started_at, "finished_at": job.finished_at,
        "result": {k: v for k, v in job.result.items() if k not in ("file", "grid")},
        "links": links,
    }


def owned_job(job_id: str, key: Key, store: Store) -> Job:
    """The job ``job_id`` of the caller's key; 404 for anyone else's, as for no job."""
    job = store.get_job(job_id, owner=key.id) if JOB_ID.match(job_id) else None
    if job is None:
        raise HTTPException(404, f"no job {job_id[:64]!r} for this API key — list yours "
                            "with GET /api/v1/jobs")
    return job


OwnedJob = Annotated[Job, Depends(owned_job)]


def limit_message(config: ServiceConfig, limit: int | None = None) -> str:
    n = limit or config.limits.max_active_jobs_per_key
    return (f"this API key already has {n} queued or running jobs (the limit) — wait until one "
            "finishes or cancel one, then resend")


CREATE_DOC = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["driving"],
        "properties": {
            "reference": {"type": "string", "format": "binary",
                          "description": "reference photo (PNG, JPEG, WebP, BMP, TIFF); "
                                         "required, except by models without one "
                                         "(text2video-zero: send 'prompt' instead)"},
            "driving": {"type": "string", "format": "binary",
                        "description": "driving video (MP4/MOV, WebM/MKV, AVI, GIF) or "
                                       "pose track JSON"},
            **form_properties(),
        }}}}},
}


@router.post("", status_code=201, openapi_extra=CREATE_DOC,
             responses={200: {"description": "the job already created with this "
                                             "Idempotency-Key"},
                        413: {"description": "too large"}, 415: {"description": "wrong type"},
                        422: {"description": "invalid field or file"},
                        429: {"description": "too many active jobs for this key"}})
async def create_job(request: Request, key: Key, store: Store, config: Config,
                     worker: CurrentWorker,
                     idempotency_key: Annotated[str | None, Header()] = None):
    """Upload a reference photo and a driving video (or pose JSON) and queue a job. Sampling
    fields left out take the model's defaults."""
    if idempotency_key is not None and not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise HTTPException(422, "Idempotency-Key must be 1-128 visible ASCII characters")
    if worker.state == "error":
        raise HTTPException(503, f"the server cannot run jobs: its model failed to load "
                            f"({worker.error}) — tell the operator; try again later")
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise HTTPException(415, "send the job as multipart/form-data with the files "
                            "'reference' and 'driving' (e.g. curl -F reference=@photo.png "
                            "-F driving=@dance.mp4)")
    if idempotency_key is not None:
        existing = await run_in_threadpool(store.find_job_by_idempotency_key, key.id,
                                           idempotency_key)
        if existing is not None:
            return JSONResponse(job_json(existing), 200)
    # early, before the upload (the insert below checks again, atomically)
    active = await run_in_threadpool(store.count_active_jobs, key.id)
    if active >= (key.max_active or config.limits.max_active_jobs_per_key):
        raise HTTPException(429, limit_message(config, key.max_active))
    try:
        form = await read_form(request, max_files=2, max_fields=len(FIELDS) + 2,
                               max_part_size=64 * 1024)
    except ClientDisconnect:
        return _client_gone(key.id, "while sending the request")
    try:
        fields, files = split_form(form)
        params = parse_params(fields, config)
        _check_priority(params, key)
        info = await run_in_threadpool(serving_info, request, params.get("model"))
        storage = request.app.state.storage
        job_id = secrets.token_hex(16)
        job_dir = Path(config.jobs_dir) / job_id  # with an object store: staged here
        job_dir.mkdir(parents=True)
        try:
            if await client_gone(request):  # (also has the server watch the connection)
                raise _ClientGone()
            _check_reference(files, params, request.app.state.worker.info)
            inputs = await run_in_threadpool(checked_inputs, files, job_dir, config.limits,
                                             request.app.state.checks)
            _check_control(params["control"], inputs, info)
            if (inputs["driving"]["kind"] == "pose" and params.get("retarget", True)
                    and not inputs["driving"].get("retargetable", True)):
                raise HTTPException(422, "no frame of the pose JSON shows the neck with another "
                                    "body keypoint, which retargeting the motion to the "
                                    "reference photo needs — send retarget=false to use the "
                                    "motion as it is, or a track that shows the upper body")
            if await client_gone(request):  # it gave up waiting: accept nothing
                raise _ClientGone()
            if not storage.in_place:  # every worker must find the files once it is accepted
                await run_in_threadpool(_store_inputs, storage, job_id, job_dir, inputs)
            job, created = await run_in_threadpool(  # the moment of acceptance
                lambda: store.create_job(job_id, key.id, params, inputs,
                                         max_active=config.limits.max_active_jobs_per_key,
                                         idempotency_key=idempotency_key,
                                         priority=params.get("priority", 0),
                                         model=params.get("model"),
                                         time_limit=config.job_time_limit))
        except BaseException as exc:
            if not (isinstance(exc, StoreUnavailable) and exc.ambiguous):
                # (maybe accepted: its files stay; a folder without a job is removed later)
                await run_in_threadpool(_remove_job_files, storage, job_id, job_dir)
            raise
        if not storage.in_place:
            shutil.rmtree(job_dir, ignore_errors=True)
        if not created:
            await run_in_threadpool(_remove_job_files, storage, job_id, job_dir)
            return JSONResponse(job_json(job), 200)
    except LimitReached as exc:
        raise HTTPException(429, limit_message(config, exc.limit)) from None
    except _ClientGone:
        return _client_gone(key.id, "before its job was accepted")
    finally:
        await form.close()
    log.info("job %s: accepted for key %s", job.id, key.id)
    return JSONResponse(job_json(job), 201, headers={"Location": f"/api/v1/jobs/{job.id}"})


def _store_inputs(storage, job_id: str, job_dir: Path, inputs: dict) -> None:
    for record in inputs.values():
        if record.get("file"):
            storage.put(job_id, record["file"], job_dir / record["file"])


def _remove_job_files(storage, job_id: str, job_dir: Path) -> None:
    shutil.rmtree(job_dir, ignore_errors=True)
    if not storage.in_place:
        try:
            storage.delete_job(job_id)
        except Exception:  # noqa: BLE001 - the storage is down: orphans, removed later
            log.warning("job %s: could not remove its uploads from the media storage", job_id)


def _check_priority(params: dict, key: KeyRecord) -> None:
    priority = params.get("priority", 0)
    if priority > key.max_priority:
        raise HTTPException(403, f"priority: this API key may ask for priority "
                            f"{key.max_priority} at most (asked {priority}) — send a lower "
                            "priority, or ask the operator to raise the key's max_priority")


SERVING_SEEN_S = 30.0  # workers seen this recently count as serving


def serving_info(request: Request, model: str | None) -> dict:
    """Facts of the model a job would run on: this process's worker when it serves it, else
    a worker of the pool seen lately that does (its ``info``). A job naming a model no
    worker serves is refused (422); with no worker registered at all the control check is
    left to the worker."""
    worker = request.app.state.worker
    local = worker.info if worker.state == "ready" else {}
    if model is None and local:
        return local
    if model is not None and model in worker.models:
        return {}
    workers = request.app.state.store.list_workers(seen_within=SERVING_SEEN_S)
    if model is None:
        ready = [w for w in workers if w.state in ("ready", "busy") and w.info.get("model")]
        return ready[-1].info if ready else local
    if any(model in w.info.get("models", ()) for w in workers):
        return {}
    served = sorted({m for w in workers for m in w.info.get("models", ())} | set(worker.models))
    raise HTTPException(422, f"model: no worker serves a model named {model!r} "
                        f"(served: {', '.join(served) or 'only the default model'}) — "
                        "leave the field out or name a served model")


async def client_gone(request: Request, look_s: float = 0.01) -> bool:
    """Whether the client closed its connection, asked once its request body was read.

    Unlike ``Request.is_disconnected`` (a receive cancelled before it runs, which under the
    app's http middleware never reaches the server), the server gets ``look_s`` to answer;
    asking also has it read from the connection again, so a close is seen the next time."""
    with anyio.move_on_after(look_s):
        message = await request.receive()
        return message.get("type") == "http.disconnect"
    return False


def _client_gone(key_id: str, when: str) -> JSONResponse:
    """A client that closed its connection: one log line, no job (the answer reaches nobody)."""
    log.info("upload for key %s: the client disconnected %s; no job was created", key_id, when)
    return JSONResponse({"detail": f"the client disconnected {when}; no job was created"}, 400)


@router.get("")
def list_jobs(key: Key, store: Store, limit: Annotated[int, Query(ge=1, le=500)] = 50):
    """Your jobs, newest first."""
    return {"jobs": [job_json(j) for j in store.list_jobs(key.id, limit)]}


@router.get("/{job_id}")
def get_job(job: OwnedJob):
    """State (queued, running, succeeded, failed, cancelled) and progress of a job."""
    return job_json(job)


@router.post("/{job_id}/cancel")
def cancel_job(job: OwnedJob, key: Key, store: Store):
    """Cancel a queued job at once, or a running one at its next progress report."""
    return job_json(store.request_cancel(job.id, key.id))


@router.delete("/{job_id}", status_code=204,
               responses={409: {"description": "the job is still queued or running"}})
def delete_job(request: Request, job: OwnedJob, key: Key, store: Store, config: Config):
    """Delete a finished job with its uploads and results (cancel a running one first)."""
    if not store.delete_job(job.id, key.id):
        raise HTTPException(409, f"job {job.id} is {job.state}; cancel it and wait until it "
                            "is cancelled, then delete it")
    storage = request.app.state.storage
    storage.delete_job(job.id)
    shutil.rmtree(Path(config.jobs_dir) / job.id, ignore_errors=True)
    return Response(status_code=204)


def _download(request: Request, job: Job, config: ServiceConfig, which: str) -> Response:
    if job.state != "succeeded":
        raise HTTPException(409, f"job {job.id} is {job.state}, there is no result yet — "
                            "poll GET /api/v1/jobs/{id} until its state is 'succeeded'")
    name = job.result.get(which)
    storage = request.app.state.storage
    label = "result" if which == "file" else "grid"
    if not storage.in_place and name:
        found = storage.stream(job.id, name)
        if found is None:
            raise HTTPException(404, f"job {job.id} has no {which} file")
        chunks, size = found
        filename = f"kinemate-{job.id[:8]}-{label}{Path(name).suffix}"
        return StreamingResponse(chunks, media_type=_media_type(Path(name)), headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{filename}"'})
    path = Path(config.jobs_dir) / job.id / name if name else None
    if path is None or not path.is_file():
        raise HTTPException(404, f"job {job.id} has no {which} file")
    return FileResponse(path, media_type=_media_type(path),
                        filename=f"kinemate-{job.id[:8]}-{label}{path.suffix}")


def _media_type(path: Path) -> str:
    return {".mp4": "video/mp4", ".gif": "image/gif", ".png": "image/png"}.get(
        path.suffix.lower(), "application/octet-stream")


@router.get("/{job_id}/result", responses={200: {"content": {"video/mp4": {}}}})
def get_result(request: Request, job: OwnedJob, config: Config):
    """The animated video (MP4)."""
    return _download(request, job, config, "file")


@router.get("/{job_id}/grid", responses={200: {"content": {"video/mp4": {}}}})
def get_grid(request: Request, job: OwnedJob, config: Config):
    """Side-by-side video: reference | control | result."""
    return _download(request, job, config, "grid")


@router.get("/{job_id}/preview", responses={200: {"content": {"image/png": {}}}})
def get_preview(request: Request, job: OwnedJob, config: Config, worker: CurrentWorker):
    """PNG of the control map of the first driving frame (the pose the model will see)."""
    from kinemate.service.preview import preview_png, resolve_control

    job_dir = Path(config.jobs_dir) / job.id
    storage = request.app.state.storage
    if not storage.in_place:  # the inputs, cached here from the object store
        for record in job.inputs.values():
            name = record.get("file")
            if name and not (job_dir / name).is_file():
                storage.fetch(job.id, name, job_dir / name)
    path = preview_png(job, job_dir, worker.info)
    return FileResponse(path, media_type="image/png", headers={
        "Cache-Control": "private, max-age=3600",
        "X-Kinemate-Control": resolve_control(job, worker.info)})
