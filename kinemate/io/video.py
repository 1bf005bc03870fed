"""Videos as streams of frames: probing, reading, writing.

Reading and writing go through the ffmpeg binary that ``imageio-ffmpeg`` ships (no system ffmpeg
needed) and move one frame at a time through a pipe, so memory stays flat however long the video
is. A folder of images reads like a video too, and a folder of PNG frames is one of the outputs.

Frames are always uint8 ``(H, W, 3)`` RGB arrays.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import numpy as np
from PIL import Image

from kinemate.errors import InputError, KinemateError, UsageError
from kinemate.io.atomic import commit, ensure_parent, remove_quietly, replace_folder, temp_sibling
from kinemate.io.image import IMAGE_SUFFIXES, check_size, read_image

log = logging.getLogger(__name__)

#: Container suffixes read as videos.
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif")
#: Suffixes written as H.264 MP4/MOV.
MP4_SUFFIXES = (".mp4", ".mov", ".m4v")
#: Largest video frame (width x height) opened by default: 4096 x 4096. Driving videos are
#: scaled down to the model size anyway; pass ``max_pixels`` to raise it for one call.
MAX_VIDEO_PIXELS = 4096 * 4096
#: Frame rate given to a folder of images when none is passed.
DEFAULT_FOLDER_FPS = 25.0
#: Name pattern of the frames of a PNG-folder output.
FRAME_NAME = "frame_{:06d}.png"

_PROBE_TIMEOUT_S = 300


class _DropRotationNotice(logging.Filter):
    """imageio-ffmpeg warns when ffmpeg's output size differs from the stored one; for videos
    with rotation metadata that is expected (ffmpeg turns the frames upright), so drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_DropRotationNotice())


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# --------------------------------------------------------------------------------------------
# Probing


@dataclass(frozen=True)
class VideoInfo:
    """What a video is: frame rate, frame count (None when unknown), size, duration."""

    fps: float
    num_frames: int | None
    width: int
    height: int
    duration_s: float | None


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_image_folder(folder: Path) -> list[Path]:
    """Image files of a folder in natural order (frame_2 before frame_10); hidden files skipped."""
    files = [
        p
        for p in Path(folder).iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _check_video_path(path: Path) -> str:
    """Validate an input path; returns ``"folder"`` or ``"file"``."""
    if not path.exists():
        raise InputError(f"video not found: {path} — check the path and try again.")
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        raise InputError(
            f"{path} is a still image, but a video is expected — give a video "
            f"({', '.join(VIDEO_SUFFIXES)}) or a folder of frames."
        )
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(
            f"{path}: unsupported file type {path.suffix or '(no suffix)'!r} — give a video "
            f"({', '.join(VIDEO_SUFFIXES)}) or a folder of image frames; convert other formats "
            "with ffmpeg first (ffmpeg -i input output.mp4)."
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path} is an empty file (0 bytes) — re-export or re-download the video.")
    return "file"


_RE_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_RE_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: (.*)")
_RE_SIZE = re.compile(r"(?:^|[ ,])([1-9]\d{0,5})x([1-9]\d{0,5})(?=[ ,\[]|$)")
_RE_FPS = re.compile(r"([\d.]+)(k?) (fps|tbr)\b")
_RE_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")
_RE_FRAME = re.compile(r"frame=\s*(\d+)")

_TRUNCATED_SIGNS = ("moov atom not found", "partial file", "could not find codec parameters",
                    "invalid nal unit size", "error splitting the input")


def _parse_probe(path: Path, text: str, returncode: int) -> VideoInfo:
    low = text.lower()
    stream = _RE_VIDEO_STREAM.search(text)
    if stream is None or returncode != 0:
        recognised = "misdetection possible" not in low and (
            "input #0" in low or "moov atom not found" in low
        )
        if recognised and any(s in low for s in _TRUNCATED_SIGNS):
            raise InputError(
                f"{path} is truncated or damaged (its index or data is cut off) — re-export or "
                "re-download the full video."
            )
        if stream is None and recognised:
            raise InputError(
                f"{path} contains no video frames (no video stream; audio only or empty?) — give "
                "a video with at least one frame."
            )
        raise InputError(
            f"{path} is not a video ffmpeg can read (is it really a "
            f"{path.suffix or 'video'} file?) — give an mp4/mov/webm/mkv/avi/gif video or a "
            "folder of frames."
        )
    desc = stream.group(1)
    size = _RE_SIZE.search(desc)
    if size is None:
        raise InputError(f"{path}: the video size is unknown (damaged file?) — re-export the video.")
    width, height = int(size.group(1)), int(size.group(2))
    fps = None
    for m in _RE_FPS.finditer(desc):
        value = float(m.group(1)) * (1000.0 if m.group(2) else 1.0)
        if value > 0:
            fps = value
            break
    rot = _RE_ROTATION.search(text)
    if rot and round(abs(float(rot.group(1)))) % 180 == 90:
        width, height = height, width  # ffmpeg applies the rotation when decoding
    dur = _RE_DURATION.search(text)
    duration = None
    if dur:
        duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3))
    frames = [int(m) for m in _RE_FRAME.findall(text)]
    num_frames = frames[-1] if frames else None
    if any(s in low for s in ("partial file", "moov atom not found", "file ended prematurely")):
        raise InputError(
            f"{path} is truncated (the file ends before its data does) — re-export or "
            "re-download the full video."
        )
    if num_frames == 0:
        raise InputError(f"{path} contains no video frames — give a video with at least one frame.")
    if fps is None:
        if duration and num_frames:
            fps = num_frames / duration
        else:
            raise InputError(f"{path}: the frame rate is unknown — re-encode the video with ffmpeg.")
    return VideoInfo(fps=fps, num_frames=num_frames, width=width, height=height, duration_s=duration)


