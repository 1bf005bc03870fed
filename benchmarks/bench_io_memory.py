"""Peak memory of reading + re-writing a video with kinemate.io, for short and long videos.

Makes 512x512 test videos (ffmpeg ``testsrc``, H.264) of 200 and 2000 frames, then, for each, in
a *fresh* Python subprocess, streams every frame through ``open_video`` into a ``VideoWriter``
(H.264 MP4) and reports:

* ``py_peak_MiB``   — peak RSS of the Python process (``resource.getrusage``),
* ``ffmpeg_peak_MiB`` — peak RSS of its ffmpeg children (decoder + encoder) together, sampled
  every 20 ms with psutil (``getrusage(RUSAGE_CHILDREN)`` is not used: on Linux a child forked
  from a big parent inherits the parent's high-water mark),
* ``tree_peak_MiB`` — peak of Python + all children together, sampled the same way.

Streaming means these stay flat when the video gets 10x longer. ``--contrast`` adds a row that
loads the whole clip with ``read_video`` first (what *not* to do), which grows with frame count.

Run:  .venv/bin/python benchmarks/bench_io_memory.py [--frames 200 2000] [--contrast]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, threading, time
import psutil
from kinemate.io import open_video, read_video, VideoWriter

src, dst, mode = sys.argv[1], sys.argv[2], sys.argv[3]
me = psutil.Process()
peak = [0]
kids_peak = [0]
stop = threading.Event()

def sample():
    while not stop.is_set():
        total = kids = 0
        try:
            total = me.memory_info().rss
            for c in me.children(recursive=True):
                try:
                    kids += c.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peak[0] = max(peak[0], total + kids)
        kids_peak[0] = max(kids_peak[0], kids)
        time.sleep(0.02)

t = threading.Thread(target=sample, daemon=True)
t.start()
t0 = time.perf_counter()
n = 0
if mode == "stream":
    with open_video(src) as reader, VideoWriter(dst, reader.fps) as writer:
        for frame in reader:
            writer.write(frame)
            n += 1
else:  # "load": the whole clip in memory first
    frames, fps = read_video(src)
    with VideoWriter(dst, fps) as writer:
        for frame in frames:
            writer.write(frame)
            n += 1
secs = time.perf_counter() - t0
stop.set(); t.join()
ru_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"frames": n, "seconds": secs, "py_peak_MiB": ru_self,
                  "ffmpeg_peak_MiB": kids_peak[0] / 2**20, "tree_peak_MiB": peak[0] / 2**20}))
"""


def make_video(path: Path, frames: int, size: int = 512) -> None:
    from kinemate.io import ffmpeg_exe

    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
         "-i", f"testsrc=size={size}x{size}:rate=25", "-frames:v", str(frames),
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )


def run_child(src: Path, dst: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(src), str(dst), mode],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--contrast", action="store_true", help="also time the load-everything path")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="kinemate-bench-") as tmp:
        tmp = Path(tmp)
        for n in args.frames:
            src = tmp / f"src_{n}.mp4"
            t0 = time.perf_counter()
            make_video(src, n, args.size)
            print(f"made {src.name} ({n} frames, {args.size}x{args.size}) in "
                  f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
            modes = ["stream", "load"] if args.contrast else ["stream"]
            for mode in modes:
                r = run_child(src, tmp / f"out_{n}_{mode}.mp4", mode)
                r["mode"] = mode
                rows.append(r)
                print(f"  {mode}: {r}", file=sys.stderr)

    print(f"\nread + re-write, {args.size}x{args.size} H.264 -> H.264 (peak RSS, MiB)")
    print(f"{'mode':8} {'frames':>7} {'python':>8} {'ffmpeg':>8} {'total':>8} {'fps':>7}")
    for r in rows:
        print(f"{r['mode']:8} {r['frames']:>7} {r['py_peak_MiB']:>8.1f} {r['ffmpeg_peak_MiB']:>8.1f} "
              f"{r['tree_peak_MiB']:>8.1f} {r['frames'] / r['seconds']:>7.1f}")
    stream = [r for r in rows if r["mode"] == "stream"]
    if len(stream) >= 2:
        lo, hi = stream[0], stream[-1]
        growth = hi["tree_peak_MiB"] / lo["tree_peak_MiB"] - 1
        print(f"\nstreaming: {hi['frames'] / lo['frames']:.0f}x more frames -> total peak RSS "
              f"{growth:+.1%}")


if __name__ == "__main__":
    main()
