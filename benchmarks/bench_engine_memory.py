"""Peak memory of the sampling loop versus video length (tiny golden model, CPU).

Runs each frame count in a fresh process and reports the resident-set size after loading and
warming up (baseline), the peak RSS while sampling + decoding (sampled every 2 ms), and the
growth over the baseline. Control frames come from a lazy sequence and decoded frames are
dropped as they stream out, so only what the engine itself holds is measured.

    .venv/bin/python benchmarks/bench_engine_memory.py            # 16, 64, 256 frames
    .venv/bin/python benchmarks/bench_engine_memory.py --frames 16 64 --steps 1
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

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("KINEMATE_GOLDEN_DIR",
                             REPO.parent / "shared/reference/magicanimate/golden"))


class LazyControls:
    """N synthetic control frames, made on demand (nothing held per frame)."""

    def __init__(self, n: int, h: int, w: int):
        self.n, self.h, self.w = n, h, w

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import numpy as np

        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = np.random.default_rng(i)
        return rng.integers(0, 256, (self.h, self.w, 3), dtype=np.uint8)


def child(frames: int, steps: int, width: int, height: int) -> dict:
    import numpy as np
    import psutil
    import torch
    from safetensors.torch import load_file

    from kinemate.pipeline import load_pipeline

    torch.set_num_threads(1)
    proc = psutil.Process()
    pipe = load_pipeline(GOLDEN / "weights")
    inputs = load_file(str(GOLDEN / "inputs.safetensors"))
    text = dict(text_embeds_uncond=inputs["text_embeds_uncond"], text_embeds_cond=inputs["text_embeds_cond"])
    ref = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    opts = dict(steps=steps, context_frames=16, context_overlap=4, progress=False, **text)
    for _ in pipe.stream(ref, LazyControls(16, height, width), **opts):  # warm-up: allocator, kernels
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
    return {"frames": frames, "baseline_rss_mb": baseline / 2**20, "peak_rss_mb": peak[0] / 2**20,
            "growth_mb": (peak[0] - baseline) / 2**20, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--size", default="128x256", help="WxH (default 128x256, the golden size)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    if args.child:
        print(json.dumps(child(args.frames[0], args.steps, w, h)))
        return
    rows = []
    for n in args.frames:
        out = subprocess.run([sys.executable, __file__, "--child", "--frames", str(n), "--steps",
                              str(args.steps), "--size", args.size],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['frames']:4d} frames: baseline {r['baseline_rss_mb']:7.1f} MB  peak "
              f"{r['peak_rss_mb']:7.1f} MB  growth {r['growth_mb']:6.1f} MB  ({r['seconds']:.1f} s)",
              flush=True)
    first = rows[0]["peak_rss_mb"]
    print("peak relative to the first:", ", ".join(f"{r['frames']}: {r['peak_rss_mb'] / first:.3f}"
                                                   for r in rows))


if __name__ == "__main__":
    main()
