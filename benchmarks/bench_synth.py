"""Frames per second of the synthetic generator (kinemate.synth.generate_clip), one CPU core.

    .venv/bin/python benchmarks/bench_synth.py [--clips 12] [--frames 16] [--realism 40]

Reports, per size, the rate with all ground truth (frames, pose, skeleton and DensePose
control maps, part/IUV maps, masks) and the rate of the minimum a training step needs
(frames, pose, masks, part maps; no control-map rendering).

``--realism N`` also runs a real pose estimator (MediaPipe, via kinemate.pose) on N clips of
4 frames at 256x256 and reports how often it finds the person and PCK@0.1 (share of
keypoints within 10 % of the body height of the ground truth).
"""

from __future__ import annotations

import argparse
import time

from kinemate.synth import generate_clip


def bench(size: int, clips: int, frames: int, **kw) -> tuple[float, float]:
    """(frames per wall-clock second, frames per CPU second of this process)."""
    generate_clip(0, 2, size, **kw)  # warm-up (imports, caches)
    t0, c0 = time.perf_counter(), time.process_time()
    for seed in range(clips):
        generate_clip(10_000 + seed, frames, size, **kw)
    n = clips * frames
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def realism(n: int) -> None:
    """How well a real pose estimator (MediaPipe) sees the synthetic people: frames where it
    finds a person, and PCK@0.1 against the exact pose (kinemate.eval's definition)."""
    from kinemate.eval.pose_metrics import pose_accuracy
    from kinemate.pose.extract import extract_pose

    visible = correct = detected = frames = 0
    for seed in range(n):
        clip = generate_clip(20_000 + seed, 4, 256, skeleton=False, densepose=False)
        track = extract_pose(clip.frames, smooth=False, progress=False, require_person=False,
                             max_people=1)
        detected += int(((track.body[..., 2] > 0.3).sum(-1) >= 6).sum())
        frames += len(clip.frames)
        vis, cor, _ = pose_accuracy(track.body, clip.pose, alpha=0.1).counts
        visible, correct = visible + vis, correct + cor
    print(f"MediaPipe on {n} clips x 4 frames (256x256): person found in "
          f"{detected}/{frames} frames ({100 * detected / frames:.0f} %), "
          f"PCK@0.1 = {100 * correct / max(visible, 1):.1f} % of {visible} keypoints")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--realism", type=int, default=0, metavar="N")
    args = ap.parse_args()
    print("frames per second (wall clock / per CPU second of this process, which is what one "
          "core gives when the machine is shared)")
    print(f"{'size':>9} | {'all ground truth':>18} | {'no control maps':>18}")
    for s in (int(v) for v in args.sizes.split(",")):
        fw, fc = bench(s, args.clips, args.frames)
        lw, lc = bench(s, args.clips, args.frames, skeleton=False, densepose=False)
        print(f"{s:>4}x{s:<4} | {fw:>7.0f} / {fc:>8.0f} | {lw:>7.0f} / {lc:>8.0f}")
    if args.realism:
        realism(args.realism)


if __name__ == "__main__":
    main()
