"""Time to read a pose JSON file of N empty frames (the kind a hostile upload sends).

    .venv/bin/python benchmarks/bench_pose_json.py [--frames 20000 100000] [--format kinemate|openpose]

Writes a compact kinemate pose file (``"frames": [{}, {}, ...]``, 3 bytes a frame) or an
OpenPose array (``[{"people": []}, ...]``) and times :func:`kinemate.pose.load_pose` on it,
reading and parsing included, and the service's refusal of the same file under its frame limit
(``max_frames=1500``: refused before any frame is parsed).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[20000, 100000])
    ap.add_argument("--format", choices=("kinemate", "openpose"), default="kinemate")
    args = ap.parse_args()

    from kinemate.pose import load_pose
    from kinemate.pose.track import TooManyFrames

    with tempfile.TemporaryDirectory() as tmp:
        for n in args.frames:
            if args.format == "kinemate":
                data = {"format": "kinemate.pose", "version": 1, "image_size": [64, 64],
                        "fps": 25, "frames": [{}] * n}
            else:
                data = [{"people": []}] * n
            path = Path(tmp) / f"{n}.json"
            path.write_text(json.dumps(data, separators=(",", ":")))
            t0 = time.perf_counter()
            track = load_pose(path)
            parse_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            try:
                load_pose(path, max_frames=1500)
            except TooManyFrames:
                pass
            refuse_s = time.perf_counter() - t0
            print(f"{args.format} {n} frames ({path.stat().st_size / 1e3:.0f} KB): parsed "
                  f"{len(track)} frames in {parse_s:.2f} s; refused over a 1500-frame limit "
                  f"in {refuse_s:.2f} s")


if __name__ == "__main__":
    main()
