"""Service memory, against a real `kinemate serve` on loopback.

    .venv/bin/python benchmarks/bench_service_memory.py jobs [--jobs 100] [--weights DIR]
        [--reference PHOTO --driving VIDEO] [--frames 4] [--size 64x64]
    .venv/bin/python benchmarks/bench_service_memory.py upload [--frames 1500] [--side 2048]

``jobs``: runs ``--jobs`` small jobs one after another (``--frames`` of the driving clip at
``--size``, 1 step; default the MagicAnimate demo photo and DensePose clip), asking
for each job's preview too (once while it is queued or running, once when it is done), and
samples the server's resident memory (RSS of the server process; and of the process with
its ffmpeg children) after every job. Prints RSS every ``--every`` jobs and the growth over
the second half; memory that levels off shows as a growth near zero there.

``upload``: makes a tiny MP4 with many large frames (a solid colour, H.264 at the highest
compression: ~100 KB for 1500 frames of 2048x2048) and times how long the server takes to
accept it, alone and two at once, with the peak RSS of the server and its children while it
does (sampled every 20 ms) over the RSS just before. So that the worker does not start on
them meanwhile, a long small job (100 steps) keeps it busy; the uploaded jobs queue behind it
and are cancelled once measured.

Without --weights the golden tiny MagicAnimate weights (saved in kinemate format with their
text embeddings) are used when present, else the bundled model.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "service"))

from service_helpers import Server, prepare_model  # noqa: E402

MIB = 2**20


def rss(pid: int, children: bool = False) -> int:
    """Resident bytes of ``pid`` (and of its live child processes)."""
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    if children:
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
    return total


class PeakSampler:
    """Samples the RSS of a process tree every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss(self.pid, children=True))
            except Exception:  # noqa: BLE001 - a child that just ended
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


DEMO = REPO.parent / "shared" / "reference" / "magicanimate" / "demo_inputs"


def small_inputs(tmp: Path, size: tuple[int, int] = (64, 64), frames: int = 4,
                 reference: Path = DEMO / "monalisa.png",
                 driving: Path = DEMO / "running.mp4") -> tuple[bytes, bytes]:
    from kinemate.io import fit_image, open_video, read_image, write_image, write_video

    write_image(tmp / "ref.png", fit_image(read_image(reference), size, "crop"))
    clip = []
    with open_video(driving) as reader:
        for frame in reader:
            clip.append(fit_image(frame, size, "crop"))
            if len(clip) == frames:
                break
    write_video(tmp / "drv.mp4", clip, 25)
    return (tmp / "ref.png").read_bytes(), (tmp / "drv.mp4").read_bytes()


def big_video(path: Path, frames: int, side: int) -> bytes:
    """A solid-colour H.264 MP4: tiny on disk, expensive to decode."""
    from kinemate.io.video import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"color=c=gray:s={side}x{side}:r=25", "-frames:v", str(frames),
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "51",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path.read_bytes()


def bench_upload(server: Server, tmp: Path, args) -> None:
    key = server.new_key("bench-upload")
    c = server.client
    ref, _ = small_inputs(tmp)
    drv = big_video(tmp / "big.mp4", args.frames, args.side)
    print(f"upload: {len(drv) / 1024:.0f} KiB MP4, {args.frames} frames of {args.side}x{args.side}")
    pid = server.proc.pid
    _, small = small_inputs(tmp, frames=16)
    blocker = c.submit(key, ref, small, params={"steps": 100, "size": "64x64"}).json()["id"]
    c.wait(key, blocker, states=(), timeout=600,
           predicate=lambda j: j["progress"].get("stage") == "denoising")

    def submit(out: list, i: int) -> None:
        t = time.perf_counter()
        res = c.submit(key, ref, drv, params={"steps": 1, "size": "64x64"})
        out[i] = (time.perf_counter() - t, res)

    for n in (1, 2):
        results: list = [None] * n
        threads = [threading.Thread(target=submit, args=(results, i)) for i in range(n)]
        with PeakSampler(pid) as before:
            time.sleep(1.0)
        base = before.peak
        with PeakSampler(pid) as peak:
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        for seconds, res in results:
            if res.status in (200, 201):
                job = res.json()["id"]
                c.post(f"/api/v1/jobs/{job}/cancel", key=key)
                c.wait(key, job, timeout=600)
        times = ", ".join(f"{s:.2f} s ({r.status})" for s, r in results)
        print(f"{n} upload(s) at once: accepted in {times}; peak RSS of server + children "
              f"{peak.peak / MIB:.0f} MiB, {(peak.peak - base) / MIB:+.0f} MiB over the peak "
              "of the second before", flush=True)
    c.post(f"/api/v1/jobs/{blocker}/cancel", key=key)
    c.wait(key, blocker, timeout=600)


