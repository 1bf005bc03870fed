"""Frames per second of the synthetic generator (kinemate.synth.generate_clip), one CPU core.

    .venv/bin/python benchmarks/bench_synth.py [--clips 12] [--frames 16]

Reports, per size, the rate with all ground truth (frames, pose, skeleton and DensePose
control maps, part/IUV maps, masks) and the rate of the minimum a training step needs
(frames, pose, masks, part maps; no control-map rendering).
"""

from __future__ import annotations

import argparse
import time

from kinemate.synth import generate_clip


def bench(size: int, clips: int, frames: int, **kw) -> float:
    generate_clip(0, 2, size, **kw)  # warm-up (imports, caches)
    t0 = time.perf_counter()
    for seed in range(clips):
        generate_clip(10_000 + seed, frames, size, **kw)
    return clips * frames / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--sizes", default="64,128,256")
    args = ap.parse_args()
    print(f"{'size':>9} | {'fps, all ground truth':>22} | {'fps, no control maps':>21}")
    for s in (int(v) for v in args.sizes.split(",")):
        full = bench(s, args.clips, args.frames)
        lean = bench(s, args.clips, args.frames, skeleton=False, densepose=False)
        print(f"{s:>4}x{s:<4} | {full:>22.0f} | {lean:>21.0f}")


if __name__ == "__main__":
    main()
