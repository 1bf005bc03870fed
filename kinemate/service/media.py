"""Checking uploads: what a file really is (magic bytes, then decoding), and size limits.

Nothing here trusts a client's file name or content type. A file is accepted only if its
first bytes say it is a supported kind *and* it decodes within the limits: a photo or a pose
JSON completely; a video as far as its container, its demuxed stream and its first frame go
(work bounded by the upload's size), its every frame being decoded by the worker as the
job's first step (:func:`check_video_frames`). The kind decides the server-side file name
(``reference.png``, ``driving.mp4``, ...).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import unicodedata
from pathlib import Path
from typing import Callable

from kinemate.errors import InputError
from kinemate.service.config import Limits

# kind -> suffix of the server-side file
IMAGE_KINDS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif"}
VIDEO_KINDS = {"mp4": ".mp4", "matroska": ".mkv", "avi": ".avi", "gif": ".gif"}


class UploadRejected(InputError):
    """An upload cannot be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def sniff(head: bytes) -> str | None:
    """The kind of file from its first bytes (at least 16), or None when unknown."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"BM") and len(head) >= 14:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[4:8] == b"ftyp":
        return "mp4"  # mp4, mov, m4v, 3gp: all ISO base media files
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"  # mkv and webm
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped[:1] in (b"{", b"["):
        return "json"
    return None


# Bidirectional overrides/isolates can disguise a name ("x\u202egnp.exe" shows as "xexe.png").
_BIDI_CONTROLS = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def display_name(name: str | None, limit: int = 200) -> str:
    """A client file name made safe to show (never used as a path): NFC, no control
    characters or path parts, bounded length. Unicode letters and emoji stay."""
    if not name:
        return ""
    name = unicodedata.normalize("NFC", str(name))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cs", "Co", "Cn")
                   and ch not in _BIDI_CONTROLS)
    return name.strip()[:limit]


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    kind: str
    width: int
    height: int


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    kind: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float


@dataclasses.dataclass(frozen=True)
class PoseInfo:
    kind: str
    num_frames: int
    width: int
    height: int
    fps: float
    retargetable: bool = True  # some frame shows the neck and one more body keypoint


def _scrub(message: str, path: Path, what: str) -> str:
    """Error messages from lower layers name the server-side path; show the role instead."""
    return str(message).replace(str(path), what)


def check_image(path: Path, kind: str | None, limits: Limits) -> ImageInfo:
    """Accept ``path`` as the reference photo or raise :class:`UploadRejected`."""
    from PIL import Image

    from kinemate.io import read_image

    if kind not in IMAGE_KINDS:
        raise UploadRejected(
            "the reference is not a PNG, JPEG, WebP, BMP or TIFF image (judged from its content, "
            "not its name) — upload a photo in one of those formats", 415)
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Image.DecompressionBombError:
        raise UploadRejected(
            "the reference image declares an enormous size (a decompression bomb?) — upload a "
            f"photo of at most {limits.max_image_side} pixels per side", 413) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
        raise UploadRejected(f"the reference image cannot be read ({type(exc).__name__}) — "
                             "the file is damaged or truncated; export it again") from exc
    if max(width, height) > limits.max_image_side or width * height > limits.max_image_pixels:
        raise UploadRejected(
            f"the reference image is {width}x{height}, above the limit of "
            f"{limits.max_image_side} pixels per side and {limits.max_image_pixels / 1e6:.0f} "
            "megapixels — downscale it first", 413)
    try:
        image = read_image(path, max_pixels=limits.max_image_pixels)
    except InputError as exc:
        raise UploadRejected(_scrub(str(exc), path, "the reference image")) from exc
    except Exception as exc:  # noqa: BLE001
        raise UploadRejected(f"the reference image cannot be decoded ({type(exc).__name__}) — "
                             "it is damaged or truncated; export it again") from exc
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise UploadRejected(f"the reference image is only {image.shape[1]}x{image.shape[0]} "
                             "pixels — upload a photo at least 8x8 (ideally 512 or more)")
    return ImageInfo(kind, int(image.shape[1]), int(image.shape[0]))


def check_video(path: Path, kind: str | None, limits: Limits) -> VideoInfo:
    """Accept ``path`` as a driving video from what its container says, with work bounded by
    the file's size rather than by what it decodes to: the container's framing, the stream
    demuxed without decoding (frame count, size, rate, duration) against the limits, and
    the first frame decoded. A tiny file can declare 1500 frames of 2048x2048 (decoding them
    all takes tens of seconds); decoding every frame (:func:`check_video_frames`) is the
    worker's first step of the job, where a video that fails it fails the job."""
    from kinemate.io import probe_video

    if kind not in VIDEO_KINDS:
        raise UploadRejected(
            "the driving file is not a video (MP4/MOV, WebM/MKV, AVI or GIF, judged from its "
            "content) nor a pose JSON — upload one of those", 415)
    what = "the driving video"
    problem = container_problem(path, kind)
    if problem:
        raise UploadRejected(f"{what} is {problem} — upload the complete file (export it again)")
    try:
        info = probe_video(path)
    except InputError as exc:
        raise UploadRejected(_scrub(str(exc), path, what)) from exc
    except Exception as exc:  # noqa: BLE001
        raise UploadRejected(f"{what} cannot be read ({type(exc).__name__}) — it is damaged or "
                             "truncated; export it again") from exc
    width, height = int(info.width or 0), int(info.height or 0)
    if width <= 0 or height <= 0:
        raise UploadRejected(f"{what} has no picture — upload a video with frames")
    if max(width, height) > limits.max_video_side:
        raise UploadRejected(
            f"{what} is {width}x{height}, above the limit of {limits.max_video_side} pixels per "
            "side — downscale it first (e.g. ffmpeg -vf scale=512:-2)", 413)
    fps = float(info.fps or 0.0)
    declared = info.num_frames
    if declared is None:
        raise UploadRejected(f"{what} does not say how many frames it has — re-encode it "
                             "(e.g. ffmpeg -i in.mov out.mp4)")
    if declared > limits.max_video_frames:
        raise UploadRejected(
            f"{what} has {declared} frames, above the limit of {limits.max_video_frames} — "
            "trim it or lower its frame rate", 413)
    duration = info.duration_s
    if duration is not None and math.isfinite(duration) and duration > limits.max_video_seconds:
        raise UploadRejected(
            f"{what} lasts {duration:.1f} s, above the limit of {limits.max_video_seconds:.0f} s "
            "— trim it first", 413)
    if fps > 0 and declared / fps > limits.max_video_seconds:
        raise UploadRejected(
            f"{what} lasts {declared / fps:.1f} s, above the limit of "
            f"{limits.max_video_seconds:.0f} s — trim it first", 413)
    problem = first_frame_problem(path)
    if problem:
        raise UploadRejected(f"{what} cannot be decoded ({problem}) — it is damaged or in a "
                             "codec ffmpeg does not read; export it again")
    return VideoInfo(kind, width, height, fps or 25.0, declared,
                     declared / fps if fps else 0.0)


