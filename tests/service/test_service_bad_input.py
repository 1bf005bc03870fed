"""Malformed requests and files: every one gets a 4xx answer with a clear message, never a
5xx; afterwards the server is still up and every accepted job is still there.

The cases are generated (auth x endpoints, parameters x bad values, bad files x names, ...);
`test_suite_is_large_enough` checks there are at least 200.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service_helpers import TINY_SIZE, artifacts_dir, multipart

ODD_NAMES = ["photo.png", "../../../../etc/passwd", "фото 🧍‍♀️.png", "名前\u202e.png",
             "a" * 300, "C:\\Windows\\x.png", " ", "%2e%2e%2fdb"]


# -- inputs -------------------------------------------------------------------------------
def _png(w=32, h=32, seed=0) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(w=32, h=32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h, with one tiny (wrong) IDAT: a decompression bomb probe."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(
            ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _gif() -> bytes:
    buf = io.BytesIO()
    frames = [Image.fromarray(np.full((16, 16, 3), v, np.uint8)) for v in (0, 255)]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=40)
    return buf.getvalue()


@pytest.fixture(scope="module")
def media(tiny_inputs, tmp_path_factory) -> dict[str, bytes]:
    from kinemate.io import write_video

    tmp = tmp_path_factory.mktemp("bad-media")
    ref = tiny_inputs["reference"].read_bytes()
    mp4 = tiny_inputs["driving"].read_bytes()
    write_video(tmp / "wide.mp4", [np.zeros((16, 2112, 3), np.uint8)] * 2, 25)
    write_video(tmp / "long.mp4", [np.full((16, 16, 3), i * 4 % 255, np.uint8) for i in range(62)], 1)
    write_video(tmp / "many.mp4", [np.full((16, 16, 3), i % 255, np.uint8) for i in range(1502)], 60)
    return {"ref": ref, "mp4": mp4, "wide": (tmp / "wide.mp4").read_bytes(),
            "long": (tmp / "long.mp4").read_bytes(), "many": (tmp / "many.mp4").read_bytes(),
            "png": _png(), "jpeg": _jpeg(), "gif": _gif()}


BAD_REFERENCES = {
    "empty": lambda m: b"",
    "one-byte": lambda m: b"\x89",
    "random": lambda m: np.random.default_rng(1).bytes(2048),
    "text": lambda m: b"hello, this is not a photo\n",
    "html": lambda m: b"<!doctype html><script>alert(1)</script>",
    "svg": lambda m: b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="9" height="9"/></svg>',
    "pdf": lambda m: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n",
    "zip": lambda m: b"PK\x03\x04" + b"\0" * 60,
    "elf": lambda m: b"\x7fELF\x02\x01\x01" + b"\0" * 60,
    "gif-not-a-photo": lambda m: m["gif"],
    "mp4-as-photo": lambda m: m["mp4"],
    "json-as-photo": lambda m: b'{"not": "an image"}',
    "png-magic-only": lambda m: b"\x89PNG\r\n\x1a\n",
    "png-cut-33": lambda m: m["png"][:33],
    "png-cut-half": lambda m: m["png"][: len(m["png"]) // 2],
    "png-cut-90pc": lambda m: m["png"][: len(m["png"]) * 9 // 10],
    "png-corrupt-idat": lambda m: m["png"][:60] + bytes(b ^ 0xFF for b in m["png"][60:200])
    + m["png"][200:],
    "png-claims-100000x100000": lambda m: _png_header_only(100_000, 100_000),
    "png-claims-9000x9000": lambda m: _png_header_only(9000, 9000),
    "png-claims-0x0": lambda m: _png_header_only(0, 0),
    "png-2x2": lambda m: _png(2, 2),
    "jpeg-magic-only": lambda m: b"\xff\xd8\xff",
    "jpeg-cut-half": lambda m: m["jpeg"][: len(m["jpeg"]) // 2],
    "bmp-header-only": lambda m: b"BM" + b"\0" * 20,
    "webp-garbage": lambda m: b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 16,
}

BAD_DRIVING = {
    "empty": lambda m: b"",
    "random": lambda m: np.random.default_rng(2).bytes(4096),
    "text": lambda m: b"just some text, no video",
    "png-image": lambda m: m["png"],
    "jpeg-image": lambda m: m["jpeg"],
    "mp4-cut-10pc": lambda m: m["mp4"][: len(m["mp4"]) // 10],
    "mp4-cut-25pc": lambda m: m["mp4"][: len(m["mp4"]) // 4],
    "mp4-cut-50pc": lambda m: m["mp4"][: len(m["mp4"]) // 2],
    "mp4-cut-75pc": lambda m: m["mp4"][: len(m["mp4"]) * 3 // 4],
    "mp4-cut-95pc": lambda m: m["mp4"][: len(m["mp4"]) * 95 // 100],
    "mp4-cut-last-byte": lambda m: m["mp4"][:-1],
    "mp4-ftyp-only": lambda m: m["mp4"][:32],
    "mp4-ftyp-garbage": lambda m: m["mp4"][:32] + np.random.default_rng(3).bytes(4096),
    "mp4-zeroed-middle": lambda m: m["mp4"][:48] + b"\0" * (len(m["mp4"]) - 96) + m["mp4"][-48:],
    "mkv-garbage": lambda m: b"\x1a\x45\xdf\xa3" + np.random.default_rng(4).bytes(2048),
    "avi-garbage": lambda m: b"RIFF\0\x10\0\0AVI LIST" + np.random.default_rng(5).bytes(2048),
    "gif-header-only": lambda m: b"GIF89a\x10\x00\x10\x00",
    "gif-cut": lambda m: m["gif"][: len(m["gif"]) // 2],
    "video-too-wide": lambda m: m["wide"],
    "video-too-long": lambda m: m["long"],
    "video-too-many-frames": lambda m: m["many"],
    "json-broken": lambda m: b'{"frames": [',
    "json-array": lambda m: b"[1, 2, 3]",
    "json-empty-object": lambda m: b"{}",
    "json-wrong-types": lambda m: b'{"body": "x", "width": "wide", "height": null}',
    "json-nested-deep": lambda m: b"[" * 100_000 + b"]" * 100_000,
    "json-nan": lambda m: b'{"width": NaN, "height": 1, "body": []}',
    "json-bom-garbage": lambda m: b"\xef\xbb\xbf{garbage",
    "json-not-utf8": lambda m: b'{"name": "\xff\xfe\xfd"}',
    "json-huge-numbers": lambda m: b'{"width": 1e999, "height": 1e999, "fps": -1, "body": [[[1e999]]]}',
}

BAD_PARAMS = {
    "steps": ["0", "-1", "101", "1000000000000", "abc", "1.5", "", "1e3", "２"],
    "guidance": ["-0.1", "30.5", "nan", "inf", "-inf", "x", "1e400", ""],
    "seed": ["-1", str(2**63), str(2**64), "x", "1.5"],
    "control": ["openpose", "", "DensePose", "auto;rm -rf /", "pose\u0000"],
    "size": ["abc", "100x100", "8x8", "2048x2048", "0x0", "512", "-8x8", "64x64x64",
             "99999999x8", "64 by 64"],
    "fit": ["stretch", "", "CROP"],
    "watermark": ["maybe", "2", ""],
    "retarget": ["perhaps", "-1"],
    "context_frames": ["0", "65", "x"],
    "context_overlap": ["-1", "64"],
    "closed_loop": ["perhaps", ""],
    "init_strength": ["0", "1.5", "nan"],
    "pad_to": ["-1", "65"],
    "num_inference_steps": ["2"],  # the old name of steps
    "bogus": ["1"],
    "Steps": ["2"],
    "__proto__": ["{}"],
}


def _valid_fields(m, **override):
    fields = {"reference": ("reference", "photo.png", m["ref"], "image/png"),
              "driving": ("driving", "dance.mp4", m["mp4"], "video/mp4"),
              "steps": ("steps", "1"), "size": ("size", TINY_SIZE)}
    fields.update(override)
    return [v for v in fields.values() if v is not None]


# -- the cases: (id, builder(ctx) -> request dict, expected status or None for any 4xx) --
CASES: list[tuple[str, object, int | None]] = []


def case(name, expected=None):
    def deco(fn):
        CASES.append((name, fn, expected))
        return fn
    return deco


CREDENTIALS = {
    "no-key": {},
    "empty-bearer": {"Authorization": "Bearer "},
    "wrong-scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
    "unknown-key": {"Authorization": "Bearer km_000000000000_notakey"},
    "garbage-key": {"Authorization": "Bearer " + "x" * 5000},
    "wrong-x-api-key": {"X-API-Key": "km_abc_def"},
    "revoked-key": "revoked",
    "key-plus-char": "tampered",
}
ENDPOINTS = [("GET", "/api/v1/jobs"), ("POST", "/api/v1/jobs"), ("GET", "/api/v1/jobs/{job}"),
             ("POST", "/api/v1/jobs/{job}/cancel"), ("GET", "/api/v1/jobs/{job}/result"),
             ("GET", "/api/v1/jobs/{job}/grid"), ("GET", "/api/v1/jobs/{job}/preview"),
             ("DELETE", "/api/v1/jobs/{job}")]

for cred_name, cred in CREDENTIALS.items():
    for method, path in ENDPOINTS:
        def build(ctx, cred=cred, method=method, path=path):
            if cred == "revoked":
                headers = {"Authorization": f"Bearer {ctx['revoked']}"}
            elif cred == "tampered":
                headers = {"Authorization": f"Bearer {ctx['key']}x"}
            else:
                headers = dict(cred)
            req = {"method": method, "path": path.format(job=ctx["job"]), "headers": headers,
                   "auth": False}
            if method == "POST" and path == "/api/v1/jobs":
                req["fields"] = _valid_fields(ctx["media"])
            return req
        case(f"auth-{cred_name}-{method}-{path.rsplit('/', 1)[-1]}", 401)(build)

for name, values in BAD_PARAMS.items():
    for value in values:
        case(f"param-{name}={value[:20]!r}", 422)(
            lambda ctx, name=name, value=value: {
                "fields": _valid_fields(ctx["media"], **{name: (name, value)})})

for i, (bad, make) in enumerate(BAD_REFERENCES.items()):
    for name in (ODD_NAMES[0], ODD_NAMES[1 + i % (len(ODD_NAMES) - 1)]):
        case(f"reference-{bad}-as-{name[:12]!r}")(
            lambda ctx, make=make, name=name: {"fields": _valid_fields(
                ctx["media"], reference=("reference", name, make(ctx["media"]), "image/png"))})

for i, (bad, make) in enumerate(BAD_DRIVING.items()):
    for name in ("dance.mp4", ODD_NAMES[1 + i % (len(ODD_NAMES) - 1)] + ".mp4"):
        case(f"driving-{bad}-as-{name[:12]!r}")(
            lambda ctx, make=make, name=name: {"fields": _valid_fields(
                ctx["media"], driving=("driving", name, make(ctx["media"]), "video/mp4"))})

STRUCTURE = {
    "no-files": lambda m: _valid_fields(m, reference=None, driving=None),
    "no-reference": lambda m: _valid_fields(m, reference=None),
    "no-driving": lambda m: _valid_fields(m, driving=None),
    "reference-as-text": lambda m: _valid_fields(m, reference=("reference", "photo.png")),
    "driving-as-text": lambda m: _valid_fields(m, driving=("driving", "a video")),
    "steps-as-file": lambda m: _valid_fields(m, steps=("steps", "s.txt", b"1", "text/plain")),
    "extra-file": lambda m: _valid_fields(m) + [("other", "x.png", m["png"], "image/png")],
    "duplicate-reference": lambda m: _valid_fields(m) + [("reference", "b.png", m["png"])],
    "duplicate-steps": lambda m: _valid_fields(m) + [("steps", "2")],
    "empty-field-name": lambda m: _valid_fields(m) + [("", "1")],
    "too-many-fields": lambda m: _valid_fields(m) + [(f"f{i}", "1") for i in range(20)],
    "swapped-files": lambda m: _valid_fields(
        m, reference=("reference", "a.mp4", m["mp4"]), driving=("driving", "b.png", m["ref"])),
}
for name, make in STRUCTURE.items():
    case(f"form-{name}")(lambda ctx, make=make: {"fields": make(ctx["media"])})

RAW_BODIES = {
    "json-body": ("application/json", b'{"reference": "x", "driving": "y"}', 415),
    "urlencoded": ("application/x-www-form-urlencoded", b"reference=x&driving=y", 415),
    "text-plain": ("text/plain", b"hello", 415),
    "no-content-type": (None, b"", 415),
    "multipart-no-boundary": ("multipart/form-data", b"--x\r\n\r\n", None),
    "multipart-garbage": ("multipart/form-data; boundary=zzz", b"\0\1\2 not multipart", None),
    "multipart-empty": ("multipart/form-data; boundary=zzz", b"", None),
    "multipart-unterminated": ("multipart/form-data; boundary=zzz",
                               b'--zzz\r\nContent-Disposition: form-data; name="steps"\r\n\r\n1',
                               None),
    "multipart-header-junk": ("multipart/form-data; boundary=zzz",
                              b"--zzz\r\nContent-Disposition: \xff\xfe\r\n\r\nx\r\n--zzz--\r\n", None),
}
for name, (ctype, body, expected) in RAW_BODIES.items():
    case(f"body-{name}", expected)(
        lambda ctx, ctype=ctype, body=body: {"body": body, "headers": (
            {"Content-Type": ctype} if ctype else {})})

PATHS = [
    ("GET", "/api/v1/jobs/00000000000000000000000000000000", 404),
    ("GET", "/api/v1/jobs/{JOB}", 404),  # the job id in upper case
    ("GET", "/api/v1/jobs/" + "a" * 1000, 404),
    ("GET", "/api/v1/jobs/%2e%2e%2f%2e%2e%2fkinemate.db", 404),
    ("GET", "/api/v1/jobs/..%2F..%2Fkinemate.db/result", 404),
    ("GET", "/api/v1/jobs/{job}/../../../kinemate.db", 404),
    ("GET", "/api/v1/jobs/%E2%80%AEjob", 404),
    ("GET", "/static/../kinemate.db", 404),
    ("GET", "/static/%2e%2e/%2e%2e/kinemate.db", 404),
    ("GET", "/static/..%2f..%2fapp.py", 404),
    ("GET", "/static/%2e%2e%2fapp.py", 404),
    ("GET", "/api/v1/jobs/{other}", 404),
    ("GET", "/api/v1/jobs/{other}/result", 404),
    ("POST", "/api/v1/jobs/{other}/cancel", 404),
    ("DELETE", "/api/v1/jobs", 405),
    ("PUT", "/api/v1/jobs/{job}", 405),
    ("DELETE", "/api/v1/jobs/{other}", 404),
    ("PATCH", "/api/v1/jobs/{job}", 405),
    ("GET", "/api/v1/jobs/{job}/cancel", 405),
    ("POST", "/api/v1/jobs/{job}/result", 405),
    ("GET", "/api/v1/jobs?limit=0", 422),
    ("GET", "/api/v1/jobs?limit=-5", 422),
    ("GET", "/api/v1/jobs?limit=abc", 422),
    ("GET", "/api/v1/jobs?limit=100000", 422),
    ("GET", "/api/v1/nothing-here", 404),
    ("GET", "/api/v1/jobs/%ff", 404),
    ("GET", "/api/v1/jobs/%00", 404),
    ("GET", "/api/v1/jobs/%C0%AE%C0%AE/result", 404),
    ("GET", "/static/%00", 404),
    ("GET", "/api/v1/jobs/a/b/c/d", 404),
]
for method, path, expected in PATHS:
    case(f"path-{method}-{path[:50]}", expected)(
        lambda ctx, method=method, path=path: {"method": method, "path": path.format(
            job=ctx["job"], JOB=ctx["job"].upper(), other=ctx["other_job"])})

for name, value in {"too-long": "k" * 200, "spaces": "a b", "latin1": "clé",
                    "empty": ""}.items():
    case(f"idempotency-key-{name}", 422)(
        lambda ctx, value=value: {"fields": _valid_fields(ctx["media"]),
                                  "headers": {"Idempotency-Key": value}})


ANSWERS: list[tuple[str, int, str]] = []  # written to the artifacts folder for review


# -- running them -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ctx(server, client, media, tiny_inputs):
    key = server.new_key("bad-input")
    other = server.new_key("bad-input-other")
    revoked = server.new_key("bad-input-revoked")
    from kinemate.service.store import SQLiteJobStore

    SQLiteJobStore(server.data_dir / "kinemate.db").revoke_keys_named("bad-input-revoked")
    job = client.submit(key, media["ref"], media["mp4"]).json()
    other_job = client.submit(other, media["ref"], media["mp4"]).json()
    accepted_before = _all_jobs(server)
    return {"key": key, "revoked": revoked, "job": job["id"], "other_job": other_job["id"],
            "media": media, "accepted": accepted_before, "data_dir": server.data_dir}


def _all_jobs(server) -> dict[str, str]:
    from kinemate.service.store import SQLiteJobStore

    store = SQLiteJobStore(server.data_dir / "kinemate.db")
    return {job_id: store.get_job(job_id).state for job_id in store.all_job_ids()}


def _send(client, ctx, req: dict):
    headers = dict(req.get("headers", {}))
    key = ctx["key"] if req.get("auth", True) else None
    if "fields" in req:
        return client.request(req.get("method", "POST"), req.get("path", "/api/v1/jobs"),
                              key=key, fields=req["fields"], headers=headers)
    return client.request(req.get("method", "POST"), req.get("path", "/api/v1/jobs"), key=key,
                          body=req.get("body"), headers=headers)


def _assert_clear_4xx(res, expected, name, data_dir=None):
    assert 400 <= res.status < 500, f"{name}: {res.status} {res.body[:300]!r}"
    if expected is not None:
        assert res.status == expected, f"{name}: {res.status} (wanted {expected}) {res.detail}"
    detail = res.json()["detail"]
    assert isinstance(detail, str) and len(detail) >= 12, f"{name}: unclear message {detail!r}"
    assert "Traceback" not in detail and "Error:" not in detail, detail
    assert data_dir is None or str(data_dir) not in detail, detail  # no server paths


@pytest.mark.parametrize("name,build,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_a_clear_4xx(client, ctx, name, build, expected):
    res = _send(client, ctx, build(ctx))
    ANSWERS.append((name, res.status, res.detail))
    _assert_clear_4xx(res, expected, name, ctx["data_dir"])


def _raw(client, head: bytes, body_chunks=(), read=True) -> tuple[int, bytes]:
    import socket

    with socket.create_connection((client.host, client.port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused the body early, as it should
        data = b""
        try:
            while True:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
                if b"\r\n\r\n" in data and b"}" in data:
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1") else 0
    return status, data


@pytest.mark.parametrize("variant", ["declared-too-large", "chunked-too-large",
                                     "bad-content-length", "negative-content-length"])
def test_oversize_and_broken_bodies(client, ctx, variant):
    limit = 8 * 2**20
    auth = f"Authorization: Bearer {ctx['key']}\r\n".encode()
    body, ctype = multipart(_valid_fields(ctx["media"], reference=(
        "reference", "big.png", ctx["media"]["ref"] + b"\0" * (limit + 1024), "image/png")))
    base = (b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n" + auth
            + f"Content-Type: {ctype}\r\n".encode())
    if variant == "declared-too-large":
        status, data = _raw(client, base + f"Content-Length: {len(body)}\r\n\r\n".encode(),
                            [body[:65536]])
        assert status == 413 and b"limit" in data
    elif variant == "chunked-too-large":
        def chunks():
            for i in range(0, len(body), 1 << 20):
                piece = body[i:i + (1 << 20)]
                yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
            yield b"0\r\n\r\n"
        status, data = _raw(client, base + b"Transfer-Encoding: chunked\r\n\r\n", chunks())
        assert status == 413 and b"limit" in data, data[:300]
    elif variant == "bad-content-length":
        status, _ = _raw(client, base + b"Content-Length: lots\r\n\r\n")
        assert 400 <= status < 500
    else:
        status, _ = _raw(client, base + b"Content-Length: -5\r\n\r\n")
        assert 400 <= status < 500


def test_concurrent_bad_uploads(client, ctx):
    results = []
    m = ctx["media"]

    def send(i):
        fields = _valid_fields(m, driving=("driving", f"t{i}.mp4", m["mp4"][: 200 + 97 * i]))
        results.append(client.request("POST", "/api/v1/jobs", key=ctx["key"], fields=fields))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 10
    for res in results:
        _assert_clear_4xx(res, None, "concurrent truncated upload")


def test_suite_is_large_enough():
    assert len(CASES) + 4 + 10 >= 200, len(CASES)


def test_server_still_up_and_nothing_accepted_lost(server, client, ctx):
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["worker"]["state"] == "ready"
    after = _all_jobs(server)
    assert set(ctx["accepted"]) <= set(after)  # nothing accepted is gone
    for job_id in (ctx["job"], ctx["other_job"]):
        assert after[job_id] in ("queued", "running", "succeeded")
    # Rejected uploads left nothing behind: every job folder belongs to an accepted job.
    folders = {p.name for p in (server.data_dir / "jobs").iterdir()}
    assert folders <= set(after), folders - set(after)
    assert client.wait(ctx["key"], ctx["job"])["state"] == "succeeded"
    assert not list(Path(server.data_dir).glob("jobs/*/*.upload"))
    report = artifacts_dir() / "service_bad_input_answers.txt"
    report.write_text("".join(f"{status}\t{name}\t{detail}\n" for name, status, detail in ANSWERS))
