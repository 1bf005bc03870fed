"""All window bookkeeping: schedules, grouping, per-frame caches, fusion and guidance.

A *window* is a list of frame indices fed to the video UNet together (its temporal attention
sees exactly those frames, in that order). A *schedule* is a list of windows covering every
frame at least once. Everything here is a small pure function (or, for :class:`FrameCache`,
a dict with a release rule) that can be tested alone; the sampler in
:mod:`kinemate.pipeline.animation` only strings them together.
"""

from __future__ import annotations

import math

import torch

from kinemate.models.frames import add_frames_


def closed_loop_windows(num_frames: int, context_frames: int, context_overlap: int,
                        context_stride: int = 1, closed_loop: bool = True) -> list[list[int]]:
    """The official MagicAnimate ``uniform`` schedule (``pipelines/context.py``, step 0).

    Windows start at ``0, s, 2s, ...`` (``s = context_frames - context_overlap``) while the
    start is below ``num_frames`` (``closed_loop``) or below ``num_frames - context_overlap``
    (not closed loop); frame indices wrap modulo ``num_frames``, so the last windows join the
    end of the video to its start. ``context_stride > 1`` adds dilated windows as the
    official code does. One window of all frames when ``num_frames <= context_frames``.
    Example: 16 frames, 8/4 -> [0-7] [4-11] [8-15] [12-15, 0-3].
    """
    _check(num_frames, context_frames, context_overlap)
    if num_frames <= context_frames:
        return [list(range(num_frames))]
    context_stride = min(context_stride, int(math.ceil(math.log2(num_frames / context_frames))) + 1)
    windows = []
    for level in range(context_stride):
        step = 1 << level
        stop = num_frames + (0 if closed_loop else -context_overlap)
        for start in range(0, stop, context_frames * step - context_overlap):
            windows.append([e % num_frames for e in range(start, start + context_frames * step, step)])
    return windows


def sliding_windows(num_frames: int, context_frames: int, context_overlap: int) -> list[list[int]]:
    """Non-wrapping schedule: windows of ``context_frames`` consecutive frames every
    ``context_frames - context_overlap`` frames; the last one is moved back to end at the
    last frame (so no window joins the end of the video to its start).
    Example: 32 frames, 16/4 -> [0-15] [12-27] [16-31]."""
    _check(num_frames, context_frames, context_overlap)
    if num_frames <= context_frames:
        return [list(range(num_frames))]
    starts = list(range(0, num_frames - context_frames + 1, context_frames - context_overlap))
    if starts[-1] + context_frames < num_frames:
        starts.append(num_frames - context_frames)
    return [list(range(s, s + context_frames)) for s in starts]


def context_windows(num_frames: int, context_frames: int = 16, context_overlap: int = 4, *,
                    closed_loop: bool = True, context_stride: int = 1) -> list[list[int]]:
    """The schedule the pipeline uses: official closed loop, or non-wrapping."""
    if closed_loop:
        return closed_loop_windows(num_frames, context_frames, context_overlap, context_stride)
    return sliding_windows(num_frames, context_frames, context_overlap)


def _check(num_frames: int, context_frames: int, context_overlap: int) -> None:
    if num_frames < 1:
        raise ValueError("need at least one frame")
    if context_frames < 1 or not 0 <= context_overlap < context_frames:
        raise ValueError(f"need context_frames >= 1 and 0 <= context_overlap < context_frames "
                         f"(got {context_frames}/{context_overlap})")


def last_use(windows: list[list[int]]) -> dict[int, int]:
    """For each frame, the index of the last window that contains it."""
    return {frame: i for i, window in enumerate(windows) for frame in window}


def window_groups(windows: list[list[int]], size: int) -> list[list[int]]:
    """Indices of consecutive windows of equal length, at most ``size`` per group (the
    windows that go through one denoiser call together)."""
    groups: list[list[int]] = []
    for i, window in enumerate(windows):
        if groups and len(groups[-1]) < size and len(windows[groups[-1][0]]) == len(window):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class FrameCache:
    """Per-frame values of one denoising step (e.g. ControlNet residuals), computed for the
    frames a window needs that are not cached yet and dropped after the last window that
    uses them: each frame is computed once per step, memory stays bounded in video length.

    ``compute(frames)`` returns one value per frame; :meth:`take` gives a window's values
    in window order."""

    def __init__(self, windows: list[list[int]], compute):
        self.last = last_use(windows)
        self.compute = compute
        self.store: dict[int, object] = {}

    def take(self, index: int, window: list[int]) -> list:
        missing = list(dict.fromkeys(f for f in window if f not in self.store))
        if missing:
            self.store.update(zip(missing, self.compute(missing)))
        values = [self.store[f] for f in window]
        for frame in window:
            if self.last[frame] == index:
                self.store.pop(frame, None)
        return values


def accumulate(total: torch.Tensor, counts: torch.Tensor, window: list[int],
               prediction: torch.Tensor) -> None:
    """Add a window's prediction ``(B, C, f, h, w)`` into ``total`` ``(B, C, N, h, w)`` at the
    window's frames and count them in ``counts`` ``(N,)`` (in place; the additions
    ``index_add_`` makes, without an index tensor, so nothing waits for the GPU)."""
    add_frames_(total, window, prediction.to(total.dtype))
    add_frames_(counts, window, torch.ones(1, dtype=counts.dtype, device=counts.device)
                .expand(len(window)), dim=0)


def fuse(total: torch.Tensor, counts: torch.Tensor, *, checked: bool = False,
         inplace: bool = False) -> torch.Tensor:
    """Plain average of the overlapping window predictions, ``total / counts`` per frame.
    ``checked``: the caller knows every frame is in a window (no device-to-host check);
    ``inplace``: divide ``total`` itself (no second video-sized buffer)."""
    if not checked and bool((counts == 0).any()):
        raise ValueError("some frames are in no context window")
    if inplace:
        return total.div_(counts.view(1, 1, -1, 1, 1))
    return total / counts.view(1, 1, -1, 1, 1)


def covers(windows: list[list[int]], num_frames: int) -> bool:
    """Whether every frame ``0..num_frames-1`` is in some window."""
    return len({f for window in windows for f in window}) == num_frames


def guide(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)