def iso_media_cut(path: str | Path) -> bool:
    """True when an MP4/MOV file (ISO base media) ends inside one of its top-level boxes.

    ffmpeg reports such a cut in several ways ("moov atom not found", "no video stream",
    "invalid data") depending on where it falls; the box sizes tell it exactly. Bytes after
    the last complete box are tolerated (padding some tools append)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos < size:
            f.seek(pos)
            header = f.read(16)
            if len(header) < 8:
                return any(header)
            box = int.from_bytes(header[:4], "big")
            if box == 1:  # 64-bit size follows the type
                if len(header) < 16:
                    return True
                box = int.from_bytes(header[8:16], "big")
            elif box == 0:  # extends to the end of the file
                return False
            if box < 8:
                return False  # not box framing at all: leave the verdict to ffmpeg
            pos += box
        return pos > size


def gif_structure(path: str | Path) -> tuple[int, str | None]:
    """Walk a GIF's blocks without decoding them: ``(frames, problem)``.

    ``frames`` counts the image descriptors before the trailer (or before the damage);
    ``problem`` is None for a complete file, else what is wrong ("cut off inside frame 12").
    Decoders forgive a cut GIF and return the frames before the cut, and a last byte of
    ``;`` (0x3B, the trailer) also occurs inside compressed data, so only walking the block
    structure to its trailer tells a complete GIF from a truncated one. Reads the file through
    a memory map, one length byte per sub-block of up to 255 bytes.
    """
    import mmap

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < 13:
            return 0, "cut off inside its header"
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _walk_gif(data)


def _walk_gif(data) -> tuple[int, str | None]:
    size = len(data)
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        return 0, "not a GIF (no GIF87a/GIF89a signature)"
    pos = 13
    if data[10] & 0x80:  # global colour table
        pos += 3 << ((data[10] & 7) + 1)
    frames = 0

    def skip_sub_blocks(pos: int) -> int | None:
        while pos < size:
            n = data[pos]
            pos += 1 + n
            if n == 0:
                return pos if pos <= size else None
        return None

    while True:
        if pos >= size:
            where = f"after frame {frames}" if frames else "before its first frame"
            return frames, f"cut off {where} (no trailer)"
        block = data[pos]
        if block == 0x3B:  # trailer
            return frames, None
        if block == 0x21:  # extension: label, then sub-blocks
            end = skip_sub_blocks(pos + 2)
        elif block == 0x2C:  # image: descriptor, local colour table, LZW code size, sub-blocks
            if pos + 10 > size:
                end = None
            else:
                packed = data[pos + 9]
                start = pos + 10 + ((3 << ((packed & 7) + 1)) if packed & 0x80 else 0) + 1
                end = skip_sub_blocks(start)
            if end is not None:
                frames += 1
        else:
            return frames, f"damaged (an unknown block 0x{block:02X} after frame {frames})"
        if end is None:
            inside = f"frame {frames + 1}" if block == 0x2C else f"the block after frame {frames}"
            return frames, f"cut off inside {inside}"
        pos = end


def probe_video(path: str | Path, *, fps: float | None = None) -> VideoInfo:
    """Read a video's frame rate, frame count, size and duration without decoding it.

    ``path`` is a video file or a folder of images (``fps`` sets a folder's frame rate, default
    :data:`DEFAULT_FOLDER_FPS`). The frame count of a file comes from demuxing it (no decoding).
    Raises :class:`InputError` for missing, empty, truncated or non-video files.
    """
    path = Path(path)
    if _check_video_path(path) == "folder":
        files = list_image_folder(path)
        if not files:
            raise InputError(
                f"{path} is a folder with no image frames in it — put the frames there as "
                f"{'/'.join(s.lstrip('.') for s in IMAGE_SUFFIXES[:3])} files, or give a video file."
            )
        try:
            with Image.open(files[0]) as im:
                w, h = im.size
                orientation = im.getexif().get(0x0112, 1)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input
            raise InputError(f"{files[0]} is not a readable image ({exc}) — remove or fix it.") from exc
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        rate = float(fps) if fps else DEFAULT_FOLDER_FPS
        return VideoInfo(rate, len(files), w, h, len(files) / rate)
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"ftyp" and iso_media_cut(path):
        raise InputError(
            f"{path} is truncated (the file ends inside its last box) — re-export or "
            "re-download the full video."
        )
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", os.path.abspath(path),
           "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise InputError(f"{path}: probing the video took too long — check the file.") from exc
    info = _parse_probe(path, proc.stderr.decode("utf-8", "replace"), proc.returncode)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        _, problem = gif_structure(path)
        if problem:
            raise InputError(
                f"{path} is truncated or damaged: the GIF is {problem} — re-export or "
                "re-download the full file."
            )
    if fps:
        info = VideoInfo(float(fps), info.num_frames, info.width, info.height, info.duration_s)
    return info


# --------------------------------------------------------------------------------------------
# Reading


class VideoReader:
    """A stream of uint8 ``(H, W, 3)`` RGB frames from a video file or a folder of images.

    Use as a context manager and iterate; frames are decoded one at a time (bounded memory).
    Attributes: ``fps``, ``width``, ``height``, ``num_frames`` (None when unknown), ``path``.
    """

    def __init__(
        self, path: str | Path, *, max_pixels: int = MAX_VIDEO_PIXELS, fps: float | None = None
    ) -> None:
        self.path = Path(path)
        info = probe_video(self.path, fps=fps)
        check_size(info.width, info.height, max_pixels=max_pixels, source=str(self.path), what="video frame")
        self.info = info
        self.fps: float = info.fps
        self.width: int = info.width
        self.height: int = info.height
        self.num_frames: int | None = info.num_frames
        self.max_pixels = max_pixels
        self._gen: Iterator[np.ndarray] | None = None
        self._closed = False
        self.frames_read = 0

    # iteration ------------------------------------------------------------------------------
    def __iter__(self) -> "VideoReader":
        return self

    def __next__(self) -> np.ndarray:
        if self._closed:
            raise StopIteration
        if self._gen is None:
            self._gen = self._folder_frames() if self.path.is_dir() else self._file_frames()
        frame = next(self._gen)
        self.frames_read += 1
        return frame

    def _folder_frames(self) -> Iterator[np.ndarray]:
        for f in list_image_folder(self.path):
            frame = read_image(f, max_pixels=self.max_pixels)
            if frame.shape[:2] != (self.height, self.width):
                raise InputError(
                    f"{f} is {frame.shape[1]}x{frame.shape[0]} but the first frame of {self.path} is "
                    f"{self.width}x{self.height} — all frames of a folder must have the same size."
                )
            yield frame

    def _file_frames(self) -> Iterator[np.ndarray]:
        import imageio_ffmpeg

        gen = imageio_ffmpeg.read_frames(
            os.path.abspath(self.path),
            pix_fmt="rgb24",
            input_params=["-nostdin"],
            output_params=["-map", "0:v:0"],
        )
        try:
            try:
                meta = next(gen)
            except (OSError, RuntimeError, StopIteration) as exc:
                raise InputError(f"{self.path} cannot be decoded ({_first_line(exc)}) — re-export it.") from exc
            w, h = meta["size"]
            if (w, h) != (self.width, self.height):  # rotation metadata disagreement etc.
                check_size(w, h, max_pixels=self.max_pixels, source=str(self.path), what="video frame")
                self.width, self.height = w, h
            while True:
                try:
                    buf = next(gen)
                except StopIteration:
                    break
                except (OSError, RuntimeError) as exc:
                    raise InputError(
                        f"{self.path}: decoding failed after {self.frames_read} frames "
                        f"({_first_line(exc)}); the file may be truncated or corrupt — re-export it."
                    ) from exc
                yield np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
        finally:
            gen.close()
        if self.frames_read == 0:
            raise InputError(f"{self.path} contains no decodable frames — re-export the video.")

    # lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop decoding and end the ffmpeg process (safe to call twice)."""
        self._closed = True
        if self._gen is not None:
            self._gen.close()
            self._gen = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # ensure ffmpeg is not left running
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __repr__(self) -> str:
        return (f"VideoReader({str(self.path)!r}, {self.width}x{self.height}, fps={self.fps:g}, "
                f"num_frames={self.num_frames})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def open_video(
    path: str | Path, *, max_pixels: int = MAX_VIDEO_PIXELS, fps: float | None = None
) -> VideoReader:
    """Open a video file (mp4/mov/webm/mkv/avi/gif) or a folder of images as a frame stream.

    ``fps`` overrides the frame rate (needed for folders; default 25). Frames larger than
    ``max_pixels`` are refused with an :class:`InputError`.
    """
    return VideoReader(path, max_pixels=max_pixels, fps=fps)


