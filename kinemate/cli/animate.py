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
                    "render for --control densepose, or any video of a person for --control pose). "
                    "--model text2video-zero takes no reference photo: appearance comes from the "
                    "text (--prompt); give only DRIVING, or no video and --frames N for a video "
                    "from the text alone.",
    )
    p.add_argument("reference", nargs="?", help="reference photo (png/jpg/...); text2video-zero: "
                   "none (its only positional argument is DRIVING)")
    p.add_argument("driving", nargs="?",
                   help="driving video (or folder of frames), or a pose JSON file/folder "
                        "(kinemate or OpenPose, see 'kinemate pose')")
    p.add_argument("--example", action="store_true",
                   help="use the bundled example (a synthetic person and a dance video) as "
                        "REFERENCE and DRIVING")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4, .gif, or a folder)")
    p.add_argument("--model", default=None, metavar="NAME",
                   help="model family from the registry: " + ", ".join(family_names()) +
                        " (default: kinemate-photo, which warps the photo itself and needs "
                        "no weights; or what --weights holds)")
    p.add_argument("--weights", default=None,
                   help="weights folder: a published release layout or a kinemate model folder")
    p.add_argument("--prompt", default=None,
                   help="text2video-zero: the text the appearance and scene come from")
    p.add_argument("--negative-prompt", default=None,
                   help="text2video-zero: what to avoid (default: the preset's)")
    p.add_argument("--preset", default=None,
                   help="model preset (text2video-zero: official (default) or diffusers-docs)")
    p.add_argument("--frames", type=int, default=None,
                   help="text2video-zero without a driving video: number of frames to make")
    p.add_argument("--control", choices=["auto", "densepose", "pose", "uv"], default="auto",
                   help="what the driving video is turned into (default: what the model uses; "
                        "uv: a folder of DensePose UV .npy fields, for dreampose)")
    p.add_argument("--no-retarget", action="store_true",
                   help="--control pose: keep the driving person's proportions and position")
    p.add_argument("--person", default="largest",
                   help="--control pose: whom to follow: largest, central, or N (N-th from the left)")
    p.add_argument("--size", default=None, help="output WIDTHxHEIGHT, multiples of 8 (default: "
                                               "the model's; kinemate-photo: the photo's)")
    p.add_argument("--fit", choices=["crop", "letterbox"], default="crop",
                   help="aspect-preserving fit of photo and video onto the size")
    p.add_argument("--grid", default=None, help="also write reference|control|result to this video")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N driving frames")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of a driving folder of frames or pose file (default 25 for "
                        "a folder and OpenPose JSON); a video file keeps its own")
    p.add_argument("--device", default="cpu",
                   help="cpu or cuda (default cpu); under torchrun or accelerate launch the "
                        "context windows of each step are split over the processes, one GPU each")
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


NEEDS_BOTH = ("give a reference photo and a driving video (or pose JSON), e.g. 'kinemate "
              "animate ref.png dance.mp4 -o out.mp4', or try --example")


def run(args: argparse.Namespace) -> int:
    from kinemate.errors import UsageError
    from kinemate.pipeline import default_dtype, parse_size
    from kinemate.pipeline.options import options_from_namespace
    from kinemate.pipeline.parallel import close, init_from_env

    if args.example:
        if args.reference or args.driving:
            raise UsageError("--example brings its own photo and video; give either --example "
                             "or REFERENCE and DRIVING")
        args.reference, args.driving = (str(p) for p in example_inputs())
    size = parse_size(args.size)
    options = options_from_namespace(args)
    dtype = args.dtype or default_dtype(args.weights, args.device, args.model)
    if args.model is not None:
        from kinemate.models.registry import get_family

        get_family(args.model)  # an unknown name fails before any weights are read
    text_family = args.model == "text2video-zero"
    if text_family:
        _text_inputs(args)
    elif (args.model is not None or args.weights is None) and not (args.reference and args.driving):
        raise UsageError(NEEDS_BOTH)  # the family is known to take a photo: fail before loading
    parallel, device = init_from_env(args.device)  # a launcher's processes split the windows
    try:
        return _run(args, size, options, dtype, parallel, device, text_family)
    finally:
        close()


