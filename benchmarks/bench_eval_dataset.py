"""Evaluate a kinemate pipeline on held-out synthetic clips, end to end (the dataset runner).

    .venv/bin/python benchmarks/bench_eval_dataset.py [--clips 4] [--frames 16] [--size 128]
        [--weights DIR] [--steps 4] [--out /tmp/kinemate-eval-bench] [--metric-weights W]

Writes a dataset of kinemate.synth evaluation clips (seeds >= 1,000,000: never seen in
training) as DATA/<clip>/{reference.png, driving.mp4, ground_truth.mp4} — the driving video is
the ground truth itself, as in the TikTok protocol — then runs ``kinemate eval dataset`` with
the given pipeline (default: the bundled model) and prints the summary and the report path.
``--baseline`` evaluates "copy the reference photo into every frame" on the same data instead;
then ``kinemate eval compare OUT/report OUT/report_copyref -o OUT/compare``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kinemate.cli import main
from kinemate.io import write_image, write_video
from kinemate.synth import generate_clip


COPY_REFERENCE = """
import sys
import numpy as np
from kinemate.io import fit_image, probe_video, read_image, write_video
info = probe_video(sys.argv[2])
ref = fit_image(read_image(sys.argv[1]), (info.width, info.height))
write_video(sys.argv[3], np.repeat(ref[None], info.num_frames, 0), info.fps)
"""


def make_dataset(root: Path, clips: int, frames: int, size: int) -> Path:
    data = root / "data"
    for i in range(clips):
        d = data / f"clip{i:03d}"
        if (d / "ground_truth.mp4").is_file():
            continue
        d.mkdir(parents=True, exist_ok=True)
        c = generate_clip(1_000_000 + i, num_frames=frames, size=(size, size), skeleton=False, densepose=False)
        write_image(d / "reference.png", c.frames[0])
        write_video(d / "driving.mp4", c.frames, c.fps)
        write_video(d / "ground_truth.mp4", c.frames, c.fps)
    return data


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", default="/tmp/kinemate-eval-bench")
    ap.add_argument("--metric-weights", default=None)
    ap.add_argument("--baseline", action="store_true",
                    help="evaluate the 'copy the reference photo into every frame' baseline instead (report_copyref/)")
    a = ap.parse_args()
    root = Path(a.out)
    data = make_dataset(root, a.clips, a.frames, a.size)
    if a.baseline:
        script = root / "copy_reference.py"
        script.write_text(COPY_REFERENCE)
        argv = ["eval", "dataset", str(data), "-o", str(root / "report_copyref"), "--size", str(a.size),
                "--clip-len", "8", "--regenerate", "--command", f"{sys.executable} {script} {{reference}} {{driving}} {{output}}"]
    else:
        argv = ["eval", "dataset", str(data), "-o", str(root / "report"), "--size", str(a.size),
                "--steps", str(a.steps), "--clip-len", "8", "--regenerate"]
    if a.weights and not a.baseline:
        argv += ["--weights", a.weights]
    if a.metric_weights:
        argv += ["--metric-weights", a.metric_weights]
    t0 = time.time()
    rc = main(argv)
    print(f"eval dataset: exit {rc} in {time.time() - t0:.1f} s; report {Path(argv[argv.index('-o') + 1]) / 'report.md'}",
          file=sys.stderr)
    sys.exit(rc)
