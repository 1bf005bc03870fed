"""``animate_file``: reference photo + driving video -> animated video file (the end-to-end job
behind ``kinemate animate`` and the service)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kinemate.errors import InputError, UsageError
from kinemate.io.video import check_fps
from kinemate.pipeline.animation import AnimationPipeline
from kinemate.pipeline.options import parse_size
from kinemate.pipeline.scratch import spill_folder

log = logging.getLogger(__name__)

CONTROLS = ("auto", "densepose", "pose", "uv")
# the `control` that makes the maps a model of each control kind was trained on
CONTROL_OF_KIND = {"densepose": "densepose", "openpose": "pose", "densepose_uv": "uv"}
_KIND_WORDS = {"densepose": "DensePose renders", "openpose": "OpenPose skeleton maps",
               "densepose_uv": "DensePose UV fields"}


def choose_control(control: str, control_kind: str | None, *, pose_input: bool = False,
                   model: str = "the model") -> str:
    """The control ("densepose" or "pose") for a model trained on ``control_kind`` maps
    ("densepose" or "openpose"; ``pipe.control_kind``) and a driving input that is a pose
    file (``pose_input``) or a video; ``model`` names the model in messages.

    "auto" takes what the model was trained on ("pose" for a pose file). A control that makes
    maps of another kind than the model's is refused with a :class:`UsageError` naming the
    model's kind and what to pass instead: the model would not follow such maps, and the
    result would be a still, blurred photo with exit code 0. So is "densepose" for a pose
    file. A kind not in :data:`CONTROL_OF_KIND` (or None) is not checked. Pure: the service
    can ask before it accepts a job."""
    if control not in CONTROLS:
        raise UsageError(f"unknown `control` {control!r}; choose one of {', '.join(CONTROLS)}")
    if control == "densepose" and pose_input:
        raise UsageError("`control=densepose` needs a DensePose video, but the driving input "
                         "is a pose file; use `control=pose` or `control=auto`")
    wanted = CONTROL_OF_KIND.get(control_kind or "")
    if control == "auto":
        control = "pose" if pose_input or wanted is None else wanted
    if wanted is None or control == wanted:
        return control
    trained = (f"{model} was trained on {_KIND_WORDS[control_kind]} (control kind "
               f"{control_kind!r})")
    if wanted == "uv" or control == "uv":
        given = "a pose file" if pose_input else f"`control={control}`"
        if wanted == "uv":
            raise UsageError(
                f"{trained}; {given} would give it {_KIND_WORDS[CONTROL_KIND_OF[control]]}, "
                "which are not UV coordinates. Pass a folder with one DensePose UV .npy per "
                "frame with `control=uv` (or `control=auto`); docs/dreampose.md")
        raise UsageError(f"{trained}; `control=uv` is for models trained on DensePose UV "
                         f"fields (dreampose); use `control=auto`")
    if wanted == "densepose":
        given = "a pose file" if pose_input else "`control=pose`"
        raise UsageError(
            f"{trained}; {given} would give it OpenPose skeleton maps, which it cannot follow "
            "(the result would be a still, blurred photo). Pass a DensePose video of the motion "
            "with `control=densepose` (or `control=auto`), or, to animate from a video of a "
            "person or a pose file, use a model trained on skeletons (such as the bundled "
            "kinemate-tiny)")
    raise UsageError(
        f"{trained}; `control=densepose` would give it DensePose renders, which it cannot "
        "follow (the result would be a still, blurred photo). Pass `control=pose` (or "
        "`control=auto`) with a video of a person or a pose file; to animate a DensePose "
        "video, use a model trained on DensePose (such as magicanimate)")


CONTROL_KIND_OF = {"densepose": "densepose", "pose": "openpose", "uv": "densepose_uv"}


def pose_render_kwargs(pipe: AnimationPipeline) -> dict:
    """How a model's skeleton maps are drawn when it says (``denoiser.pose_render``: e.g.
    Text2Video-Zero's ControlNet v1.0 — body only, v1.0 drawing order); {} for the default."""
    return dict(getattr(getattr(pipe, "denoiser", None), "pose_render", None) or {})