def check_fps(fps: float | None, path: str | Path) -> float | None:
    """``fps`` given for reading ``path`` (None: not given), checked: a positive number, and
    only for an input without a frame rate of its own (a folder of frames, a pose file, a
    photo) — a video file keeps its own rate, and a :class:`UsageError` names it."""
    if fps is None:
        return None
    try:
        rate = float(fps)
    except (TypeError, ValueError):
        raise UsageError(f"`fps` must be a number of frames per second, got {fps!r}") from None
    if not (rate > 0 and np.isfinite(rate)):
        raise UsageError(f"`fps` must be a positive number of frames per second, got {fps}")
    path = Path(path)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        raise UsageError(f"{path.name} is a video file with a frame rate of its own; `fps` is for "
                         "a folder of frames or a pose file (re-encode the video to change its "
                         "rate, e.g. ffmpeg -i in.mp4 -r 12 out.mp4)")
    return rate


def read_video(
    path: str | Path, max_frames: int | None = None, *, max_pixels: int = MAX_VIDEO_PIXELS
) -> tuple[np.ndarray, float]:
    """Read a short clip whole: ``(frames uint8 (F, H, W, 3), fps)``. Prefer :func:`open_video`
    for anything long; this holds every frame in memory."""
    frames = []
    with open_video(path, max_pixels=max_pixels) as reader:
        for frame in reader:
            frames.append(frame)
            if max_frames is not None and len(frames) >= max_frames:
                break
        fps = reader.fps
        w, h = reader.width, reader.height
    if not frames:
        return np.zeros((0, h, w, 3), dtype=np.uint8), fps
    return np.stack(frames), fps


