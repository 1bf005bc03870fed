"""kinemate-photo: quality on held-out synthetic clips, speed at 512x512, memory over length,
and what ``init="warp"`` does to kinemate-tiny.

Quality (``quality``): for each held-out clip (synthetic seeds >= 1,000,000, never trained
on) the first frame is the reference and the clip's exact pose track drives it; the result is
compared with the clip's real frames (kinemate.eval: PSNR, SSIM over frames 1.., warping error
with the ground truth's flow and with the result's own). Methods:

* ``photo``      — kinemate-photo as a user runs it: ``animate_file`` on the reference and the
  clip as a video (pose extracted by kinemate from the video, retargeted to the photo's
  person, the person cut out by MediaPipe's segmentation);
* ``photo_pose_gt`` — the renderer given the clip's exact poses (reference and driving, as
  kinemate-tiny is given the exact skeleton maps below) and cutting the person out itself
  (MediaPipe's segmentation);
* ``photo_gt``   — the same renderer given the clip's exact poses and person mask (what exact
  pose extraction and segmentation would give);
* ``copy_ref``   — the reference repeated;
* ``tiny``       — the bundled kinemate-tiny (its defaults: init reference, strength 0.9),
  driven by the same poses as skeleton maps;
* ``tiny_reference_S`` / ``tiny_warp_S`` — kinemate-tiny started from the noised reference
  / from the noised warped frames (``init="warp"``) at strength S (``--strengths``), with
  ``--tiny-steps`` steps (its own default, 1 step, starts every strength at the last
  timestep, where the start is almost pure noise).

kinemate-photo renders at the clip's size (``--size``, default 256); kinemate-tiny is a 64 px
model, so every method is also scored at 64x64 (frames area-downscaled) for the comparison.

Speed (``speed``): the astronaut (scikit-image) at 512x512 driven by the bundled dance
(retargeted), after pose extraction: the once-per-video preparation (pose of the photo,
segmentation, rig) and the frames per second of drawing, OpenCV limited to ``--threads``.
Memory (``memory``): peak RSS of ``animate_file`` with kinemate-photo for a pose file of N
frames (the dance tiled), each in a fresh process.

    PYTHONPATH=$PWD python benchmarks/bench_photo.py quality --clips 8 --json out/bench_photo.json
    PYTHONPATH=$PWD python benchmarks/bench_photo.py speed --threads 2
    PYTHONPATH=$PWD python benchmarks/bench_photo.py memory --frames 32 320
    PYTHONPATH=$PWD python benchmarks/bench_photo.py golden      # init warp, golden weights
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HELDOUT_START = 1_000_000
ROOT = Path(__file__).resolve().parents[1]


def metrics(result: np.ndarray, gt: np.ndarray) -> dict:
    from kinemate.eval import psnr, ssim, warping_error

    return {
        "psnr": float(np.mean(psnr(result[1:], gt[1:]))),
        "ssim": float(np.mean(ssim(result[1:], gt[1:]))),
        "warp_gt": warping_error(result, flow_from=gt).summary()["warp_mse"],
        "warp_self": warping_error(result).summary()["warp_mse"],
    }


def small(frames: np.ndarray, size: int = 64) -> np.ndarray:
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def scaled_track(track, k: float, size: int):
    out = track.copy()
    for arr in out.parts().values():
        arr[..., :2] = (arr[..., :2] + 0.5) * k - 0.5
    out.width = out.height = size
    return out


def through_animate_file(pipe, ref: np.ndarray, frames: np.ndarray, fps: float) -> np.ndarray:
    """What a user gets: ``animate_file`` on the photo and the clip as a video file (pose
    extracted by kinemate, retargeted to the photo's person), written as PNG frames."""
    import tempfile

    from kinemate.io import read_image, write_image, write_video
    from kinemate.pipeline import animate_file

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_image(tmp / "ref.png", ref)
        write_video(tmp / "clip.mp4", frames, fps)
        animate_file(tmp / "ref.png", tmp / "clip.mp4", tmp / "out", pipe=pipe, progress=False)
        return np.stack([read_image(p) for p in sorted((tmp / "out").glob("*.png"))])


def quality(args) -> dict:
    import torch

    from kinemate.models.photo import PhotoRenderer
    from kinemate.pipeline.loading import load_pipeline
    from kinemate.synth import generate_clip, render_skeleton_maps

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    photo = load_pipeline(model="kinemate-photo")
    tiny = load_pipeline(model="kinemate-tiny") if not args.no_tiny else None
    renderer = PhotoRenderer()
    names = ["photo", "photo_pose_gt", "photo_gt", "copy_ref"]
    if tiny is not None:
        names += ["tiny"] + [f"tiny_{init}_{s:g}" for s in args.strengths
                             for init in ("reference", "warp")]
    per = {res: {n: [] for n in names} for res in ("full", "64")}
    per["full"].pop("tiny", None)
    for name in names:
        if name.startswith("tiny"):
            per["full"].pop(name, None)
    gt_warp = {"full": [], "64": []}
    seconds = {n: [] for n in names}
    for i in range(args.clips):
        seed = args.first_seed + i
        clip = generate_clip(seed, num_frames=args.frames, size=(args.size, args.size),
                             skeleton=False, densepose=False)
        ref, gt = clip.frames[0], clip.frames
        track = clip.pose_track()
        out = {}
        t0 = time.time()
        out["photo"] = through_animate_file(photo, ref, gt, clip.fps)
        seconds["photo"].append(time.time() - t0)
        t0 = time.time()
        rig = renderer.start(ref, clip.pose[0], clip.mask[0].astype(np.float32))
        out["photo_gt"] = np.stack([renderer.frame(rig, p) for p in clip.pose])
        seconds["photo_gt"].append(time.time() - t0)
        t0 = time.time()
        rig = renderer.start(ref, clip.pose[0])  # MediaPipe cuts the person out
        out["photo_pose_gt"] = np.stack([renderer.frame(rig, p) for p in clip.pose])
        seconds["photo_pose_gt"].append(time.time() - t0)
        out["copy_ref"] = np.repeat(ref[None], len(gt), axis=0)
        for name, frames in out.items():
            per["full"][name].append(metrics(frames, gt))
        gt64 = small(gt)
        low = {name: small(frames) for name, frames in out.items()}
        if tiny is not None:
            k = 64 / args.size
            track64 = scaled_track(track, k, 64)
            controls = render_skeleton_maps(track64.body, (64, 64), hand_left=track64.hand_left,
                                            hand_right=track64.hand_right, face=track64.face)
            kw = {"progress": False, "seed": seed, "poses": track64,
                  "reference_pose": track64.subset([0])}
            t0 = time.time()
            low["tiny"] = tiny(gt64[0], controls, **kw)
            seconds["tiny"].append(time.time() - t0)
            for s in args.strengths:
                for init in ("reference", "warp"):
                    name = f"tiny_{init}_{s:g}"
                    t0 = time.time()
                    low[name] = tiny(gt64[0], controls, init=init, init_strength=s,
                                     steps=args.tiny_steps, **kw)
                    seconds[name].append(time.time() - t0)
        for name, frames in low.items():
            per["64"][name].append(metrics(frames, gt64))
        gt_warp["full"].append(metrics(gt, gt)["warp_self"])
        gt_warp["64"].append(metrics(gt64, gt64)["warp_self"])
        row = " | ".join(f"{n} {per['64'][n][-1]['psnr']:.2f}" for n in per["64"])
        print(f"clip {seed} ({clip.meta['motion']}), PSNR at 64 px: {row}", file=sys.stderr,
              flush=True)
        if i == 0 and args.strip:
            write_strip(args.strip, ref, track, out["photo"], gt)
    summary = {res: {n: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
                     for n, rows in table.items() if rows}
               for res, table in per.items()}
    for res in summary:
        summary[res]["ground_truth"] = {"warp_self": float(np.mean(gt_warp[res]))}
    result = {"clips": args.clips, "frames": args.frames, "size": args.size,
              "seeds": [args.first_seed, args.first_seed + args.clips - 1],
              "threads": args.threads, "seconds_per_clip": {n: float(np.mean(v))
                                                            for n, v in seconds.items() if v},
              "summary": summary, "per_clip": per}
    for res, table in summary.items():
        label = f"{args.size}x{args.size}" if res == "full" else "64x64"
        print(f"\nat {label}:")
        print("| method | PSNR (dB) ↑ | SSIM ↑ | warp error, GT flow ↓ | warp error, own flow ↓ |")
        print("|---|---|---|---|---|")
        for name, s in table.items():
            if name == "ground_truth":
                continue
            print(f"| {name} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['warp_gt']:.5f} | "
                  f"{s['warp_self']:.5f} |")
        print(f"| ground truth | – | – | – | {table['ground_truth']['warp_self']:.5f} |")
    return result


def write_strip(path: str, ref, track, result, gt, count: int = 4) -> None:
    from kinemate.io import side_by_side
    from kinemate.synth import render_skeleton_maps

    idx = np.linspace(1, len(result) - 1, count).round().astype(int)
    maps = render_skeleton_maps(track.body[idx], (ref.shape[1], ref.shape[0]))
    rows = [side_by_side([ref, maps[j], result[i], gt[i]]) for j, i in enumerate(idx)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(path, cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])


def speed(args) -> dict:
    import skimage.data

    from kinemate.cli.animate import example_inputs
    from kinemate.pipeline.loading import load_pipeline
    from kinemate.pose import control_frames_from_driving, framed_track

    cv2.setNumThreads(args.threads)
    photo = load_pipeline(model="kinemate-photo")
    reference = skimage.data.astronaut()
    size = (512, 512)
    tracks: dict = {}
    frames, _fps, _n = control_frames_from_driving(example_inputs()[1], reference, size,
                                                   track_out=tracks, progress=False)
    poses = framed_track(tracks["controls"], frames.framing, size)
    ref_pose = framed_track(tracks["reference"], frames.framing, size)
    framed = frames.framing.apply(reference)
    t0 = time.time()
    rig = photo.start(framed, ref_pose)
    prepare = time.time() - t0
    body = np.concatenate([poses.body] * args.repeat)
    t0 = time.time()
    for b in body:
        photo.renderer.frame(rig, b)
    draw = time.time() - t0
    result = {"size": list(size), "threads": args.threads, "frames": len(body),
              "prepare_s": prepare, "frames_per_s": len(body) / draw,
              "ms_per_frame": 1000 * draw / len(body)}
    print(json.dumps(result, indent=2))
    return result


def memory(args) -> dict:
    results = {}
    for n in args.frames:
        out = subprocess.run([sys.executable, __file__, "_memory_one", str(n)], check=True,
                             capture_output=True, text=True, cwd=ROOT)
        results[n] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{n} frames: peak RSS {results[n]['peak_rss_mib']:.0f} MiB, "
              f"{results[n]['seconds']:.1f} s", file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))
    return results