def framing_note(framing: Any, name: str) -> str | None:
    """What to tell when a crop that keeps the whole person had to show black bars."""
    if not framing.letterboxed:
        return None
    (sw, sh), (dw, dh), (w, h) = framing.src_wh, framing.dst_wh, framing.scaled_wh
    where = " and ".join(side for side, short in (("left and right", w < dw),
                                                  ("top and bottom", h < dh)) if short)
    return (f"the whole person in {name} ({sw}x{sh}) does not fit a {dw}x{dh} crop: the photo "
            f"is scaled to {w}x{h} with black bars {where}; an output size closer to the "
            "photo's shape fills the frame")


@dataclass
class AnimateResult:
    output_path: Path
    grid_path: Path | None
    num_frames: int
    fps: float
    size: tuple[int, int]  # (W, H)
    control: str
    # said when the whole reference person could only be kept by showing black bars
    framing_note: str | None = None


def _stage(hook: Any, stage: str) -> Any:
    """``hook(stage, done, total)`` as a ``(done, total)`` callback (None stays None)."""
    return None if hook is None else (lambda done, total: hook(stage, done, total))


def _reported(frames, callback: Any, total: int | None):
    """``frames``, calling ``callback(done, total)`` after each one."""
    if callback is None:
        yield from frames
        return
    for done, frame in enumerate(frames, 1):
        yield frame
        callback(done, total)


def _uv_preview(field: np.ndarray) -> np.ndarray:
    from kinemate.pose.uv import render_uv

    return render_uv(field)


def spill_frames(frames, path: Path, dtype=np.uint8) -> np.ndarray:
    """Write a stream of equal-size frames (uint8 images, or float32 fields with
    ``dtype``) to ``path`` and return them as a read-only memory map ``(F, H, W, C)``:
    random access for the sampler without holding every control frame in RAM (pages are
    read back as windows need them)."""
    count, shape = 0, None
    with open(path, "wb") as f:
        for frame in frames:
            frame = np.ascontiguousarray(frame, dtype=dtype)
            if shape is None:
                shape = frame.shape
            elif frame.shape != shape:
                raise InputError(f"control frame {count} has size {frame.shape}, expected {shape}")
            f.write(frame.tobytes())
            count += 1
    if count == 0:
        return np.zeros((0, 1, 1, 3), dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count, *shape))


