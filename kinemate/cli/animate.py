"""``kinemate animate``: animate the person in a photo with the motion of a driving video."""

from __future__ import annotations

import argparse

from kinemate.models.registry import family_names
from kinemate.pipeline.options import add_cli_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "animate",
        help="animate a reference photo with a driving video",
        description="Animate the person in REFERENCE with the motion of DRIVING (a DensePose "
                    "render for --control densepose, or any video of a person for --control pose).",
    )
    p.add_argument("reference", nargs="?", help="reference photo (png/jpg/...)")
    p.add_argument("driving", nargs="?",
                   help="driving video (or folder of frames), or a pose JSON file/folder "
                        "(kinemate or OpenPose, see 'kinemate pose')")
    p.add_argument("--example", action="store_true",
                   help="use the bundled example (a synthetic person and a dance video) as "
                        "REFERENCE and DRIVING")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4, .gif, or a folder)")
    p.add_argument("--model", default=None, metavar="NAME",
                   help="model family from the registry: " + ", ".join(family_names()) +
                        " (default: kinemate-tiny, bundled; or what --weights holds)")
    p.add_argument("--weights", default=None,
                   help="weights folder: a published release layout or a kinemate model folder")
    p.add_argument("--control", choices=["auto", "densepose", "pose", "uv"], default="auto",
                   help="what the driving video is turned into (default: what the model uses; "
                        "uv: a folder of DensePose UV .npy fields, for dreampose)")
    p.add_argument("--no-retarget", action="store_true",
                   help="--control pose: keep the driving person's proportions and position")
    p.add_argument("--person", default="largest",
                   help="--control pose: whom to follow: largest, central, or N (N-th from the left)")
    p.add_argument("--size", default=None, help="output WIDTHxHEIGHT, multiples of 8 (default: model's)")
    p.add_argument("--fit", choices=["crop", "letterbox"], default="crop",
                   help="aspect-preserving fit of photo and video onto the size")
    p.add_argument("--grid", default=None, help="also write reference|control|result to this video")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N driving frames")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of a driving folder of frames or pose file (default 25 for "
                        "a folder and OpenPose JSON); a video file keeps its own")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="compute dtype (default float32 on cpu; on cuda the model's own choice, "
                        "bfloat16 for the bundled model, else float16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same command from its last saved "
                        "denoising step (the state is kept beside -o while a run is under way "
                        "and removed when the output is complete)")
    p.add_argument("--no-watermark", action="store_true",
                   help="do not embed the invisible watermark (the C2PA manifest records this)")
    add_cli_arguments(p)
    p.set_defaults(func=run)


def example_inputs():
    """The bundled example: (reference photo, driving video) inside the package."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "assets" / "examples"
    return folder / "person.png", folder / "dance.mp4"


def state_path(output):
    """Where a run writing ``output`` keeps its sampler state (a hidden file beside it)."""
    from pathlib import Path

    output = Path(output)
    return output.parent / f".{output.name}.kinemate-state.safetensors"


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from kinemate.errors import UsageError
    from kinemate.pipeline import animate_file, default_dtype, load_pipeline, parse_size
    from kinemate.pipeline.options import options_from_namespace
    from kinemate.pipeline.resume import SamplerCheckpoint
    from kinemate.pose.people import parse_select
    from kinemate.provenance import make_marker

    if args.example:
        if args.reference or args.driving:
            raise UsageError("--example brings its own photo and video; give either --example "
                             "or REFERENCE and DRIVING")
        args.reference, args.driving = (str(p) for p in example_inputs())
    elif not (args.reference and args.driving):
        raise UsageError("give a reference photo and a driving video (or pose JSON), e.g. "
                         "'kinemate animate ref.png dance.mp4 -o out.mp4', or try --example")
    size = parse_size(args.size)
    options = options_from_namespace(args)
    dtype = args.dtype or default_dtype(args.weights, args.device, args.model)
    pipe = load_pipeline(args.weights, model=args.model, device=args.device, dtype=dtype)
    origin = args.weights or "bundled with kinemate"
    print(f"model: {pipe.name} ({pipe.family} family, {origin}; {pipe.control_kind} control, "
          f"native size {pipe.default_size[0]}x{pipe.default_size[1]})")
    if pipe.index.get("notice"):
        print(f"note: {pipe.index['notice']}")
    effective = pipe.resolve(**options)
    settings = {"reference": Path(args.reference).name, "driving": Path(args.driving).name,
                "control": args.control, "size": args.size, "fit": args.fit,
                **effective.to_dict(), "max_frames": args.max_frames, "fps": args.fps,
                "retarget": not args.no_retarget, "person": args.person, "device": args.device,
                "dtype": dtype}
    marker = make_marker(pipe.name, settings, watermark=not args.no_watermark)
    checkpoint = SamplerCheckpoint(state_path(args.output), resume=args.resume)
    try:
        result = animate_file(
            args.reference, args.driving, args.output, pipe=pipe, control=args.control,
            size=size, fit=args.fit, marker=marker, grid_path=args.grid,
            max_frames=args.max_frames, progress=not args.no_progress,
            retarget=not args.no_retarget, person=parse_select(args.person), fps=args.fps,
            checkpoint=checkpoint, **options)
    except KeyboardInterrupt:
        if checkpoint.path.is_file():
            print("kinemate: the sampler's state is saved; run the same command with --resume "
                  "to continue", file=sys.stderr)
        raise
    if result.framing_note:
        print(f"note: {result.framing_note}")
    print(f"wrote {result.output_path} ({result.num_frames} frames, {result.fps:g} fps, "
          f"{result.size[0]}x{result.size[1]})")
    if result.grid_path:
        print(f"wrote {result.grid_path}")
    return 0
