"""The two uploads of a job: split the multipart form, copy each file with a size cap, sniff
its kind from its bytes, check it (a video as far as its header and first frame: see
:func:`kinemate.service.media.check_video`) and store it in the job folder under a
server-made name.

Each file is written and checked under a temporary name and appears under its final name
(``reference.png``, ``driving.mp4``, ``driving.json``) only once it passed every check
(:func:`kinemate.io.atomic.atomic_path`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from fastapi import HTTPException
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from kinemate.io.atomic import atomic_path
from kinemate.service import media
from kinemate.service.config import Limits
from kinemate.service.params import FIELDS

FILE_FIELDS = ("reference", "driving")
SNIFF_BYTES = 64


class _ClosingBoundary:
    """Watches a multipart body as it streams in for its close delimiter ``CRLF--boundary--``
    (which no part may contain, so seeing it means the body was sent to its end)."""

    def __init__(self, boundary: bytes):
        self.delimiter = b"\r\n--" + boundary + b"--"
        self.carry = b"\r\n"  # a body may open with the delimiter (a form with no parts)
        self.seen = False

    def feed(self, chunk: bytes) -> None:
        if self.seen or not chunk:
            return
        data = self.carry + chunk
        self.seen = self.delimiter in data
        self.carry = data[-(len(self.delimiter) - 1):]


async def read_form(request: Request, *, max_files: int, max_fields: int,
                    max_part_size: int) -> FormData:
    """``request.form(...)``, refusing (400) a body that ends before its closing boundary.

    The multipart parser forgives a cut body: the part in progress at the cut never ends, so
    it is dropped without a word (a ``seed`` cut to "1234" became the default seed). The
    stream is watched for the close delimiter; an epilogue after it is allowed (RFC 2046)."""
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:  # the parser answers 400 itself
        return await request.form(max_files=max_files, max_fields=max_fields,
                                  max_part_size=max_part_size)
    watch = _ClosingBoundary(boundary)
    receive = request.receive

    async def watched_receive():
        message = await receive()
        if message.get("type") == "http.request":
            watch.feed(message.get("body", b""))
        return message

    form = await Request(request.scope, watched_receive).form(
        max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)
    if not watch.seen:
        await form.close()
        raise HTTPException(400, "the multipart body ends before its closing boundary "
                            "(--BOUNDARY--): the upload was cut off, and the fields after the "
                            "cut would be lost — send the complete request again")
    return form


def split_form(form: FormData) -> tuple[dict[str, str], dict[str, UploadFile]]:
    """The text fields and the two files of a job form; 422 for a field given twice, a file
    where text belongs (or the reverse), an unknown file or a missing one."""
    fields: dict[str, str] = {}
    files: dict[str, UploadFile] = {}
    for name, value in form.multi_items():
        if name in fields or name in files:
            raise HTTPException(422, f"{name!r} is given more than once — send each field once")
        if name in FILE_FIELDS:
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
    # the reference may be left out: whether the model takes one is checked by the route
    missing = [n for n in FILE_FIELDS if n not in files and n != "reference"]
    if missing:
        raise HTTPException(422, f"missing file field(s): {', '.join(missing)} — send the "
                            "reference photo as 'reference' and the driving video or pose "
                            "JSON as 'driving'")
    return fields, files


def _head(upload: UploadFile, what: str) -> bytes:
    """The first bytes of an upload (for sniffing); refuses an empty file."""
    upload.file.seek(0)
    head = upload.file.read(SNIFF_BYTES)
    if not head:
        raise media.UploadRejected(f"{what} is empty (0 bytes) — choose the file again")
    return head


def copy_capped(upload: UploadFile, dst: Path, cap: int, what: str) -> None:
    """Copy an upload to ``dst`` in chunks, refusing more than ``cap`` bytes (413)."""
    src = upload.file
    src.seek(0)
    total = 0
    with open(dst, "wb") as out:
        while chunk := src.read(1 << 20):
            total += len(chunk)
            if total > cap:
                raise media.UploadRejected(
                    f"{what} is larger than the limit of {cap / 2**20:.0f} MiB — upload a "
                    "smaller file", 413)
            out.write(chunk)


def checked_inputs(files: dict[str, UploadFile], job_dir: Path, limits: Limits,
                   checks: threading.BoundedSemaphore) -> dict:
    """:func:`store_inputs`, at most ``max_concurrent_checks`` at a time (decoding a photo,
    parsing a pose JSON or demuxing a video is CPU work; many at once must not starve the
    worker). A video's frames are not all decoded here: the worker does that first thing."""
    with checks:
        return store_inputs(files, job_dir, limits)


def store_inputs(files: dict[str, UploadFile], job_dir: Path, limits: Limits) -> dict:
    """Sniff, copy and check the uploads into ``job_dir``; returns the job's ``inputs`` (no
    ``reference`` for a model without one)."""
    inputs = {"driving": _store_driving(files["driving"], job_dir, limits)}
    if "reference" in files:
        inputs["reference"] = _store_reference(files["reference"], job_dir, limits)
    return inputs


def _store_reference(upload: UploadFile, job_dir: Path, lim: Limits) -> dict:
    what = "the reference image"
    kind = media.sniff(_head(upload, what))
    if kind not in media.IMAGE_KINDS:
        raise media.UploadRejected(
            "the reference is not a PNG, JPEG, WebP, BMP or TIFF image (judged from its content, "
            f"not its name{'; it looks like ' + kind if kind else ''}) — upload a photo", 415)
    final = job_dir / f"reference{media.IMAGE_KINDS[kind]}"
    with atomic_path(final) as tmp:
        copy_capped(upload, tmp, lim.max_image_bytes, what)
        info = media.check_image(tmp, kind, lim)
    return {"file": final.name, "name": media.display_name(upload.filename), "kind": kind,
            "width": info.width, "height": info.height}


def _store_driving(upload: UploadFile, job_dir: Path, lim: Limits) -> dict:
    kind = media.sniff(_head(upload, "the driving file"))
    name = media.display_name(upload.filename)
    if kind == "json":
        with atomic_path(job_dir / "driving.json") as tmp:
            copy_capped(upload, tmp, lim.max_pose_json_bytes, "the pose JSON")
            pose = media.check_pose_json(tmp, lim)
        return {"file": "driving.json", "name": name, "kind": "pose", "frames": pose.num_frames,
                "fps": pose.fps, "width": pose.width, "height": pose.height,
                "retargetable": pose.retargetable}
    if kind not in media.VIDEO_KINDS:
        raise media.UploadRejected(
            "the driving file is neither a video (MP4/MOV, WebM/MKV, AVI, GIF) nor a pose "
            f"JSON, judged from its content{'; it looks like ' + kind if kind else ''} — "
            "upload one of those", 415)
    final = job_dir / f"driving{media.VIDEO_KINDS[kind]}"
    with atomic_path(final) as tmp:
        copy_capped(upload, tmp, lim.max_video_bytes, "the driving video")
        video = media.check_video(tmp, kind, lim)
    return {"file": final.name, "name": name, "kind": "video", "container": kind,
            "frames": video.num_frames, "fps": round(video.fps, 3), "width": video.width,
            "height": video.height, "duration_s": round(video.duration_s, 3)}