def animate_file(reference_path: str | Path | None, driving_path: str | Path | None,
                 output_path: str | Path, *,
                 pipe: AnimationPipeline, control: str = "auto",
                 size: str | tuple[int, int] | None = None, fit: str = "crop", marker: Any = None,
                 grid_path: str | Path | None = None, max_frames: int | None = None,
                 fps: float | None = None,
                 progress: bool = True, retarget: bool = True, person: str | int = "largest",
                 callback: Any = None, checkpoint: Any = None, prepare_callback: Any = None,
                 window_callback: Any = None, prompt: str | None = None,
                 negative_prompt: str | None = None, frames: int | None = None,
                 inputs: dict | None = None, parallel: Any = None,
                 **options: Any) -> AnimateResult:
    """Animate the person in ``reference_path`` with the motion of ``driving_path``.

    ``control``: "densepose" (the driving video is a DensePose render, passed through),
    "pose" (OpenPose maps extracted from the driving video and retargeted to the reference),
    or "auto" (what ``pipe`` was trained on; "pose" when ``driving_path`` is a pose JSON —
    kinemate or OpenPose, see docs/pose.md). With "pose", ``retarget`` fits the motion to the
    reference person and ``person`` picks whom to follow ("largest", "central", N). Reference
    and control frames get the same aspect-preserving ``fit`` ("crop" or "letterbox") onto
    ``size`` ("WxH" or (W, H); default ``pipe.size_for(photo size)``: a diffusion model's
    native size, kinemate-photo's photo size); with "pose", "crop" keeps the
    whole reference person, centred, and where they do not fit a filled frame shows black
    bars and says so in ``framing_note`` of the result (also logged). A control of another
    kind than the model's is refused (:func:`choose_control`); with "pose" the reference
    photo is checked for a person before the driving video is read. The video is written at
    the driving video's fps (``fps`` sets it for a folder of frames or a pose file), frame by
    frame, to a temporary name renamed when complete;
    ``marker`` (io marker protocol) marks every frame. ``grid_path`` also writes reference |
    control | result side by side. ``options`` are sampling options
    (:class:`~kinemate.pipeline.SamplingOptions` fields: steps, guidance, seed, ...); unset or
    None takes the model's value. ``callback`` goes to the sampler (per step).
    ``prepare_callback(stage, done, total)`` is called while the controls are prepared, before
    sampling: per driving frame the pose is extracted from (stage "pose") and per control frame
    rendered or read (stage "controls"); ``total`` is None when unknown. Either callback may
    raise (e.g. to cancel the job): nothing is written and the temporary files are removed.
    ``window_callback(step, window)`` is called after every context window of every step.
    ``checkpoint`` (:class:`~kinemate.pipeline.resume.SamplerCheckpoint`) keeps the sampler's
    state so that an interrupted run can resume; it is removed once the output is complete.

    A model without a reference photo (``pipe.uses_reference`` False: Text2Video-Zero) takes
    ``reference_path`` None and a ``prompt`` (``negative_prompt``); the driving pose is used
    as extracted (nothing to retarget to). Such a model that also samples without controls
    takes ``driving_path`` None and ``frames`` (text mode; ``fps`` default 4). ``inputs``:
    further family inputs (see :meth:`AnimationPipeline.sample_latents`).

    ``parallel`` (:class:`~kinemate.pipeline.parallel.WindowParallel`): every process of a
    window-parallel job calls this alike; rank 0 writes the output (and keeps the state), the
    others only sample."""
    from kinemate.io import Framing, VideoWriter, read_image, side_by_side

    from kinemate.pose import is_pose_file

    family_kwargs = {k: v for k, v in (("prompt", prompt), ("negative_prompt", negative_prompt),
                                       ("inputs", inputs)) if v is not None}
    if parallel is not None and (not hasattr(pipe, "sample_latents") or driving_path is None):
        what = (f"{pipe.name} samples nothing to share between processes"
                if not hasattr(pipe, "sample_latents") else "text-only generation runs in one "
                "process")
        raise UsageError(f"{what}; run it without torchrun / accelerate launch")
    if not pipe.uses_reference:
        if reference_path is not None:
            raise UsageError(f"{pipe.family} takes no reference photo: appearance comes from "
                             "the text `prompt`; leave the photo out")
        if driving_path is None:
            return _text_only_file(output_path, pipe=pipe, frames=frames, size=size, fps=fps,
                                   marker=marker, progress=progress, callback=callback,
                                   checkpoint=checkpoint, window_callback=window_callback,
                                   **family_kwargs, **options)
    elif reference_path is None:
        raise UsageError("give a reference photo of the person to animate")
    if driving_path is None:
        raise UsageError("give a driving video (or pose JSON)")
    if frames is not None:
        raise UsageError("`frames` is for text-only generation (no driving video); to shorten "
                         "a driving video use `max_frames`")

    control = choose_control(control, pipe.control_kind, pose_input=is_pose_file(driving_path),
                             model=f"the model {pipe.name}")
    if fit not in ("crop", "letterbox"):
        raise UsageError(f"unknown `fit` {fit!r}; use crop or letterbox")
    sampling = pipe.resolve(**options)  # bad options fail before any file is read
    pipe.check_unused(sampling)
    if getattr(sampling, "init", None) == "warp" and control != "pose":
        raise UsageError("`init` warp warps the photo to the driving poses, which a DensePose "
                         "video does not give; use `control` pose (a video of a person or a "
                         "pose file), or `init` reference")
    asked_size = size = parse_size(size)
    fps = check_fps(fps, driving_path)
    reference_raw = read_image(reference_path) if reference_path is not None else None
    if reference_raw is None:
        retarget = False  # nothing to retarget to: the driving pose as extracted
        size = size or pipe.default_size
    else:
        size = size or pipe.size_for((reference_raw.shape[1], reference_raw.shape[0]))

    if control == "pose":
        from kinemate.pose import control_frames_from_driving

        tracks: dict = {}
        frames, fps, _ = control_frames_from_driving(driving_path, reference_raw, size, fit=fit,
                                                     fps=fps, track_out=tracks,
                                                     max_frames=max_frames,
                                                     progress=progress, retarget=retarget,
                                                     select=person,
                                                     callback=_stage(prepare_callback, "pose"),
                                                     **pose_render_kwargs(pipe))
        rule = pipe.index.get("driving")  # a preset's own input rule (text2video-zero official)
        if rule and reference_raw is None:
            frames, fps, size = _apply_driving_rule(rule, tracks["controls"], frames, fps,
                                                    asked_size, fit, pose_render_kwargs(pipe))
    elif control == "uv":
        from kinemate.pose.uv import uv_frames

        frames, fps, total = uv_frames(driving_path, size, fit=fit, fps=fps,
                                       max_frames=max_frames)
    else:
        from kinemate.pose.control import densepose_frames

        frames, fps, total = densepose_frames(driving_path, size, fit=fit, fps=fps,
                                                  max_frames=max_frames)
    note = reference = None
    posed = {}  # the pose track in output pixels, for models drawn from poses
    # (kinemate-photo) and `init` warp; none for a DensePose control or without a photo
    if reference_raw is not None:
        ref_wh = (reference_raw.shape[1], reference_raw.shape[0])
        if control == "pose" and (retarget or tracks["controls"].meta.get("retargeted")):
            framing = frames.framing  # the maps are drawn in the photo's pixels: frame it alike
        else:
            framing = Framing.compute(ref_wh, size, fit)
        reference = framing.apply(reference_raw)
        if control == "pose":
            from kinemate.pose import framed_track

            posed["poses"] = framed_track(tracks["controls"], frames.framing, size)
            if tracks.get("reference") is not None:
                posed["reference_pose"] = framed_track(tracks["reference"], framing, size)
        note = framing_note(framing, Path(reference_path).name) if fit == "crop" else None
    if note:
        log.info(note)
    output_path = Path(output_path)
    grid_path = Path(grid_path) if grid_path else None
    with contextlib.ExitStack() as stack:  # on an error both outputs are removed
        spill = Path(stack.enter_context(spill_folder()))
        controls = spill_frames(_reported(frames, _stage(prepare_callback, "controls"),
                                          len(frames) if control == "pose" else total),
                                spill / "controls.u8",
                                dtype=np.float32 if control == "uv" else np.uint8)
        if len(controls) == 0:
            raise InputError(f"{driving_path} has no frames; give a video with at least one frame")
        if parallel is not None and not parallel.is_main:  # rank 0 writes; this one samples
            pipe.sample_latents(reference, controls, progress=False, parallel=parallel,
                                **posed, **family_kwargs, **sampling.to_dict())
            return AnimateResult(output_path, grid_path, len(controls), float(fps), size,
                                 control, framing_note=note)
        out = stack.enter_context(VideoWriter(output_path, fps, marker=marker))
        # the grid's result panel carries the output's own mark, which verify reads there
        grid = stack.enter_context(VideoWriter(grid_path, fps, marker=_FinalizeOnly(marker)
                                               if marker is not None else None)) if grid_path else None
        frames_out = pipe.stream(reference, controls, progress=progress, callback=callback,
                                 checkpoint=checkpoint, window_callback=window_callback,
                                 parallel=parallel, **posed, **family_kwargs,
                                 **sampling.to_dict())
        for i, frame in enumerate(frames_out):
            out.write(frame)
            if grid is not None:
                shown = controls[i] if control != "uv" else _uv_preview(controls[i])
                panels = [shown, frame if marker is None else marker.mark(frame)]
                grid.write(side_by_side(([] if reference is None else [reference]) + panels))
    if checkpoint is not None:  # the output is complete: nothing left to resume
        checkpoint.clear()
    return AnimateResult(output_path, grid_path, len(controls), float(fps), size, control,
                         framing_note=note)