def _run(args, size, options, dtype, parallel, device, text_family) -> int:
    import sys
    from pathlib import Path

    from kinemate.errors import UsageError
    from kinemate.pipeline import animate_file, load_pipeline
    from kinemate.pipeline.resume import SamplerCheckpoint
    from kinemate.pose.people import parse_select
    from kinemate.provenance import make_marker

    main = parallel is None or parallel.is_main  # rank 0 speaks and writes
    say = print if main else (lambda *a, **k: None)
    pipe = load_pipeline(args.weights, model=args.model, device=device, dtype=dtype,
                         preset=args.preset)
    if not pipe.uses_reference and not text_family:  # such a model found through --weights
        _text_inputs(args)
    elif pipe.uses_reference and not (args.reference and args.driving):
        raise UsageError(NEEDS_BOTH)
    if pipe.uses_reference:
        for flag, value in (("--prompt", args.prompt), ("--negative-prompt", args.negative_prompt),
                            ("--frames", args.frames)):
            if value is not None:
                raise UsageError(f"{flag} is for models without a reference photo "
                                 f"(text2video-zero); {pipe.name} takes its appearance from "
                                 "the photo")
    origin = args.weights or "bundled with kinemate"
    native = ("the photo's own size" if pipe.default_size is None
              else f"native size {pipe.default_size[0]}x{pipe.default_size[1]}")
    say(f"model: {pipe.name} ({pipe.family} family, {origin}; {pipe.control_kind} control, "
        f"{native})")
    if pipe.index.get("notice"):
        say(f"note: {pipe.index['notice']}")
    effective = pipe.resolve(text_only=args.driving is None, **options)
    settings = {"reference": Path(args.reference).name if args.reference else None,
                "driving": Path(args.driving).name if args.driving else None,
                "control": args.control, "size": args.size, "fit": args.fit,
                **effective.to_dict(), "max_frames": args.max_frames, "fps": args.fps,
                "retarget": not args.no_retarget, "person": args.person, "device": args.device,
                "dtype": dtype}
    if not pipe.uses_reference:
        settings.update(prompt=args.prompt, negative_prompt=args.negative_prompt,
                        preset=pipe.index.get("preset"), frames=args.frames)
    if parallel is not None:
        say(f"window-parallel: {parallel.world_size} processes share each step's windows")
    marker = make_marker(pipe.name, settings, watermark=not args.no_watermark) if main else None
    checkpoint = SamplerCheckpoint(state_path(args.output), resume=args.resume)
    try:
        result = animate_file(
            args.reference, args.driving, args.output, pipe=pipe, control=args.control,
            size=size, fit=args.fit, marker=marker, grid_path=args.grid,
            max_frames=args.max_frames, progress=main and not args.no_progress,
            retarget=not args.no_retarget, person=parse_select(args.person), fps=args.fps,
            checkpoint=checkpoint if main else None, parallel=parallel,
            **_family_kwargs(args, pipe), **options)
    except KeyboardInterrupt:
        if main and checkpoint.path.is_file():
            say("kinemate: the sampler's state is saved; run the same command with --resume "
                "to continue", file=sys.stderr)
        raise
    if result.framing_note:
        say(f"note: {result.framing_note}")
    say(f"wrote {result.output_path} ({result.num_frames} frames, {result.fps:g} fps, "
        f"{result.size[0]}x{result.size[1]})")
    if result.grid_path:
        say(f"wrote {result.grid_path}")
    return 0


def _text_inputs(args) -> None:
    """A model without a reference photo: the one positional is the driving video (or none:
    text only, with --frames); a photo is refused, not silently used as motion."""
    from pathlib import Path

    from kinemate.errors import UsageError
    from kinemate.io.image import IMAGE_SUFFIXES

    if args.example:
        raise UsageError("--example brings a reference photo; text2video-zero takes none: give "
                         "a driving video (or --frames N) and --prompt")
    if args.reference and args.driving:
        raise UsageError("text2video-zero takes no reference photo: appearance comes from the "
                         f"text (--prompt). Drop {Path(args.reference).name} and give only the "
                         "driving video")
    args.driving, args.reference = args.reference or args.driving, None
    if args.driving and Path(args.driving).suffix.lower() in IMAGE_SUFFIXES:
        raise UsageError(f"{Path(args.driving).name} is a photo; text2video-zero takes no "
                         "reference photo (appearance comes from --prompt). Give a driving "
                         "video or pose JSON, or --frames N for a video from the text alone")
    if not args.prompt:
        raise UsageError('text2video-zero needs --prompt "...": the text describes the person '
                         "and the scene")
    if args.driving is None and not args.frames:
        raise UsageError("give a driving video (or pose JSON), or --frames N to make a video "
                         "from the text alone")


def _family_kwargs(args, pipe) -> dict:
    if pipe.uses_reference:
        return {}
    return {k: v for k, v in (("prompt", args.prompt), ("negative_prompt", args.negative_prompt),
                              ("frames", args.frames)) if v is not None}