def bench_jobs(server: Server, tmp: Path, args) -> None:
    key = server.new_key("bench-jobs")
    c = server.client
    size = tuple(int(v) for v in args.size.split("x"))
    ref, drv = small_inputs(tmp, size, args.frames, args.reference or DEMO / "monalisa.png",
                            args.driving or DEMO / "running.mp4")
    pid = server.proc.pid
    samples = []
    t0 = time.perf_counter()
    print(f"{'jobs':>5} {'seconds':>8} {'RSS MiB':>8} {'min..max over the block':>24} "
          f"{'with children':>14}")
    print(f"{0:>5} {0.0:>8.1f} {rss(pid) / MIB:>8.1f} {'':>24} {rss(pid, True) / MIB:>14.1f}")
    for i in range(1, args.jobs + 1):
        res = c.submit(key, ref, drv, params={"steps": 1, "size": args.size})
        assert res.status == 201, res.body
        job = res.json()["id"]
        c.get(f"/api/v1/jobs/{job}/preview", key=key)
        done = c.wait(key, job, timeout=600)
        assert done["state"] == "succeeded", done
        assert c.get(f"/api/v1/jobs/{job}/preview", key=key).status == 200
        assert c.get(f"/api/v1/jobs/{job}/result", key=key).status == 200
        samples.append((i, time.perf_counter() - t0, rss(pid), rss(pid, True)))
        if i % args.every == 0:
            block = [r for _, _, r, _ in samples[-args.every:]]
            _, sec, r, rc = samples[-1]
            span = f"{min(block) / MIB:.0f}..{max(block) / MIB:.0f}"
            print(f"{i:>5} {sec:>8.1f} {r / MIB:>8.1f} {span:>24} {rc / MIB:>14.1f}", flush=True)
    half = len(samples) // 2
    first = [r for _, _, r, _ in samples[:half]]
    second = [r for _, _, r, _ in samples[half:]]
    print(f"RSS after each job, mean over jobs 1-{half}: {statistics.mean(first) / MIB:.1f} MiB "
          f"(max {max(first) / MIB:.1f}); over jobs {half + 1}-{len(samples)}: "
          f"{statistics.mean(second) / MIB:.1f} MiB (max {max(second) / MIB:.1f}); after the "
          f"last job {samples[-1][2] / MIB:.1f} MiB; median job "
          f"{statistics.median(b[1] - a[1] for a, b in zip(samples, samples[1:])):.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("jobs", "upload"))
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--frames", type=int, default=None,
                    help="jobs: frames of the driving clip (4); upload: frames (1500)")
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--size", default="64x64")
    ap.add_argument("--reference", type=Path)
    ap.add_argument("--driving", type=Path)
    args = ap.parse_args()
    if args.frames is None:
        args.frames = 1500 if args.part == "upload" else 4

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = args.weights or prepare_model(tmp)
        if weights is not None and weights.name == "kinemate-tiny":
            weights = None  # the bundled model: the server's default
        server = Server(tmp / "data", weights).start(timeout=600)
        try:
            (bench_upload if args.part == "upload" else bench_jobs)(server, tmp, args)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
