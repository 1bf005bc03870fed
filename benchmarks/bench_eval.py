"""Evaluation benchmarks: the uint8-overflow PSNR trap on realistic errors, and metric speed.

    .venv/bin/python benchmarks/bench_eval.py            # both parts
    .venv/bin/python benchmarks/bench_eval.py --trap     # only the PSNR trap table

Part 1 builds "generated" videos with the kinds of error an animation model makes — the right
person and scene, but limbs off by a few frames of motion, a blur, a colour cast — from
kinemate.synth held-out clips, and prints the float PSNR next to the value the widely copied
script reports (MSE of uint8 differences, which wrap modulo 256). Part 2 times each metric per
frame at 256x256 on CPU (full-width networks with random weights: the cost is the same).
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from kinemate.eval import metrics as M
from kinemate.synth import generate_clip


def degraded(seed: int, n: int = 24, size: int = 256, lag: int = 3, blur: float = 2.0, cast=(12, -6, 8)):
    """(ground truth, a plausible 'generated' version) for one synthetic clip."""
    clip = generate_clip(seed, num_frames=n + lag, size=(size, size), skeleton=False, densepose=False)
    gt = clip.frames[lag:]
    gen = clip.frames[:n].astype(np.float64)  # the motion lags `lag` frames behind
    gen = np.stack([cv2.GaussianBlur(f, (0, 0), blur) for f in gen])
    gen = np.clip(gen + np.array(cast, np.float64), 0, 255).astype(np.uint8)
    return gt, gen


def trap_table(seeds=range(1_000_000, 1_000_006)):
    print("PSNR trap on synthetic clips (256x256, 24 frames; 'generated' = motion lagging by 'lag' frames + blur + colour cast)")
    print(f"{'clip':>8} {'lag':>3} {'PSNR float':>11} {'PSNR uint8 script':>18} {'inflation':>10}")
    rows = []
    for seed in seeds:
        for lag in (1, 3, 6):
            gt, gen = degraded(seed, lag=lag)
            good = float(np.mean(M.psnr(gen, gt)))
            bad = float(np.mean(M.psnr_uint8_overflow(gen, gt)))
            rows.append((good, bad))
            print(f"{seed - 1_000_000:>8} {lag:>3} {good:11.2f} {bad:18.2f} {bad - good:+10.2f}")
    g, b = np.array(rows).T
    print(f"{'mean':>12} {g.mean():11.2f} {b.mean():18.2f} {b.mean() - g.mean():+10.2f}")
    # a worst case: two unrelated images
    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(2))
    print(f"unrelated random images: float {M.psnr(x, y):.2f} dB, uint8 script {M.psnr_uint8_overflow(x, y):.2f} dB")


def timing():
    from kinemate.eval.flicker import warping_error
    from kinemate.eval.identity import identity_drift
    from kinemate.eval.inception import FIDInceptionV3
    from kinemate.eval.fid import image_features
    from kinemate.eval.lpips import LPIPS, lpips_frames

    gt, gen = degraded(1_000_000, n=16)
    n = len(gt)

    def t(name, fn):
        fn()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        print(f"{name:<34} {1000 * dt / n:8.1f} ms/frame")

    print(f"\nmetric cost on CPU, 256x256, {n} frames, torch threads={torch.get_num_threads()}")
    t("PSNR + L1", lambda: (M.psnr(gen, gt), M.l1(gen, gt)))
    t("SSIM (Gaussian 11x11, float64)", lambda: M.ssim(gen, gt))
    t("flicker (DIS flow fw+bw, warp)", lambda: warping_error(gen))
    t("identity (HSV hist + HOG)", lambda: identity_drift(gen, gt[0]))
    with torch.no_grad():
        alex = LPIPS("alex")
        t("LPIPS alex (full width)", lambda: lpips_frames(alex, gen, gt))
        vgg = LPIPS("vgg")
        t("LPIPS vgg (full width)", lambda: lpips_frames(vgg, gen, gt))
        inc = FIDInceptionV3()
        t("FID InceptionV3 features (299px)", lambda: image_features(inc, gen))
    try:
        from kinemate.pose import extract_pose

        t("pose re-detection (MediaPipe)", lambda: extract_pose(gen, progress=False, require_person=False))
    except ImportError:
        print("pose: kinemate.pose not available")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--trap", action="store_true", help="only the PSNR trap table")
    a = ap.parse_args()
    trap_table()
    if not a.trap:
        timing()