def first_frame_problem(path: Path, timeout_s: float = 60.0) -> str | None:
    """Decode the first frame of a video and nothing more (ffmpeg ``-frames:v 1``, one thread,
    shrunk to 4x4 gray on the way out): None when a frame came out, else what went wrong.
    Memory and time are those of one frame (a reader would decode frames ahead)."""
    import subprocess

    from kinemate.io.video import ffmpeg_exe

    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-threads", "1",
           "-i", os.path.abspath(path), "-map", "0:v:0", "-frames:v", "1",
           "-vf", "scale=4:4", "-pix_fmt", "gray", "-f", "rawvideo", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"decoding its first frame took over {timeout_s:.0f} s"
    if proc.returncode == 0 and len(proc.stdout) == 16:
        return None
    lines = proc.stderr.decode("utf-8", "replace").replace(str(os.path.abspath(path)), "the file")
    lines = [re.sub(r"^(\[[^\]]*\]\s*)+", "", line) for line in lines.strip().splitlines()]
    return lines[-1][:200] if lines and lines[-1] else "no frame decodes"


def check_video_frames(path: Path, expected: dict, limits: Limits,
                       on_frame: Callable[[int, int], None] | None = None) -> int:
    """Decode every frame of an accepted driving video (``expected``: the job's driving
    input record with ``width``, ``height``, ``frames``, ``fps``) and check that it holds
    what its container declared: the same size throughout, no more than the frame limit,
    not truncated. Returns the number of frames; raises :class:`UploadRejected` (an
    :class:`~kinemate.errors.InputError`) with what is wrong. ``on_frame(count, declared)``
    is called after each frame and may raise (to cancel)."""
    from kinemate.io import open_video

    what = "the driving video"
    width, height = int(expected["width"]), int(expected["height"])
    declared = int(expected.get("frames") or 0)
    fps = float(expected.get("fps") or 0.0)
    count = 0
    try:
        reader = open_video(path)
    except InputError as exc:
        raise UploadRejected(_scrub(str(exc), path, what)) from exc
    with reader:
        while True:
            try:
                frame = next(reader, None)
            except InputError as exc:
                raise UploadRejected(_scrub(str(exc), path, what)) from exc
            except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
                raise UploadRejected(f"{what} cannot be decoded after {count} frames "
                                     f"({type(exc).__name__}) — it is damaged or truncated; "
                                     "export it again") from exc
            if frame is None:
                break
            if frame.shape[0] != height or frame.shape[1] != width:
                raise UploadRejected(f"{what} changes size at frame {count + 1} (from "
                                     f"{width}x{height} to {frame.shape[1]}x{frame.shape[0]})"
                                     " — re-encode it")
            count += 1
            if count > limits.max_video_frames:
                raise UploadRejected(
                    f"{what} has more than {limits.max_video_frames} frames although its "
                    f"container declared {declared} — trim it or lower its frame rate", 413)
            if on_frame is not None:
                on_frame(count, declared)  # may raise (a cancellation): passed on as it is
    if count == 0:
        raise UploadRejected(f"{what} contains no decodable frame — it is empty or truncated; "
                             "export it again")
    if declared and count < declared * 0.9 and declared - count > 1:
        raise UploadRejected(f"{what} declares {declared} frames but only {count} decode — it "
                             "is damaged or truncated; export it again and upload the complete "
                             "file")
    if fps > 0 and count / fps > limits.max_video_seconds:
        raise UploadRejected(
            f"{what} lasts {count / fps:.1f} s, above the limit of "
            f"{limits.max_video_seconds:.0f} s — trim it first", 413)
    return count


