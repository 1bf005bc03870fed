"""``kinemate animate``: animate the person in a photo with the motion of a driving video."""

from __future__ import annotations

import argparse


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
    p.add_argument("--model", choices=["magicanimate", "kinemate-tiny"], default=None,
                   help="which model (default: the bundled kinemate-tiny, or what --weights holds)")
    p.add_argument("--weights", default=None,
                   help="weights folder: MagicAnimate release layout or a kinemate model folder")
    p.add_argument("--control", choices=["auto", "densepose", "pose"], default="auto",
                   help="what the driving video is turned into (default: what the model uses)")
    p.add_argument("--no-retarget", action="store_true",
                   help="--control pose: keep the driving person's proportions and position")
    p.add_argument("--person", default="largest",
                   help="--control pose: whom to follow: largest, central, or N (N-th from the left)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default 25)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default 7.5)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--init-strength", type=float, default=None, metavar="S",
                   help="start from the reference noised to this share of the schedule, in "
                        "(0, 1]; 1 = pure noise (default: the model's, 1 for MagicAnimate)")
    p.add_argument("--context-frames", type=int, default=None, help="frames per window (default 16)")
    p.add_argument("--context-overlap", type=int, default=None, help="window overlap (default 4)")
    p.add_argument("--open-windows", action="store_true",
                   help="non-wrapping windows (default: the official closed loop)")
    p.add_argument("--pad-to", type=int, default=None, metavar="N",
                   help="sample the driving video padded to a multiple of N frames with its "
                        "last frame, then cut back (the official scripts: 16; 0: none; default: the "
                        "model's, none for the bundled model and MagicAnimate)")
    p.add_argument("--size", default=None, help="output WIDTHxHEIGHT, multiples of 8 (default: model's)")
    p.add_argument("--fit", choices=["crop", "letterbox"], default="crop",
                   help="aspect-preserving fit of photo and video onto the size")
    p.add_argument("--grid", default=None, help="also write reference|control|result to this video")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N driving frames")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="compute dtype (default float32 on cpu; on cuda the model's own choice, "
                        "bfloat16 for the bundled model, else float16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-watermark", action="store_true",
                   help="do not embed the invisible watermark (the C2PA manifest records this)")
    p.set_defaults(func=run)


def model_notice(weights) -> str | None:
    """The ``notice`` a kinemate model folder declares about itself (the bundled model says
    plainly what it is), or None."""
    from kinemate.pipeline.loading import model_index

    return model_index(weights or None).get("notice")


def example_inputs():
    """The bundled example: (reference photo, driving video) inside the package."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "assets" / "examples"
    return folder / "person.png", folder / "dance.mp4"


def run(args: argparse.Namespace) -> int:
    from kinemate.errors import UsageError
    from kinemate.pipeline import load_pipeline
    from kinemate.pipeline.animate import animate_file, parse_size
    from kinemate.pipeline.loading import default_dtype, has_bundled_model
    from kinemate.pose.people import parse_select

    if args.example:
        if args.reference or args.driving:
            raise UsageError("--example brings its own photo and video; give either --example "
                             "or REFERENCE and DRIVING")
        args.reference, args.driving = (str(p) for p in example_inputs())
    elif not (args.reference and args.driving):
        raise UsageError("give a reference photo and a driving video (or pose JSON), e.g. "
                         "'kinemate animate ref.png dance.mp4 -o out.mp4', or try --example")
    if args.weights is None and (args.model == "magicanimate" or not has_bundled_model()):
        raise UsageError("--weights DIR is required (a MagicAnimate release folder from "
                         "'kinemate weights download magicanimate --dir DIR', or a kinemate model)")
    size = parse_size(args.size) if args.size else None
    dtype = args.dtype or default_dtype(args.weights, args.device)
    pipe = load_pipeline(args.weights, model=args.model, device=args.device, dtype=dtype)
    origin = args.weights or "bundled with kinemate"
    print(f"model: {pipe.name} ({origin}; {pipe.control_kind} control, native size "
          f"{pipe.default_size[0]}x{pipe.default_size[1]})")
    notice = model_notice(args.weights)
    if notice:
        print(f"note: {notice}")
    from pathlib import Path

    from kinemate.provenance import make_marker

    settings = {"reference": Path(args.reference).name, "driving": Path(args.driving).name,
                "control": args.control, "size": args.size, "fit": args.fit, "steps": args.steps,
                "guidance": args.guidance, "seed": args.seed, "init_strength": args.init_strength,
                "context_frames": args.context_frames, "context_overlap": args.context_overlap, "closed_loop": not args.open_windows,
                "pad_to": args.pad_to,
                "max_frames": args.max_frames, "retarget": not args.no_retarget,
                "person": args.person, "device": args.device, "dtype": dtype}
    marker = make_marker(getattr(pipe, "name", None) or args.model or "kinemate",
                         settings, watermark=not args.no_watermark)
    result = animate_file(
        args.reference, args.driving, args.output, pipe=pipe, control=args.control, size=size,
        fit=args.fit, marker=marker, grid_path=args.grid, max_frames=args.max_frames,
        progress=not args.no_progress, retarget=not args.no_retarget,
        person=parse_select(args.person), num_inference_steps=args.steps,
        guidance_scale=args.guidance, seed=args.seed, context_frames=args.context_frames,
        context_overlap=args.context_overlap, closed_loop=not args.open_windows,
        init_strength=args.init_strength, pad_to=args.pad_to,
    )
    print(f"wrote {result.output_path} ({result.num_frames} frames, {result.fps:g} fps, "
          f"{result.size[0]}x{result.size[1]})")
    if result.grid_path:
        print(f"wrote {result.grid_path}")
    return 0
