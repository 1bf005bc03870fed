"""Animate Anyone: peak memory of the sampling loop versus video length (tiny golden model, CPU).

The tiny golden weights in the Moore-AnimateAnyone release layout (``$KINEMATE_AA_GOLDEN_DIR``
or ../shared/reference/animate-anyone/golden), loaded by ``load_pipeline`` as a user's release
folder is (CLIP included), with the model's own windows (24 frames overlapping by 4, closed
loop). Each frame count runs in a fresh process; reported: the resident-set size after loading
and one warm-up run (baseline), the peak RSS while sampling + decoding (sampled every 2 ms) and
the growth over the baseline. Control frames come from a lazy sequence (made when a window asks
for them) and decoded frames are dropped as they stream out, so only what the engine itself
holds is measured: pose-guider features per frame while windows need them, the latents, the
accumulators, the reference bank.

    .venv/bin/python benchmarks/bench_aa_memory.py                 # 24, 96, 384 frames
    .venv/bin/python benchmarks/bench_aa_memory.py --frames 24 96 --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine_memory import LazyControls  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("KINEMATE_AA_GOLDEN_DIR",
                             REPO.parent / "shared/reference/animate-anyone/golden"))


def child(frames: int, steps: int, width: int, height: int) -> dict:
    import numpy as np
    import psutil
    import torch

    from kinemate.pipeline import load_pipeline

    torch.set_num_threads(1)
    proc = psutil.Process()
    pipe = load_pipeline(GOLDEN / "weights")
    assert pipe.family == "animate-anyone", pipe.family
    ref = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    opts = dict(steps=steps, progress=False)
    for _ in pipe.stream(ref, LazyControls(24, height, width), **opts):  # warm-up
        pass
    baseline = proc.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    count = 0
    for _frame in pipe.stream(ref, LazyControls(frames, height, width), **opts):
        count += 1
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    assert count == frames
    o = pipe.resolve(steps=steps)
    return {"frames": frames, "baseline_rss_mb": baseline / 2**20, "peak_rss_mb": peak[0] / 2**20,
            "growth_mb": (peak[0] - baseline) / 2**20, "seconds": seconds,
            "windows": f"{o.context_frames}/{o.context_overlap}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[24, 96, 384])
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--size", default="128x208", help="WxH (default 128x208, the golden size)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from kinemate.io.framing import parse_size

    w, h = parse_size(args.size)
    if args.child:
        print(json.dumps(child(args.frames[0], args.steps, w, h)))
        return
    rows = []
    for n in args.frames:
        out = subprocess.run([sys.executable, __file__, "--child", "--frames", str(n), "--steps",
                              str(args.steps), "--size", args.size],
                             capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{n} frames failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['frames']:4d} frames: baseline {r['baseline_rss_mb']:7.1f} MB  peak "
              f"{r['peak_rss_mb']:7.1f} MB  growth {r['growth_mb']:6.1f} MB  ({r['seconds']:.1f} s, "
              f"windows {r['windows']}, {args.steps} step(s), {args.size})", flush=True)
    first = rows[0]["peak_rss_mb"]
    print("peak relative to the first:", ", ".join(f"{r['frames']}: {r['peak_rss_mb'] / first:.3f}"
                                                   for r in rows))


if __name__ == "__main__":
    main()