def container_problem(path: Path, kind: str) -> str | None:
    """Structural check of a container's framing (decoders often forgive truncation):
    ISO media boxes must tile the file exactly, a RIFF file must hold its declared size, a
    GIF must end with its trailer. Returns a description of the problem or None."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if kind == "mp4":
            pos = 0
            while pos < size:
                f.seek(pos)
                header = f.read(16)
                if len(header) < 8:
                    return "truncated (a partial box header at the end)"
                box = int.from_bytes(header[:4], "big")
                if box == 1:
                    if len(header) < 16:
                        return "truncated (a partial box header at the end)"
                    box = int.from_bytes(header[8:16], "big")
                elif box == 0:
                    box = size - pos  # extends to the end of the file
                if box < 8:
                    return "damaged (an invalid box size)"
                pos += box
            if pos != size:
                return "truncated (its last box is cut off)"
        elif kind == "avi":
            f.seek(4)
            declared = int.from_bytes(f.read(4), "little") + 8
            if declared > size:
                return f"truncated ({size} of {declared} bytes)"
        elif kind == "gif":  # its blocks must reach the trailer (a last ";" proves nothing)
            from kinemate.io.video import gif_structure

            _, problem = gif_structure(path)
            if problem:
                return f"truncated or damaged (the GIF is {problem})"
    return None


def check_pose_json(path: Path, limits: Limits) -> PoseInfo:
    """Accept ``path`` as a pose track: kinemate pose JSON or OpenPose JSON."""
    what = "the pose JSON"
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise UploadRejected(f"{what} is not valid JSON ({reason}) — upload a file written by "
                             "'kinemate pose' (PoseTrack JSON)") from None
    if not isinstance(data, (dict, list)):
        raise UploadRejected(f"{what} must be a kinemate pose file or OpenPose JSON, not a "
                             f"JSON {type(data).__name__} — upload a file written by "
                             "'kinemate pose'")
    del data
    from kinemate.pose import load_pose
    from kinemate.pose.track import TooManyFrames

    try:  # the frame limit is checked before the frames are parsed
        track = load_pose(path, max_frames=limits.max_video_frames)
    except TooManyFrames as exc:
        raise UploadRejected(f"{what} has {exc.frames} frames, above the limit of "
                             f"{exc.limit} — trim it", 413) from exc
    except InputError as exc:
        raise UploadRejected(_scrub(str(exc), path, what)) from exc
    except Exception as exc:  # noqa: BLE001
        raise UploadRejected(f"{what} is not a valid PoseTrack ({type(exc).__name__}: "
                             f"{_scrub(str(exc), path, what)[:200]}) — upload a file written by "
                             "'kinemate pose' "
                             "or an OpenPose JSON") from exc
    frames = len(track)
    if frames == 0:
        raise UploadRejected(f"{what} has no frames — upload a track with at least one frame")
    if frames > limits.max_video_frames:
        raise UploadRejected(f"{what} has {frames} frames, above the limit of "
                             f"{limits.max_video_frames} — trim it", 413)
    width, height = int(track.width), int(track.height)
    fps = float(getattr(track, "fps", 25.0) or 25.0)
    if frames / fps > limits.max_video_seconds:
        raise UploadRejected(f"{what} lasts {frames / fps:.1f} s, above the limit of "
                             f"{limits.max_video_seconds:.0f} s — trim it", 413)
    problem, retargetable = _pose_usability(track)
    if problem:
        raise UploadRejected(f"{what} {problem}, so the job could not run — re-create it with "
                             "'kinemate pose VIDEO -o FILE.json' from a video that shows the "
                             "person")
    return PoseInfo("json", frames, width, height, fps, retargetable)


def _pose_usability(track) -> tuple[str | None, bool]:
    """What makes a parsed track unusable for a job (None when it can run), and whether it
    can be retargeted. The same rule as the worker: keypoints under the confidence gate are
    missing, short gaps are filled, and a frame shows a person with 2 body keypoints;
    retargeting needs a frame with the neck and one more (or a track retargeted already)."""
    import numpy as np

    from kinemate.pose.skeleton import NECK
    from kinemate.pose.temporal import DEFAULT_MIN_CONF, fill_gaps, gate_confidence

    gate = DEFAULT_MIN_CONF
    conf = track.body[..., 2]
    n = len(track)
    if not (conf > 0).any():
        return (f"has no usable body keypoints: all {n} frames are empty (every body keypoint "
                "is missing or has confidence 0)"), False
    if not (conf >= gate).any():
        return (f"has no usable body keypoints: every confidence is below {gate:g}, under "
                f"which a keypoint counts as missing (the highest is {float(conf.max()):.2g})"
                ), False
    filled = fill_gaps(gate_confidence(track, gate), 5, gate)
    if not filled.present(gate).any():
        return (f"has no frame with a person: each of its {n} frames has fewer than 2 body "
                f"keypoints with confidence above {gate:g}"), False
    ok = filled.body[..., 2] >= gate
    retargetable = bool(track.meta.get("retargeted")) or bool(
        np.any(ok[:, NECK] & (ok.sum(axis=1) >= 2)))
    return None, retargetable
