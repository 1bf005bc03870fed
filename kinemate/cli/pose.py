"""``kinemate pose`` — extract a pose track from a video/photo (or convert a pose file).

    kinemate pose dance.mp4 -o dance.pose.json --preview overlay.mp4
    kinemate pose dance.mp4 -o retargeted.pose.json --reference photo.png --preview on_photo.mp4
    kinemate pose dance.pose.json -o openpose_frames/ --format openpose
    kinemate pose dance.mp4 -o dance.pose.json --reference photo.png --controls controls.mp4 --size 512x768
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kinemate.errors import UsageError

log = logging.getLogger("kinemate.pose")


def _size(text: str) -> tuple[int, int]:
    """``--size WxH`` through the one size parser (any positive size: control maps and
    previews are not latents)."""
    from kinemate.io.framing import parse_size

    try:
        size = parse_size(text, multiple=1, min_side=1)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.spelled(lambda name, value: f"--{name}")) from None
    if size is None:
        raise argparse.ArgumentTypeError("--size must look like 512x768")
    return size


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pose",
        help="extract a pose track from a video or photo (MediaPipe, offline)",
        description=(
            "Extract the pose of one person from a video, a folder of frames or a photo, clean it "
            "up (gap filling, One-Euro smoothing) and save it as kinemate pose JSON or OpenPose "
            "JSON. With --reference, the motion is retargeted to the person in that photo. An "
            "input that is already a pose JSON (kinemate or OpenPose) is converted."
        ),
    )
    p.add_argument("input", help="video file, folder of frames, photo, or pose JSON file/folder")
    p.add_argument("-o", "--output", required=True,
                   help="pose file to write (.json), or a folder for per-frame OpenPose files")  # fmt: skip
    p.add_argument("--format", choices=("kinemate", "openpose", "openpose-body25"), default=None,
                   help="output format (default: kinemate for a .json file, openpose for a folder)")  # fmt: skip
    p.add_argument("--preview", metavar="PATH",
                   help="also write the skeleton drawn over the input video (or over the reference "
                        "photo with --reference): .mp4/.gif, a folder, or an image")  # fmt: skip
    p.add_argument("--reference", metavar="PHOTO", help="retarget the motion to the person in this photo")
    p.add_argument("--no-retarget", action="store_true",
                   help="with --reference: keep the driving pose's own proportions and position")  # fmt: skip
    p.add_argument("--controls", metavar="PATH", help="also write the OpenPose control maps (.mp4, .gif or folder)")
    p.add_argument("--size", type=_size, metavar="WxH",
                   help="size of the control maps (default: the reference photo's or the video's size)")  # fmt: skip
    p.add_argument("--fit", choices=("crop", "letterbox"), default="crop",
                   help="aspect-preserving fit of the control maps (default: crop)")  # fmt: skip
    p.add_argument("--person", default="largest",
                   help="which person to follow when several are seen (in the input and in --reference): "
                        "largest, central, or N (N-th from the left)")  # fmt: skip
    p.add_argument("--max-people", type=int, default=2,
                   help="people to look for per frame (MediaPipe finds one per pass; default 2)")  # fmt: skip
    p.add_argument("--backend", default="mediapipe", help="pose estimator: mediapipe (bundled) or dwpose")
    p.add_argument("--pose-model-dir", metavar="DIR",
                   help="folder of the user-supplied model files of a non-bundled backend (dwpose)")  # fmt: skip
    p.add_argument("--workers", type=int, default=1,
                   help="extract with N processes in parallel (one chunk of the video each; default 1)")  # fmt: skip
    p.add_argument("--body-only", action="store_true", help="no hands and face (faster extraction)")
    p.add_argument("--no-smooth", action="store_true", help="no One-Euro smoothing")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of a folder of frames or a pose file (default 25 for a folder "
                        "and OpenPose JSON); a video file keeps its own")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-watermark", action="store_true",
                   help="do not embed the invisible watermark in --preview and --controls (their "
                        "C2PA manifest records this)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kinemate import pose as kp
    from kinemate.pose.people import parse_select

    select = parse_select(args.person)
    if args.max_people < 1:
        raise UsageError("--max-people must be at least 1")
    marker = _marker(args)  # before any work: a bad signing configuration fails now
    inp = Path(args.input)
    if not inp.exists():
        raise UsageError(f"input {inp} does not exist; give a video, a folder of frames, a photo or a pose JSON")
    from kinemate.io.video import check_fps

    fps = check_fps(args.fps, inp)
    is_pose = kp.is_pose_file(inp)
    reference = reference_pose = None
    if args.reference:
        from kinemate.io import read_image

        reference = read_image(args.reference)
        if not args.no_retarget and not is_pose:  # the photo first, not after the whole video
            reference_pose = kp.detect_reference_pose(reference, backend=args.backend, select=select)
    if is_pose:
        track = kp.load_driving_track(inp, select=select, smooth=not args.no_smooth, max_frames=args.max_frames,
                                      fps=fps)
    else:
        if args.workers < 1:
            raise UsageError("--workers must be at least 1")
        if args.workers > 1:
            track = kp.extract_pose(inp, backend=args.backend, select=select, smooth=not args.no_smooth,
                                    max_frames=args.max_frames, progress=not args.quiet, workers=args.workers, fps=fps,
                                    max_people=args.max_people, hands=not args.body_only,
                                    face=not args.body_only)  # fmt: skip
        else:
            options = {"model_dir": args.pose_model_dir} if args.pose_model_dir else {}
            if args.body_only:
                options.update(hands=False, face=False)
            backend = kp.get_backend(args.backend, max_people=args.max_people, video=True, **options)
            try:
                track = kp.extract_pose(inp, backend=backend, select=select, smooth=not args.no_smooth,
                                        max_frames=args.max_frames, progress=not args.quiet, fps=fps)  # fmt: skip
            finally:
                backend.close()

    out_track = track
    if reference is not None:
        out_track = kp.control.prepare_controls_track(
            track, reference, retarget=not args.no_retarget, reference_pose=reference_pose,
            backend=args.backend, select=select
        )

    _save(out_track, Path(args.output), args.format)
    if args.preview:
        if reference is not None and not args.no_retarget:
            kp.write_reference_preview(reference, out_track, args.preview, marker=marker)
        elif is_pose:
            from kinemate.io import write_video

            write_video(args.preview, list(kp.render_openpose(track)), track.fps, marker=marker)
        else:
            kp.write_overlay_video(inp, track, args.preview, marker=marker)
    if args.controls:
        from kinemate.io import VideoWriter

        if reference is not None:
            size = args.size or (reference.shape[1], reference.shape[0])
            frames, fps, _ = kp.control_frames_from_driving(
                out_track, reference, size, fit=args.fit, retarget=False
                if args.no_retarget else True, reference_pose=reference_pose, progress=False)  # fmt: skip
        else:
            size = args.size or track.size
            frames, fps = kp.render_openpose(track, size, fit=args.fit), track.fps
        with VideoWriter(args.controls, fps, marker=marker) as writer:
            for frame in frames:
                writer.write(frame)
    info = kp.extract.describe(out_track)
    print(
        f"{args.output}: {info['frames']} frames ({info['frames_with_person']} with a person, "
        f"{info['hands']} with hands, {info['faces']} with a face), {info['size']} @ {info['fps']} fps"
        + (f", retargeted (mean confidence {float(out_track.confidence.mean()):.2f})"
           if out_track.meta.get("retargeted") else "")
    )
    return 0


def _marker(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The provenance marker of the pictures ``kinemate pose`` writes (--preview, --controls):
    watermark and C2PA manifest, as on every output; None when it writes no picture."""
    if not (args.preview or args.controls):
        return None
    from kinemate.provenance import make_marker
    from kinemate.provenance.marker import POSE_MODEL

    settings = {"command": "kinemate pose", "backend": args.backend,
                "reference": bool(args.reference), "retarget": not args.no_retarget}
    return make_marker(POSE_MODEL, settings, watermark=not args.no_watermark)


def _save(track, out: Path, fmt: str | None) -> None:  # type: ignore[no-untyped-def]
    from kinemate.pose import save_openpose

    if fmt is None:
        fmt = "kinemate" if out.suffix.lower() == ".json" else "openpose"
    if fmt == "kinemate":
        if out.suffix.lower() != ".json":
            raise UsageError(f"kinemate pose JSON needs a .json output path, got {out}")
        track.save(out)
    else:
        save_openpose(track, out, body_format="body25" if fmt == "openpose-body25" else "coco18",
                      name=out.stem if out.suffix.lower() != ".json" else None)  # fmt: skip
