"""Every sampling option, its default, its bounds and its help — defined once.

:class:`SamplingOptions` is the one definition. Precedence, lowest first: the defaults here
(the official MagicAnimate values), then a model's ``kinemate.json`` ``"options"``, then the
call (CLI flag, HTTP form field or Python keyword). A value of ``None`` in a call means "not
set": the model's value is used. The front ends derive from the same fields:

* the CLI adds one flag per field marked ``cli`` (``--context-frames`` for
  ``context_frames``; booleans get ``--name/--no-name``), see :func:`add_cli_arguments`;
* the service accepts one form field per field marked ``service``, with the bounds below
  (and the operator's tighter caps), see ``kinemate.service.params``;
* Python takes the field names as keywords of ``pipe(...)``/``pipe.stream(...)``.

Errors name the option by its field name (``steps``), never by a front end's spelling; the
CLI shows the flag (``--steps``) where it prints one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from kinemate.errors import UsageError
from kinemate.io.framing import parse_size


def _opt(default, help: str, *, cli: bool = True, service: bool = False, ge=None, le=None,
         gt=None, choices: tuple | None = None, metavar: str | None = None,
         family: bool = False):
    # family=True: only a family whose denoiser's start_video names the option uses it
    return field(default=default, metadata={
        "help": help, "cli": cli, "service": service, "ge": ge, "le": le, "gt": gt,
        "choices": choices, "metavar": metavar, "family": family})


@dataclass
class SamplingOptions:
    """Options of one sampling call; the defaults are the official MagicAnimate values."""

    steps: int = _opt(25, "denoising steps", service=True, ge=1, le=1000, metavar="N")
    guidance: float = _opt(7.5, "classifier-free guidance scale (1 = off)", service=True,
                           ge=0.0, le=100.0, metavar="G")
    seed: int = _opt(1, "random seed of the initial noise", service=True, ge=0,
                     le=2**63 - 1, metavar="N")
    context_frames: int = _opt(16, "frames per context window", service=True, ge=1, le=64,
                               metavar="N")
    context_overlap: int = _opt(4, "frames shared by neighbouring windows", service=True,
                                ge=0, le=63, metavar="N")
    closed_loop: bool = _opt(True, "the official wrap-around window schedule (the last window "
                             "joins the end of the video to its start); off: non-wrapping "
                             "windows", service=True)
    context_stride: int = _opt(1, "dilated window levels (official context_stride)", ge=1,
                               le=8, metavar="N")
    eta: float = _opt(0.0, "DDIM eta (0 = deterministic)", ge=0.0, le=1.0, metavar="E")
    # 1.0: start from pure noise (official). < 1: start from the reference latent noised to
    # that share of the schedule and run only that share of the steps (SDEdit-style)
    init_strength: float = _opt(1.0, "start from the reference noised to this share of the "
                                "schedule, in (0, 1]; 1 = pure noise", service=True, gt=0.0,
                                le=1.0, metavar="S")
    # what a start below init_strength 1 is made from: the reference latent (every frame
    # alike), or the frames kinemate-photo draws for each driving pose, VAE-encoded
    init: str = _opt("reference", "what the start is made from when `init_strength` < 1: "
                     "the reference photo, or 'warp': the photo warped to each driving pose "
                     "by kinemate-photo (needs a pose control)", service=True,
                     choices=("reference", "warp"))
    # 16 = the official scripts: the driving video is padded to a multiple of 16 frames by
    # repeating its last frame, and the result is cut back (changes the windows, so the result)
    pad_to: int = _opt(0, "sample the video padded to a multiple of N frames with its last "
                       "frame, then cut back (the official scripts: 16; 0 = none)",
                       service=True, ge=0, le=64, metavar="N")
    noise_tiling: int = _opt(0, "repeat one N-frame noise draw along the video (official "
                             "shared initial noise: 16; 0 = independent noise)", ge=0, le=64,
                             metavar="N")
    window_batch: int = _opt(1, "context windows per UNet call (GPU throughput)", ge=1, le=64,
                             metavar="N")
    reference_bank_dtype: str = _opt("float16", "dtype the reference features are rounded "
                                     "through (official: float16; 'none' keeps them)",
                                     choices=("float16", "bfloat16", "float32", "none"))
    lean: bool = _opt(True, "exact lean reference attention (off: the official computation, "
                      "slower)")
    sampler: str = _opt("model", "scheduler: the model's own, or DDIM / PNDM on the model's "
                        "noise schedule", choices=("model", "ddim", "pndm"))
    stretch: bool = _opt(False, "stretch each output frame's values to the full 0-255 range "
                         "(DreamPose's test.py does; its models need it)")
    # DreamPose's dual guidance (family options: a family whose denoiser does not take them
    # refuses values other than these)
    image_guidance: float = _opt(8.0, "image guidance scale (DreamPose s1; family option)",
                                 ge=0.0, le=100.0, metavar="G", family=True)
    pose_guidance: float = _opt(3.0, "pose guidance scale (DreamPose s2; family option)",
                                ge=0.0, le=100.0, metavar="G", family=True)

    # -- merging ----------------------------------------------------------------------
    def merged(self, overrides: dict[str, Any] | None = None, **kwargs: Any) -> "SamplingOptions":
        """A copy with the options that are set (not None) replaced, each checked."""
        values = {**(overrides or {}), **kwargs}
        unknown = sorted(set(values) - set(OPTION_NAMES))
        if unknown:
            raise UsageError(f"unknown sampling option(s) {', '.join(unknown)}; the options "
                             f"are {', '.join(OPTION_NAMES)}")
        changes = {k: check_option(k, v) for k, v in values.items() if v is not None}
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_model(cls, declared: dict[str, Any] | None) -> "SamplingOptions":
        """The options a model declares in its ``kinemate.json`` over the defaults. Older
        names and ``null`` values written by earlier versions are understood."""
        values = {}
        for key, value in (declared or {}).items():
            key = LEGACY_NAMES.get(key, key)
            if key in OPTION_NAMES:
                values[key] = value
        for key in ("pad_to", "noise_tiling"):
            if key in (declared or {}) and values.get(key) is None:
                values[key] = 0
        if "reference_bank_dtype" in (declared or {}) and declared["reference_bank_dtype"] is None:
            values["reference_bank_dtype"] = "none"
        return cls().merged(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


OPTION_FIELDS = {f.name: f for f in dataclasses.fields(SamplingOptions)}
OPTION_NAMES = tuple(OPTION_FIELDS)
# options only the families that take them use (see AnimationPipeline.start_video)
FAMILY_OPTIONS = tuple(n for n, f in OPTION_FIELDS.items() if f.metadata["family"])
# names used before one name per option (kinemate.json files and golden cases may hold them)
LEGACY_NAMES = {"num_inference_steps": "steps", "guidance_scale": "guidance"}


def option_help(name: str) -> str:
    return OPTION_FIELDS[name].metadata["help"]


def option_bounds(name: str) -> dict[str, Any]:
    """``{"ge": .., "le": .., "gt": ..}`` of an option (None where unbounded)."""
    meta = OPTION_FIELDS[name].metadata
    return {k: meta[k] for k in ("ge", "le", "gt")}


def check_option(name: str, value: Any) -> Any:
    """``value`` converted to the option's type and checked against its bounds, or a
    :class:`UsageError` that names the option and says what is allowed."""
    f = OPTION_FIELDS[name]
    meta, kind = f.metadata, type(f.default)
    try:
        if kind is bool:
            if not isinstance(value, (bool, int)) or value not in (0, 1, True, False):
                raise ValueError
            value = bool(value)
        elif kind is int:
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            value = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
            if not math.isfinite(value):
                raise ValueError
        else:
            value = str(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"`{name}` must be {_kind_words(kind)}; got {value!r}") from None
    problems = []
    if meta["choices"] and value not in meta["choices"]:
        problems.append(f"one of {', '.join(meta['choices'])}")
    if meta["ge"] is not None and value < meta["ge"]:
        problems.append(f">= {meta['ge']:g}")
    if meta["gt"] is not None and value <= meta["gt"]:
        problems.append(f"> {meta['gt']:g}")
    if meta["le"] is not None and value > meta["le"]:
        problems.append(f"<= {meta['le']:g}")
    if problems:
        raise UsageError(f"`{name}` must be {' and '.join(problems)}; got {value!r}")
    return value


def _kind_words(kind) -> str:
    return {bool: "true or false", int: "a whole number", float: "a finite number"}.get(
        kind, "text")


def format_size(size: tuple[int, int] | None) -> str | None:
    return None if size is None else f"{size[0]}x{size[1]}"


# -- the CLI's spelling -------------------------------------------------------------------
def cli_flag(name: str) -> str:
    """The CLI's flag of an option: ``context_frames`` -> ``--context-frames``."""
    return "--" + name.replace("_", "-")


