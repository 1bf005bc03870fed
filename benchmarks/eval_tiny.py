"""Quality of the bundled kinemate-tiny model on held-out synthetic people and motions.

For each held-out clip (synthetic seeds >= 1,000,000, never used in training) the first frame is
the reference and the clip's skeleton maps drive the animation; the result is compared with the
clip's real frames (ground truth). Three methods:

* ``model``       — the shipped model (temporal modules on);
* ``no_temporal`` — the same weights with the temporal modules removed (ablation (b));
* ``copy_ref``    — the reference frame repeated (baseline (a));
* ``model_from_noise`` (``--also-from-noise``) — the model started from pure noise, for models
  whose default sampling starts from the noised reference (``init_strength`` < 1).

Metrics (kinemate.eval): PSNR (float MSE) and SSIM per frame against the ground truth, and the
optical-flow warping error (Lai et al.) of the result, with the flow taken from the ground truth
(``warp_gt``: flicker relative to the true motion) and from the result itself (``warp_self``).
Frame 0 (the reference itself) is excluded from PSNR/SSIM.

    .venv/bin/python benchmarks/eval_tiny.py --clips 8 --frames 16 --json out/eval_tiny.json \
        --gif docs/images/tiny_side_by_side.gif
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HELDOUT_START = 1_000_000


def no_temporal(pipe):
    """A copy of ``pipe`` whose video UNet has no temporal modules (same spatial weights)."""
    import copy

    from kinemate.models import VideoUNet

    cfg = {k: v for k, v in dict(pipe.unet.config).items() if not k.startswith("_")}
    cfg["use_motion_module"] = False
    unet = VideoUNet.from_config(cfg)
    sd = {k: v for k, v in pipe.unet.state_dict().items() if ".motion_modules." not in k}
    unet.load_state_dict(sd)
    other = copy.copy(pipe)
    other.denoiser = copy.copy(pipe.denoiser)
    other.denoiser.unet = unet.to(pipe.device, pipe.dtype).eval()
    return other


def metrics(result: np.ndarray, gt: np.ndarray) -> dict:
    from kinemate.eval import psnr, ssim, warping_error

    return {
        "psnr": float(np.mean(psnr(result[1:], gt[1:]))),
        "ssim": float(np.mean(ssim(result[1:], gt[1:]))),
        "warp_gt": warping_error(result, flow_from=gt).summary()["warp_mse"],
        "warp_self": warping_error(result).summary()["warp_mse"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=None, help="model folder (default: the bundled kinemate-tiny)")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--first-seed", type=int, default=HELDOUT_START + 100)
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    ap.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    ap.add_argument("--init-strength", type=float, default=None,
                    help="sampler start (default: the model's; 1 = pure noise)")
    ap.add_argument("--also-from-noise", action="store_true",
                    help="also report the model started from pure noise (init strength 1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda)")
    ap.add_argument("--dtype", default="float32", help="compute dtype (default float32)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--gif", default=None, help="write a side-by-side GIF of the first clip here")
    args = ap.parse_args(argv)
    if args.first_seed < HELDOUT_START:
        ap.error(f"--first-seed must be a held-out seed (>= {HELDOUT_START})")
    torch.set_num_threads(args.threads)

    from kinemate.pipeline.loading import load_pipeline
    from kinemate.synth import generate_clip

    pipe = load_pipeline(args.weights, model=None if args.weights else "kinemate-tiny",
                         device=args.device, dtype=args.dtype)
    ablation = no_temporal(pipe)
    size = tuple(pipe.default_size)
    kw = {"progress": False}
    if args.steps:
        kw["steps"] = args.steps
    if args.guidance is not None:
        kw["guidance"] = args.guidance
    if args.init_strength is not None:
        kw["init_strength"] = args.init_strength
    per = {"model": [], "no_temporal": [], "copy_ref": [], "ground_truth": []}
    if args.also_from_noise:
        per["model_from_noise"] = []
    t_model = []
    gif_frames = None
    for i in range(args.clips):
        seed = args.first_seed + i
        clip = generate_clip(seed, num_frames=args.frames, size=size,
                             densepose=pipe.control_kind == "densepose",
                             skeleton=pipe.control_kind != "densepose")
        controls = clip.skeleton if pipe.control_kind != "densepose" else clip.densepose
        ref, gt = clip.frames[0], clip.frames
        t0 = time.time()
        out = pipe(ref, controls, seed=seed, **kw)
        t_model.append(time.time() - t0)
        out_nt = ablation(ref, controls, seed=seed, **kw)
        if args.also_from_noise:
            per["model_from_noise"].append(metrics(pipe(ref, controls, seed=seed,
                                                        **{**kw, "init_strength": 1.0}), gt))
        copy = np.repeat(ref[None], len(gt), axis=0)
        per["model"].append(metrics(out, gt))
        per["no_temporal"].append(metrics(out_nt, gt))
        per["copy_ref"].append(metrics(copy, gt))
        per["ground_truth"].append({"warp_self": metrics(gt, gt)["warp_self"]})
        print(f"clip {seed} ({clip.meta['motion']}): model psnr {per['model'][-1]['psnr']:.2f} "
              f"ssim {per['model'][-1]['ssim']:.3f} | copy psnr {per['copy_ref'][-1]['psnr']:.2f} "
              f"| {t_model[-1]:.1f} s", file=sys.stderr, flush=True)
        if i == 0:
            gif_frames = (ref, controls, out, gt)

    summary = {name: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
               for name, rows in per.items()}
    result = {
        "model": pipe.name,
        "weights": str(args.weights or "bundled kinemate-tiny"),
        "clips": args.clips, "frames": args.frames, "size": list(size),
        "seeds": [args.first_seed, args.first_seed + args.clips - 1],
        "sampling": {"steps": kw.get("steps", pipe.options.steps),
                     "guidance": kw.get("guidance", pipe.options.guidance),
                     "context_frames": pipe.options.context_frames,
                     "context_overlap": pipe.options.context_overlap,
                     "init_strength": kw.get("init_strength", pipe.options.init_strength)},
        "seconds_per_clip_model": float(np.mean(t_model)),
        "torch_threads": args.threads,
        "device": str(pipe.device), "dtype": str(pipe.dtype).split(".")[-1],
        "summary": summary,
        "per_clip": per,
    }
    print("| method | PSNR (dB) ↑ | SSIM ↑ | warp error, GT flow ↓ | warp error, own flow ↓ |")
    print("|---|---|---|---|---|")
    for name in ("model", "no_temporal", "model_from_noise", "copy_ref"):
        if name not in summary:
            continue
        s = summary[name]
        print(f"| {name} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['warp_gt']:.5f} | {s['warp_self']:.5f} |")
    print(f"| ground truth | – | – | – | {summary['ground_truth']['warp_self']:.5f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.gif and gif_frames is not None:
        from kinemate.io import side_by_side, write_video

        ref, controls, out, gt = gif_frames
        scale = 3
        panels = [side_by_side([ref, c, o, g], height=size[1] * scale)
                  for c, o, g in zip(controls, out, gt)]
        Path(args.gif).parent.mkdir(parents=True, exist_ok=True)
        write_video(args.gif, np.stack(panels), fps=8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
