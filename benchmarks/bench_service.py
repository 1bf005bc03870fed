"""Service timings: start-up, upload checks, rejections and a whole tiny job, against a real
`kinemate serve` on loopback.

    .venv/bin/python benchmarks/bench_service.py [--weights DIR] [--jobs 3] [--steps 2]

Without --weights the golden tiny MagicAnimate weights (saved in kinemate format with their
text embeddings) are used when present, else the bundled model. Prints one line per measure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "service"))

from service_helpers import Server, prepare_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="64x64")
    args = ap.parse_args()

    from kinemate.io import fit_image, open_video, read_image, write_image, write_video

    demo = REPO.parent / "shared" / "reference" / "magicanimate" / "demo_inputs"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        w, h = (int(x) for x in args.size.split("x"))
        write_image(tmp / "ref.png", fit_image(read_image(demo / "monalisa.png"), (w, h), "crop"))
        frames = []
        with open_video(demo / "running.mp4") as reader:
            for frame in reader:
                frames.append(fit_image(frame, (w, h), "crop"))
                if len(frames) == args.frames:
                    break
        write_video(tmp / "drv.mp4", frames, 25)
        weights = args.weights or prepare_model(tmp)

        t0 = time.perf_counter()
        server = Server(tmp / "data", weights).start(timeout=600)
        print(f"start-up until the worker is ready: {time.perf_counter() - t0:.1f} s")
        try:
            key = server.new_key("bench")
            c = server.client
            ref, drv = (tmp / "ref.png").read_bytes(), (tmp / "drv.mp4").read_bytes()
            accept, total = [], []
            for _ in range(args.jobs):
                t = time.perf_counter()
                res = c.submit(key, ref, drv, params={"steps": args.steps, "size": args.size})
                accept.append(time.perf_counter() - t)
                assert res.status == 201, res.body
                job = c.wait(key, res.json()["id"], timeout=1800)
                assert job["state"] == "succeeded", job
                total.append(time.perf_counter() - t)
            print(f"accept a job ({len(drv) // 1024} KiB video, {args.frames} frames; sniff, "
                  f"probe, decode): median {statistics.median(accept) * 1000:.0f} ms")
            print(f"whole job ({args.frames} frames {args.size}, {args.steps} steps): median "
                  f"{statistics.median(total):.1f} s over {args.jobs}")
            bad = drv[: len(drv) // 2]
            t = time.perf_counter()
            for _ in range(20):
                assert c.submit(key, ref, bad).status == 422
            print(f"reject a truncated video: {(time.perf_counter() - t) / 20 * 1000:.0f} ms")
            t = time.perf_counter()
            for _ in range(50):
                assert c.get("/api/v1/jobs", key=key).status == 200
            print(f"list jobs: {(time.perf_counter() - t) / 50 * 1000:.1f} ms")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