class _Picked(Sequence):
    """The frames of ``frames`` at ``indices`` (lazy)."""

    def __init__(self, frames, indices: list[int]):
        self.frames, self.indices = frames, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.frames[self.indices[i]]


def _apply_driving_rule(rule: dict, track, frames, fps: float, asked_size, fit: str,
                        render: dict):
    """A preset's input rule (Text2Video-Zero's official ``prepare_video``): the size from the
    driving input's, longest side ``longest_side``, both sides rounded to ``multiple`` (unless a
    size was asked), and the frames resampled to ``fps`` (``linspace(0, n, int(n / fps *
    rule_fps), endpoint=False)``, truncated)."""
    from kinemate.pose.render import ControlFrames

    if asked_size is None and rule.get("longest_side"):
        w, h = track.size
        k = float(rule["longest_side"]) / max(w, h)
        m = int(rule.get("multiple", 64))
        size = (max(m, int(np.round(w * k / m)) * m), max(m, int(np.round(h * k / m)) * m))
        frames = ControlFrames(track, size, fit=fit, **render)
    else:
        size = asked_size or frames.size_wh
    if rule.get("fps") and fps and float(fps) > float(rule["fps"]):
        n = len(frames)
        count = max(1, int(n / float(fps) * float(rule["fps"])))
        frames = _Picked(frames, [int(i) for i in np.linspace(0, n, count, endpoint=False)])
        fps = float(rule["fps"])
    return frames, fps, size


