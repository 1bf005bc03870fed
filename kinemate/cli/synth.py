"""``kinemate synth``: write a synthetic dataset (procedural people and motions)."""

from __future__ import annotations

import argparse

from kinemate.errors import UsageError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic training/eval dataset of procedural people",
        description=(
            "Generate N clips of procedural people performing motions, with exact ground "
            "truth (frames, pose.json, DensePose maps and UV fields, masks), as a dataset folder in the "
            "kinemate format (docs/dataset-format.md). Seeds below 1000000 are training "
            "seeds; seeds from 1000000 on are held out for evaluation."
        ),
    )
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="dataset folder to write")
    p.add_argument("--clips", type=int, default=16, metavar="N", help="number of clips (16)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the first clip; clip i uses seed S+i (0)")
    p.add_argument("--frames", type=int, default=16, metavar="F", help="frames per clip (16)")
    p.add_argument("--size", default="128x128", metavar="WxH", help="frame size (128x128)")
    p.add_argument("--fps", type=float, default=15.0, help="frame rate (15)")
    p.add_argument("--motion", action="append", metavar="NAME",
                   help="only these motions (repeatable; default: all)")
    p.add_argument("--no-densepose", action="store_true", help="skip DensePose maps")
    p.add_argument("--no-uv", action="store_true",
                   help="skip the exact DensePose UV fields (uv/frame_<n>_densepose.npy, the "
                        "pose input of dreampose)")
    p.add_argument("--preview", metavar="PATH",
                   help="also write a preview of the first clips (frames over DensePose maps) "
                        "as .gif, .mp4 or an image folder")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kinemate.synth import EVAL_SEEDS, MOTION_NAMES, TRAIN_SEEDS, generate_clip
    from kinemate.synth.clip import GENERATOR_VERSION
    from kinemate.synth.clip import parse_clip_size
    from kinemate.synth.dataset import write_dataset

    if args.clips < 1:
        raise UsageError(f"--clips must be at least 1, got {args.clips}")
    if args.frames < 1:
        raise UsageError(f"--frames must be at least 1, got {args.frames}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if not args.fps > 0:
        raise UsageError(f"--fps must be positive, got {args.fps}")
    size = parse_clip_size(args.size)
    first, last = args.seed, args.seed + args.clips - 1
    if first in TRAIN_SEEDS and last not in TRAIN_SEEDS:
        raise UsageError(f"seeds {first}..{last} cross from the training range into the held-out "
                         f"range (>= {EVAL_SEEDS.start}); lower --seed or --clips")
    split = "train" if first in TRAIN_SEEDS else "eval"
    for m in args.motion or ():
        if m not in MOTION_NAMES:
            raise UsageError(f"unknown motion {m!r}; choose from: {', '.join(MOTION_NAMES)}")
    motions = args.motion

    shown: list = []

    def clips():
        for i in range(args.clips):
            seed = args.seed + i
            motion = motions[i % len(motions)] if motions else None
            clip = generate_clip(seed, args.frames, size, motion, fps=args.fps, skeleton=False,
                                 densepose=not args.no_densepose)
            if args.preview and len(shown) < PREVIEW_CLIPS:
                shown.append(clip)
            yield clip

    info = {
        "name": f"kinemate-synth-{split}",
        "source": "synthetic",
        "split": split,
        "generator": {"package": "kinemate.synth", "version": GENERATOR_VERSION,
                      "first_seed": first, "clips": args.clips,
                      "frames": args.frames, "size": list(size), "fps": args.fps,
                      "motions": motions or list(MOTION_NAMES)},
    }
    out = write_dataset(args.output, clips(), total=args.clips, info=info, force=args.force,
                        densepose=not args.no_densepose, uv=not args.no_uv)
    print(f"wrote {args.clips} {split} clips ({args.frames} frames, {size[0]}x{size[1]}) to {out}")
    if args.preview:
        from kinemate.io import write_video

        path = write_video(args.preview, preview_frames(shown), args.fps)
        print(f"preview: {path}")
    return 0


PREVIEW_CLIPS = 6


def preview_frames(clips: list) -> list:
    """Tile clips side by side: frames on top, DensePose maps (if any) below."""
    import numpy as np

    frames = []
    for f in range(min(c.num_frames for c in clips)):
        top = np.concatenate([c.frames[f] for c in clips], axis=1)
        rows = [top]
        if all(c.densepose is not None for c in clips):
            rows.append(np.concatenate([c.densepose[f] for c in clips], axis=1))
        frames.append(np.concatenate(rows, axis=0))
    return frames