def add_cli_arguments(parser, defaults: SamplingOptions | None = None) -> None:
    """One flag per CLI option, default None (= the model's value), help with the
    official default. Booleans get ``--name/--no-name``."""
    import argparse

    group = parser.add_argument_group("sampling options (default: the model's own value; "
                                      "in brackets the official default)")
    defaults = defaults or SamplingOptions()
    for name, f in OPTION_FIELDS.items():
        meta = f.metadata
        if not meta["cli"]:
            continue
        default = getattr(defaults, name)
        text = f"{meta['help']} [{default}]"
        if isinstance(f.default, bool):
            group.add_argument(cli_flag(name), dest=name, default=None,
                               action=argparse.BooleanOptionalAction, help=text)
        else:
            group.add_argument(cli_flag(name), dest=name, default=None, help=text,
                               type=type(f.default), choices=meta["choices"],
                               metavar=None if meta["choices"] else meta["metavar"])


def options_from_namespace(args) -> dict[str, Any]:
    """The sampling options set on the command line (the others stay unset)."""
    return {name: getattr(args, name) for name in OPTION_NAMES
            if getattr(args, name, None) is not None}


__all__ = ["FAMILY_OPTIONS", "LEGACY_NAMES", "OPTION_FIELDS", "OPTION_NAMES", "SamplingOptions", "add_cli_arguments",
           "check_option", "cli_flag", "format_size", "option_bounds", "option_help",
           "options_from_namespace", "parse_size"]
