"""Pose extraction speed on CPU: frames per second for a 512x512 video (MediaPipe Holistic).

    .venv/bin/python benchmarks/bench_pose.py [--frames 60] [--size 512] [--threads N]

The driving video is real: scikit-image's astronaut photo, panned and zoomed over the frames
and encoded to H.264 with ffmpeg (kinemate.io). Reports, end to end (decode + MediaPipe +
person following + gap filling + One-Euro smoothing):

* ``max_people=1`` — one MediaPipe pass per frame (fastest);
* ``max_people=2`` — the default: a second pass on the frame with the first person blanked
  out, to notice a second person;
* body only (``--body-only``: MediaPipe's Pose graph instead of Holistic, no hands or face);
* ``workers`` processes in parallel (``--workers``, up to 4 here);

and the rendering speed of OpenPose control maps at the same size, and the time to retarget
the track. Numbers depend on the CPU and on how many cores are free.

With ``--accuracy N`` it also measures extraction accuracy against exact ground truth on N
synthetic clips (kinemate.synth, held-out seeds from 1000000, 16 frames at 256x256): the
median keypoint error and PCK@0.1 (share of keypoints within 10 % of the person's height),
raw and after One-Euro smoothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_clip(path: Path, frames: int, size: int) -> Path:
    from skimage import data

    from kinemate.io import resize, write_video

    photo = data.astronaut()
    out = []
    for i in range(frames):
        zoom = 1.0 + 0.3 * (i / max(frames - 1, 1))
        crop = int(512 / zoom)
        x0 = int((512 - crop) * 0.5 * (1 + np.sin(i / 8)) / 2)
        y0 = (512 - crop) // 3
        out.append(resize(np.ascontiguousarray(photo[y0 : y0 + crop, x0 : x0 + crop]), (size, size)))
    return write_video(path, out, 25)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None, help="limit OMP/TFLite threads (default: all)")
    ap.add_argument("--accuracy", type=int, default=0, metavar="N", help="also measure accuracy on N synthetic clips")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from kinemate.pose import detect_reference_pose, extract_pose, render_openpose, retarget
    from kinemate.pose.backends import MediaPipeBackend

    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", args.frames, args.size)
        print(f"video: {args.frames} frames {args.size}x{args.size}, cpu count {os.cpu_count()}")
        warm = MediaPipeBackend(max_people=1)
        extract_pose(clip, backend=warm, max_frames=3, progress=False)  # load the models once
        warm.close()
        track = None
        for people, full in ((1, True), (2, True), (1, False)):
            be = MediaPipeBackend(max_people=people, hands=full, face=full)
            t0 = time.perf_counter()
            track_i = extract_pose(clip, backend=be, progress=False)
            dt = time.perf_counter() - t0
            be.close()
            track = track_i if full else track
            what = "holistic" if full else "body only"
            print(f"extract {what} (max_people={people}): {args.frames / dt:6.1f} frames/s "
                  f"({1000 * dt / args.frames:.0f} ms/frame, {int(track_i.present().sum())} frames with a person)")  # fmt: skip
        workers = min(4, os.cpu_count() or 1)
        if workers > 1:
            t0 = time.perf_counter()
            extract_pose(clip, workers=workers, max_people=1, progress=False)
            dt = time.perf_counter() - t0
            print(f"extract holistic (max_people=1, {workers} worker processes): {args.frames / dt:6.1f} frames/s "
                  "(includes starting the workers)")  # fmt: skip
        assert track is not None
        from skimage import data

        ref = detect_reference_pose(data.astronaut())
        t0 = time.perf_counter()
        rt = retarget(track, ref)
        dt = time.perf_counter() - t0
        print(f"retarget: {args.frames / dt:8.0f} frames/s")
        t0 = time.perf_counter()
        n = sum(1 for _ in render_openpose(rt, (args.size, args.size)))
        dt = time.perf_counter() - t0
        print(f"render {args.size}x{args.size} control maps: {n / dt:6.0f} frames/s")
    if args.accuracy:
        accuracy(args.accuracy)


def accuracy(clips: int) -> None:
    from kinemate.pose import extract_pose
    from kinemate.pose.backends import MediaPipeBackend
    from kinemate.synth import generate_clip

    be = MediaPipeBackend(max_people=1)
    for smooth in (False, True):
        errs, pcks, found = [], [], []
        for seed in range(1_000_000, 1_000_000 + clips):
            clip = generate_clip(seed, 16, (256, 256), skeleton=False, densepose=False)
            track = extract_pose(clip.frames, backend=be, smooth=smooth, progress=False, require_person=False)
            gt = clip.pose
            seen = gt[..., 2] > 0.5
            both = (track.body[..., 2] > 0) & seen
            err = np.linalg.norm(track.body[..., :2] - gt[..., :2], axis=-1)
            height = float(np.ptp(gt[seen][:, 1]))
            errs.append(err[both])
            pcks.append(float(((err < 0.1 * height) & both).sum() / max(seen.sum(), 1)))
            found.append(float(both.sum() / max(seen.sum(), 1)))
        all_err = np.concatenate(errs)
        print(f"accuracy ({'smoothed' if smooth else 'raw'}, {clips} synthetic clips x 16 frames, 256x256): "
              f"median error {np.median(all_err):.1f} px, PCK@0.1 {np.mean(pcks):.3f}, "
              f"keypoints found {np.mean(found):.3f}")  # fmt: skip
    be.close()


if __name__ == "__main__":
    main()