TEXT_ONLY_FPS = 4.0  # the reference code's README example (process_text2video's default: 2)


def _text_only_file(output_path, *, pipe: AnimationPipeline, frames: int | None, size, fps,
                    marker, progress, callback, checkpoint, window_callback,
                    **kwargs) -> AnimateResult:
    """A video from the text alone (no reference, no driving video): Text2Video-Zero's text
    mode, written frame by frame as :func:`animate_file` writes."""
    if not getattr(pipe.denoiser, "accepts_no_controls", False):
        raise UsageError(f"{pipe.family} needs a driving video (or pose JSON)")
    if not frames or int(frames) < 1:
        raise UsageError("without a driving video, say how many `frames` to make (--frames N)")
    if fps is not None and not (0 < float(fps) <= 240):
        raise UsageError(f"`fps` must be in (0, 240]; got {fps}")
    options = {k: v for k, v in kwargs.items() if k not in ("prompt", "negative_prompt", "inputs")}
    family = {k: v for k, v in kwargs.items() if k in ("prompt", "negative_prompt", "inputs")}
    sampling = pipe.resolve(text_only=True, **options)
    size = parse_size(size) or pipe.default_size
    fps = float(fps or TEXT_ONLY_FPS)
    from kinemate.io import VideoWriter

    output_path = Path(output_path)
    with VideoWriter(output_path, fps, marker=marker) as out:
        for frame in pipe.stream(None, None, num_frames=int(frames), size=size,
                                 progress=progress, callback=callback, checkpoint=checkpoint,
                                 window_callback=window_callback, **family,
                                 **sampling.to_dict()):
            out.write(frame)
    if checkpoint is not None:
        checkpoint.clear()
    return AnimateResult(output_path, None, int(frames), fps, size, "text")


class _FinalizeOnly:
    """io marker protocol for frames marked already (the grid, whose result panel is marked
    as the output is): no second mark on the whole frame, the same ``finalize`` (manifest)."""

    def __init__(self, marker: Any) -> None:
        self.marker = marker

    def mark(self, frame: np.ndarray) -> np.ndarray:
        return frame

    def finalize(self, path: Path) -> None:
        self.marker.finalize(path)
