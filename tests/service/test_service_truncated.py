"""Truncated requests and jobs that cannot run are refused at submission, over real HTTP.

A multipart body cut before its closing boundary used to lose its last field silently (a
``seed`` of "1234" cut off became the default seed); a pose JSON with no usable keypoints
was accepted and failed in the worker. Requests are sent as raw bytes over a socket, so the
body is exactly what a cut upload delivers (with a Content-Length that matches it).
"""

from __future__ import annotations

import json
import socket

import pytest
from service_helpers import TINY_SIZE, multipart


def _raw_post(server, key: str, body: bytes, content_type: str) -> tuple[int, dict]:
    head = (f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(head + body)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    raw = b"".join(chunks)
    status = int(raw.split(b" ", 2)[1])
    return status, json.loads(raw.split(b"\r\n\r\n", 1)[1].decode())


def _job_fields(tiny_inputs, seed: str) -> list[tuple]:
    return [("reference", "photo.png", tiny_inputs["reference"].read_bytes(), "image/png"),
            ("driving", "dance.mp4", tiny_inputs["driving"].read_bytes(), "video/mp4"),
            ("steps", "1"), ("size", TINY_SIZE), ("seed", seed)]


def _cancel(client, key, job_id):
    client.post(f"/api/v1/jobs/{job_id}/cancel", key=key)


def test_complete_body_keeps_its_last_field(server, client, key, tiny_inputs):
    body, ctype = multipart(_job_fields(tiny_inputs, "12345"))
    status, job = _raw_post(server, key, body, ctype)
    assert status == 201, job
    assert job["params"]["seed"] == 12345
    _cancel(client, key, job["id"])
    # an epilogue after the closing boundary is allowed (RFC 2046) and changes nothing
    status, job = _raw_post(server, key, body + b"an epilogue\r\n", ctype)
    assert status == 201, job
    assert job["params"]["seed"] == 12345
    _cancel(client, key, job["id"])


@pytest.mark.parametrize("cut", ["closing-boundary", "closing-dashes", "inside-last-value",
                                 "inside-a-file"])
def test_body_cut_before_its_closing_boundary_is_refused(server, client, key, tiny_inputs, cut):
    body, ctype = multipart(_job_fields(tiny_inputs, "12345"))
    boundary = ctype.split("boundary=")[1].encode()
    closing = b"\r\n--" + boundary + b"--\r\n"
    assert body.endswith(closing)
    cut_body = {
        "closing-boundary": body[: -len(closing)],  # "...12345" and nothing after it
        "closing-dashes": body[:-4],  # "...\r\n--BOUNDARY" without its "--"
        "inside-last-value": body[: -len(closing) - 1],  # the seed cut to "1234"
        "inside-a-file": body[: len(body) // 2],
    }[cut]
    before = {j["id"] for j in client.get("/api/v1/jobs", key=key).json()["jobs"]}
    status, answer = _raw_post(server, key, cut_body, ctype)
    assert status == 400, answer
    assert "closing boundary" in answer["detail"] and "send the complete request" in answer["detail"]
    after = {j["id"] for j in client.get("/api/v1/jobs", key=key).json()["jobs"]}
    assert after == before, "a cut request created a job"


def _pose_json(frames: list[dict]) -> bytes:
    return json.dumps({"format": "kinemate.pose", "version": 1, "image_size": [64, 64],
                       "fps": 25, "frames": frames}).encode()


def _body(points: list[list[float]]) -> dict:
    return {"body": points, "hand_left": None, "hand_right": None, "face": None}


def _person(conf: float, *, neck: bool = True) -> list[list[float]]:
    pts = [[20 + i, 10 + 2 * i, conf] for i in range(18)]
    if not neck:
        pts[1] = [0, 0, 0]
    return pts


UNUSABLE_POSES = {
    "all-frames-empty": (_pose_json([_body([[0, 0, 0]] * 18)] * 8), r"no usable body keypoints"),
    "frames-without-body": (_pose_json([{"confidence": 1.0}] * 8), r"no usable body keypoints"),
    "confidences-all-zero": (_pose_json([_body([[20, 30, 0]] * 18)] * 8), r"no usable body keypoints"),
    "confidences-below-gate": (_pose_json([_body(_person(0.1))] * 8),
                               r"below 0\.25.*highest is 0\.1"),
    "one-keypoint-per-frame": (_pose_json([_body([[20, 30, 0.9]] + [[0, 0, 0]] * 17)] * 8),
                               r"fewer than 2 body keypoints"),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE_POSES))
def test_pose_json_without_a_usable_person_is_refused(client, key, tiny_inputs, case):
    data, pattern = UNUSABLE_POSES[case]
    res = client.submit(key, tiny_inputs["reference"].read_bytes(), data, drv_name="pose.json",
                        params={"control": "pose"})
    assert res.status == 422, res.body
    assert "pose JSON" in res.detail and "kinemate pose" in res.detail, res.detail
    import re

    assert re.search(pattern, res.detail), res.detail


def test_pose_json_without_a_neck_needs_retarget_off(pose_server, tiny_inputs):
    """(On a model trained on skeletons: a DensePose model refuses pose files anyway.)"""
    client, key = pose_server.client, pose_server.new_key()
    data = _pose_json([_body(_person(0.9, neck=False))] * 8)
    res = client.submit(key, tiny_inputs["reference"].read_bytes(), data, drv_name="pose.json",
                        params={"control": "pose"})
    assert res.status == 422, res.body
    assert "neck" in res.detail and "retarget=false" in res.detail, res.detail
    res = client.submit(key, tiny_inputs["reference"].read_bytes(), data, drv_name="pose.json",
                        params={"control": "pose", "retarget": "false"})
    assert res.status == 201, res.body
    _cancel(client, key, res.json()["id"])


def test_usable_pose_json_is_accepted(pose_server, tiny_inputs):
    client, key = pose_server.client, pose_server.new_key()
    frames = [_body(_person(0.9))] * 4 + [_body([[0, 0, 0]] * 18)] * 4  # half the frames empty
    res = client.submit(key, tiny_inputs["reference"].read_bytes(), _pose_json(frames),
                        drv_name="pose.json", params={"control": "pose"})
    assert res.status == 201, res.body
    _cancel(client, key, res.json()["id"])


def test_gif_cut_after_a_trailer_like_byte_is_refused(client, key, tiny_inputs):
    """A GIF cut where its last byte happens to be 0x3B (the trailer's value, common inside
    compressed data) is refused at upload, before any job exists."""
    import io

    import numpy as np
    from PIL import Image

    frames = []
    for i in range(30):
        a = np.zeros((64, 96, 3), np.uint8)
        a[:, :] = (i * 8, 100, 200 - i * 5)
        a[10:30, i * 2: i * 2 + 20] = 255
        frames.append(Image.fromarray(a))
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = buf.getvalue()
    end = next(i + 1 for i in range(len(data) // 3, len(data) - 1) if data[i] == 0x3B)
    res = client.submit(key, tiny_inputs["reference"].read_bytes(), data[:end],
                        drv_name="dance.gif")
    assert res.status == 422, res.body
    assert "truncated" in res.detail and "GIF" in res.detail, res.detail