def _memory_one(n: int) -> None:
    import tempfile

    import skimage.data

    from kinemate.cli.animate import example_inputs
    from kinemate.io import write_image
    from kinemate.pipeline import animate_file, load_pipeline
    from kinemate.pose import extract_pose

    cv2.setNumThreads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        track = extract_pose(example_inputs()[1], progress=False)
        reps = -(-n // len(track))
        long = track.subset(list(range(len(track))) * reps).subset(slice(0, n))
        long.save(tmp / "long.pose.json")
        write_image(tmp / "astronaut.png", skimage.data.astronaut())
        t0 = time.time()
        animate_file(tmp / "astronaut.png", tmp / "long.pose.json", tmp / "out.mp4",
                     pipe=load_pipeline(model="kinemate-photo"), progress=False, fps=25)
        seconds = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": n, "peak_rss_mib": peak, "seconds": seconds}))


def golden(args) -> dict:
    """``init`` reference vs warp on the golden MagicAnimate weights (tiny random networks in
    the official layout): with untrained networks the result says where the start leads,
    not how good a trained model gets."""
    import torch
    from safetensors.torch import load_file

    from kinemate.eval import psnr
    from kinemate.models.photo import PhotoRenderer
    from kinemate.pipeline.loading import load_pipeline
    from kinemate.synth import generate_clip

    torch.set_num_threads(args.threads)
    root = Path(args.golden)
    pipe = load_pipeline(root / "weights")
    inputs = load_file(str(root / "inputs.safetensors"))
    embeds = {"text_embeds_uncond": inputs["text_embeds_uncond"],
              "text_embeds_cond": inputs["text_embeds_cond"]}
    w, h = pipe.default_size if args.size is None else (args.size, args.size)
    rows = {}
    for i in range(args.clips):
        seed = args.first_seed + i
        clip = generate_clip(seed, num_frames=args.frames, size=(w, h), skeleton=False)
        track = clip.pose_track()
        rig = PhotoRenderer().start(clip.frames[0], clip.pose[0], clip.mask[0].astype(np.float32))
        warped = np.stack([rig.render(p) for p in clip.pose])
        for init in ("reference", "warp"):
            out = pipe(clip.frames[0], clip.densepose, init=init, init_strength=args.strength,
                       steps=args.steps, context_frames=min(8, args.frames), context_overlap=2,
                       poses=track, reference_pose=track.subset([0]), progress=False, **embeds)
            r = rows.setdefault(init, {"psnr_gt": [], "psnr_warped": [], "psnr_reference": []})
            r["psnr_gt"].append(float(np.mean(psnr(out[1:], clip.frames[1:]))))
            r["psnr_warped"].append(float(np.mean(psnr(out[1:], warped[1:]))))
            ref = np.repeat(clip.frames[:1], len(out) - 1, 0)
            r["psnr_reference"].append(float(np.mean(psnr(out[1:], ref))))
    summary = {init: {k: float(np.mean(v)) for k, v in r.items()} for init, r in rows.items()}
    result = {"weights": str(root / "weights"), "size": [w, h], "steps": args.steps,
              "strength": args.strength, "clips": args.clips, "frames": args.frames,
              "summary": summary}
    print(json.dumps(result, indent=2))
    return result


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "_memory_one":
        _memory_one(int(sys.argv[2]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--clips", type=int, default=8)
    q.add_argument("--frames", type=int, default=16)
    q.add_argument("--size", type=int, default=256)
    q.add_argument("--first-seed", type=int, default=HELDOUT_START + 100)
    q.add_argument("--strengths", type=float, nargs="*", default=[0.75, 0.5, 0.25])
    q.add_argument("--tiny-steps", type=int, default=4,
                   help="sampler steps of the init comparisons (kinemate-tiny's own: 1, where "
                        "every strength starts at the same, last timestep)")
    q.add_argument("--no-tiny", action="store_true")
    q.add_argument("--threads", type=int, default=1)
    q.add_argument("--strip", default=None, help="write a side-by-side PNG of the first clip")
    q.add_argument("--json", default=None)
    s = sub.add_parser("speed")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--repeat", type=int, default=4, help="times the 32 dance poses are drawn")
    s.add_argument("--json", default=None)
    g = sub.add_parser("golden")
    g.add_argument("--golden", default=str(ROOT.parent / "shared" / "reference" / "magicanimate"
                                           / "golden"))
    g.add_argument("--clips", type=int, default=2)
    g.add_argument("--frames", type=int, default=8)
    g.add_argument("--size", type=int, default=None)
    g.add_argument("--steps", type=int, default=4)
    g.add_argument("--strength", type=float, default=0.5)
    g.add_argument("--first-seed", type=int, default=HELDOUT_START + 100)
    g.add_argument("--threads", type=int, default=1)
    g.add_argument("--json", default=None)
    m = sub.add_parser("memory")
    m.add_argument("--frames", type=int, nargs="+", default=[32, 320])
    m.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if getattr(args, "first_seed", HELDOUT_START) < HELDOUT_START:
        ap.error(f"--first-seed must be a held-out seed (>= {HELDOUT_START})")
    result = {"quality": quality, "speed": speed, "memory": memory,
              "golden": golden}[args.what](args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