# --------------------------------------------------------------------------------------------
# Writing


class Marker(Protocol):
    """What a writer calls if given one (provenance implements it; io does not know how)."""

    def mark(self, frame: np.ndarray) -> np.ndarray:  # uint8 (H, W, 3) RGB in and out
        ...

    def finalize(self, path: Path) -> None:  # the complete temporary file, before the rename
        ...


def _writer_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in MP4_SUFFIXES:
        return "mp4"
    if suffix == ".gif":
        return "gif"
    if path.is_dir() or suffix == "":
        return "png"
    raise UsageError(
        f"cannot write a video to {path}: unsupported suffix {path.suffix!r} — use .mp4 or .mov "
        "(H.264), .gif, or a folder name without a suffix for PNG frames."
    )


class _FfmpegSink:
    """Raw RGB frames into an ffmpeg process writing an MP4/MOV or GIF file."""

    def __init__(self, path: Path, kind: str, size_wh: tuple[int, int], fps: float, crf: int) -> None:
        w, h = size_wh
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", f"{fps:.6g}",
               "-i", "-", "-an"]
        if kind == "mp4":
            fmt = "mov" if path.suffix.lower() == ".mov" else "mp4"
            cmd += ["-c:v", "libx264", "-preset", "medium", "-crf", str(int(crf)),
                    "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", fmt]
        else:  # gif: one palette per frame, so ffmpeg never holds the whole clip
            cmd += ["-filter_complex",
                    "split[a][b];[a]palettegen=stats_mode=single[p];[b][p]paletteuse=new=1",
                    "-loop", "0", "-f", "gif"]
        cmd.append(os.path.abspath(path))
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=self._log)

    def _error(self, what: str) -> KinemateError:
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace").strip()
        return KinemateError(f"ffmpeg failed while {what}: {text[-500:] or 'no message'} — check "
                             "that the output folder is writable and has free space.")

    def write(self, frame: np.ndarray) -> None:
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except (BrokenPipeError, OSError) as exc:
            self._proc.wait()
            raise self._error("encoding") from exc

    def close(self) -> None:
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        rc = self._proc.wait()
        try:
            if rc != 0:
                raise self._error("finishing the video")
        finally:
            self._log.close()

    def abort(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        self._proc.wait()
        self._log.close()


class _PngSink:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        self.n = 0

    def write(self, frame: np.ndarray) -> None:
        Image.fromarray(frame).save(self.folder / FRAME_NAME.format(self.n), compress_level=3)
        self.n += 1

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _is_previous_frames_folder(folder: Path) -> bool:
    """True for an empty folder or one holding only frames a PNG writer made."""
    return all(re.fullmatch(r"frame_\d{6}\.png", p.name) for p in folder.iterdir())


class VideoWriter:
    """Write uint8 ``(H, W, 3)`` RGB frames to ``path``, atomically.

    The kind follows the suffix: ``.mp4``/``.mov``/``.m4v`` → H.264 yuv420p (crf ``crf``; an odd
    width or height is padded to even by repeating the last column/row), ``.gif`` → animated GIF,
    no suffix or an existing folder → a folder of ``frame_000000.png`` files. Frames go to a
    temporary name beside the target that keeps the suffix (``out.kinemate-tmp-1a2b3c4d.mp4``);
    on a clean close ``marker.finalize(tmp)`` runs and the file is renamed to ``path``; on an
    exception the temporary output is removed and nothing appears under ``path``.
    ``marker.mark(frame)`` is applied to every frame before encoding.
    """

    def __init__(self, path: str | Path, fps: float, *, marker: Marker | None = None, crf: int = 18) -> None:
        self.path = Path(path)
        self.kind = _writer_kind(self.path)
        try:
            fps = float(fps)
        except (TypeError, ValueError):
            raise UsageError(f"fps must be a number, got {fps!r}.") from None
        if not (fps > 0 and np.isfinite(fps)):
            raise UsageError(f"fps must be a positive number, got {fps}.")
        if not 0 <= int(crf) <= 51:
            raise UsageError(f"crf must be between 0 (lossless) and 51, got {crf}.")
        if self.kind == "png" and self.path.exists():
            if not self.path.is_dir():
                raise UsageError(f"{self.path} exists and is a file; give a folder for PNG frames.")
            if not _is_previous_frames_folder(self.path):
                raise UsageError(
                    f"{self.path} is a folder with other files in it — give a new or empty folder "
                    "for the PNG frames."
                )
        if self.kind != "png" and self.path.is_dir():
            raise UsageError(f"{self.path} is a folder; give a file name such as {self.path / 'out.mp4'}.")
        self.fps = fps
        self.crf = int(crf)
        self.marker = marker
        self.frames_written = 0
        self.size_wh: tuple[int, int] | None = None  # of the frames given (before any padding)
        self._tmp: Path | None = None
        self._sink = None
        self._done = False

    def _open(self, w: int, h: int) -> None:
        ensure_parent(self.path)
        self._tmp = temp_sibling(self.path)
        if self.kind == "png":
            self._sink = _PngSink(self._tmp)
        else:
            pw, ph = (w + w % 2, h + h % 2) if self.kind == "mp4" else (w, h)
            self._sink = _FfmpegSink(self._tmp, self.kind, (pw, ph), self.fps, self.crf)

    def write(self, frame: np.ndarray) -> None:
        """Write one uint8 ``(H, W, 3)`` RGB frame (all frames the same size)."""
        if self._done:
            raise ValueError("write() on a closed VideoWriter")
        arr = np.asarray(frame)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"frames must be uint8 (H, W, 3) RGB, got {arr.dtype} {arr.shape}")
        if self.marker is not None:
            arr = np.asarray(self.marker.mark(arr))
            if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
                raise ValueError(f"marker.mark returned {arr.dtype} {arr.shape}, not uint8 (H, W, 3)")
        h, w = arr.shape[:2]
        if self.size_wh is None:
            self.size_wh = (w, h)
            try:
                self._open(w, h)
            except BaseException:
                self.abort()
                raise
        elif (w, h) != self.size_wh:
            self.abort()
            raise ValueError(f"frame {self.frames_written} is {w}x{h}; earlier frames are "
                             f"{self.size_wh[0]}x{self.size_wh[1]}")
        if self.kind == "mp4" and (w % 2 or h % 2):
            arr = np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        try:
            self._sink.write(arr)
        except BaseException:
            self.abort()
            raise
        self.frames_written += 1

    def close(self) -> Path:
        """Finish the file, run ``marker.finalize`` and rename it into place. Returns the path."""
        if self._done:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise KinemateError(f"no frames were written to {self.path}; nothing was saved.")
        try:
            self._sink.close()
            if self.marker is not None:
                self.marker.finalize(self._tmp)
            if self.kind == "png":
                replace_folder(self._tmp, self.path)
            else:
                commit(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        log.debug("wrote %d frames to %s", self.frames_written, self.path)
        return self.path

    def abort(self) -> None:
        """Stop writing and remove the temporary output (nothing appears under ``path``)."""
        if self._sink is not None:
            try:
                self._sink.abort()
            except Exception:  # noqa: BLE001
                pass
        if self._tmp is not None:
            remove_quietly(self._tmp)
        self._done = True

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    marker: Marker | None = None,
    crf: int = 18,
) -> Path:
    """Write an iterable of uint8 ``(H, W, 3)`` frames (or an ``(F, H, W, 3)`` array) atomically."""
    with VideoWriter(path, fps, marker=marker, crf=crf) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)
