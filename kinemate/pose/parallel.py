"""Pose extraction on several CPU cores: the video is split into contiguous chunks, one worker
process (with its own MediaPipe graph) per chunk.

MediaPipe runs one frame at a time on roughly one core, so a machine with many cores extracts
``workers`` times faster. Each worker decodes the video from the start and skips to its chunk
(decoding is cheap next to pose estimation); tracking restarts at each chunk boundary (a
fresh detection there), which is the only difference from one worker.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from typing import Any

from tqdm import tqdm

from kinemate.pose.people import Candidate

_counter: Any = None


def _init(counter: Any) -> None:
    global _counter
    _counter = counter
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _chunk(task: tuple[str, int, int | None, str, dict[str, Any], float | None]) -> list[list[Candidate]]:
    source, start, stop, backend_name, options, fps = task
    from kinemate.io import open_video
    from kinemate.pose.backends import get_backend

    backend = get_backend(backend_name, **options)
    out: list[list[Candidate]] = []
    try:
        with open_video(source, fps=fps) as reader:
            for i, frame in enumerate(reader):
                if stop is not None and i >= stop:
                    break
                if i < start:
                    continue
                out.append(backend.detect(frame))
                if _counter is not None:
                    with _counter.get_lock():
                        _counter.value += 1
    finally:
        backend.close()
    return out


def extract_candidates_parallel(
    source: str,
    num_frames: int,
    *,
    workers: int,
    backend: str,
    options: dict[str, Any],
    fps: float | None = None,
    max_frames: int | None = None,
    progress: bool = True,
) -> list[list[Candidate]]:
    """People found in each frame of ``source`` (a video file or frame folder with a known
    ``num_frames``), using ``workers`` processes. Same result layout as running the backend
    over the frames in order."""
    total = min(num_frames, max_frames) if max_frames else num_frames
    workers = max(1, min(workers, total))
    bounds = [round(k * total / workers) for k in range(workers + 1)]
    tasks = []
    for k in range(workers):
        last = k == workers - 1
        stop = (max_frames if max_frames else None) if last else bounds[k + 1]
        tasks.append((source, bounds[k], stop, backend, options, fps))
    ctx = mp.get_context("spawn")  # MediaPipe's threads do not survive a fork
    counter = ctx.Value("i", 0)
    with ctx.Pool(workers, initializer=_init, initargs=(counter,)) as pool:
        result = pool.map_async(_chunk, tasks)
        with tqdm(total=total, disable=not progress, desc="pose", unit="frame", file=sys.stderr, leave=False) as bar:
            while not result.ready():
                result.wait(0.2)
                bar.update(counter.value - bar.n)
            bar.update(counter.value - bar.n)
        chunks = result.get()
    return [cands for chunk in chunks for cands in chunk]
