"""Is it a person? Frames of a driving clip where MediaPipe "finds" one, before and after the
plausibility check of kinemate.pose (keep_plausible_bodies: size, run length, joints, bone
lengths consistent from frame to frame).

    .venv/bin/python benchmarks/bench_person_check.py [--quick]

Clips, all encoded to H.264 by ffmpeg (kinemate.io) at 256x256 unless they are files:

* without a person: slow pans and zooms over real photos without people (scikit-image's
  rocket, coffee, chelsea (a cat), logo, retina, brick, gravel, grass, immunohistochemistry),
  darkened to dusk with a bright lens flare, two random variants each (seeded), 30 frames;
  and the 50-frame rocket pan of issue 18;
* with a person: the astronaut photo under the same dusk treatment and panned, the demo
  reference photos panned, kinemate.synth people doing each of its motions (24 frames), the
  bundled dance.mp4, and the DensePose demo videos (renders of real people, on which MediaPipe
  "finds" the body; not a person video, but followed consistently).

"before" = frames with a person in the raw track (what the extraction used to keep: at least
two keypoints of confidence >= 0.25); "after" = frames kept by the check; a clip with none
left is a NoPersonError. ``--quick`` runs a third of the clips.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO.parent / "shared" / "reference" / "magicanimate" / "demo_inputs"


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, 2)
    if a.dtype != np.uint8:
        a = (255 * (a / a.max())).astype(np.uint8)
    return np.ascontiguousarray(a[..., :3])


def dusk_pan(photo, n=30, size=256, dark=0.4, flare_xy=(0.6, 0.3), radius=0.06, zoom=1.3,
             reverse=False, flare=True):
    """Pan (left to right, or back) and zoom over ``photo``, darkened with a warm tint, with a
    bright flare disc, a ring and a horizontal streak drifting across."""
    from kinemate.io import resize

    h, w = photo.shape[:2]
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for i in range(n):
        t = i / max(n - 1, 1)
        side = int(min(w, h) / (1 + (zoom - 1) * t))
        x0 = int((w - side) * ((1 - t) if reverse else t))
        y0 = int((h - side) * 0.5 * (1 - t))
        f = resize(np.ascontiguousarray(photo[y0:y0 + side, x0:x0 + side]), (size, size))
        f = f.astype(np.float32) * dark * np.array([1.0, 0.85, 0.7])
        if flare:
            fx, fy = flare_xy[0] * size - 45 * t, flare_xy[1] * size + 10 * t
            rr = np.hypot(xx - fx, yy - fy)
            r = radius * size
            f += 255 * np.exp(-(rr / r) ** 2)[..., None]
            f += 80 * np.exp(-((rr - 2.5 * r) / (0.3 * r)) ** 2)[..., None] * np.array([0.6, 0.8, 1])
            f += 110 * np.exp(-((yy - fy) ** 2) / 8.0 - ((xx - fx) ** 2) / (0.4 * size) ** 2)[..., None]
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return np.stack(out)


def clips(quick: bool):
    """(group, name, frames array or video path)."""
    from skimage import data

    from kinemate.io import read_image

    rng = np.random.default_rng(18)
    for name in ("rocket", "coffee", "chelsea", "logo", "retina", "brick", "gravel", "grass",
                 "immunohistochemistry"):
        photo = _rgb(getattr(data, name)())
        for v in range(2):
            opts = dict(dark=rng.uniform(0.2, 0.6), flare_xy=tuple(rng.uniform(0.2, 0.8, 2)),
                        radius=rng.uniform(0.04, 0.12), zoom=rng.uniform(1.1, 1.6), reverse=v == 1)
            yield "no person", f"dusk pan {name} #{v}", lambda p=photo, o=opts: dusk_pan(p, **o)
    yield "no person", "dusk pan rocket, 50 frames (issue 18)", \
        lambda: dusk_pan(_rgb(data.rocket()), n=50, dark=0.35)
    yield "person", "dusk pan astronaut", lambda: dusk_pan(data.astronaut())
    yield "person", "pan astronaut", lambda: dusk_pan(data.astronaut(), dark=1.0, flare=False)
    for name in ("monalisa.png", "demo4.png", "dalle2.jpeg", "dalle8.jpeg", "multi1_source.png"):
        if (DEMO / name).is_file():
            yield "person", f"pan {name}", lambda n=name: dusk_pan(read_image(DEMO / n), n=20,
                                                                   dark=1.0, flare=False)
    from kinemate.synth import generate_clip
    from kinemate.synth.motions import MOTIONS

    for k, motion in enumerate(sorted(MOTIONS)):
        yield "person", f"synth {motion}", lambda m=motion, s=100 + k: generate_clip(
            s, 24, (256, 256), motion=m, skeleton=False, densepose=False).frames
    yield "person", "dance.mp4 (bundled)", REPO / "kinemate" / "assets" / "examples" / "dance.mp4"
    for name in ("running.mp4", "running2.mp4", "dancing2.mp4", "demo4_densepose.mp4",
                 "multi_dancing.mp4"):
        if (DEMO / name).is_file():
            yield "person (DensePose render)", name, DEMO / name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a third of the clips")
    args = parser.parse_args()
    from kinemate.io import write_video
    from kinemate.pose import MediaPipeBackend, extract_pose
    from kinemate.pose.temporal import keep_plausible_bodies

    backend = MediaPipeBackend(max_people=2, video=True)
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (group, name, source) in enumerate(clips(args.quick)):
            if args.quick and i % 3:
                continue
            if not isinstance(source, Path):
                source = write_video(os.path.join(tmp, f"clip{i}.mp4"), source(), 25)
            raw = extract_pose(source, backend=backend, smooth=False, progress=False,
                               require_person=False, max_frames=50)
            _, report = keep_plausible_bodies(raw, faces=backend.face)  # as extract_pose does
            rows.append((group, name, len(raw), int(raw.present(0.25).sum()), report))
            print(f"{group:26s} {name:40s} {len(raw):3d} frames: before {rows[-1][3]:3d}, "
                  f"after {report['kept']:3d}", flush=True)
    backend.close()
    print(f"\n{time.perf_counter() - start:.0f} s")
    for group in ("no person", "person", "person (DensePose render)"):
        sel = [r for r in rows if r[0] == group]
        if not sel:
            continue
        frames = sum(r[2] for r in sel)
        before = sum(r[3] for r in sel)
        after = sum(r[4]["kept"] for r in sel)
        clips_before = sum(r[3] > 0 for r in sel)
        clips_after = sum(r[4]["kept"] > 0 for r in sel)
        print(f"{group}: {len(sel)} clips, {frames} frames; a person in {before} frames "
              f"({clips_before} clips) before, {after} frames ({clips_after} clips) after")


if __name__ == "__main__":
    main()
