"""Taking frames out of a video tensor and putting host frames on the device without host
syncs: on CUDA, indexing with a Python list or copying from pageable memory waits for every
queued kernel to finish, which leaves the GPU idle while the CPU launches the next network.

Frames are taken as runs of consecutive indices (``narrow`` views, concatenated), which
gives the same values as indexing with the list, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def frame_runs(frames: Sequence[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of consecutive frame indices: ``(first frame, position in frames,
    length)``. Example: [12, 13, 14, 15, 0, 1] -> [(12, 0, 4), (0, 4, 2)]."""
    runs: list[tuple[int, int, int]] = []
    for pos, f in enumerate(frames):
        if runs and runs[-1][0] + runs[-1][2] == f:
            start, at, n = runs[-1]
            runs[-1] = (start, at, n + 1)
        else:
            runs.append((int(f), pos, 1))
    return runs


def take_frames(x: torch.Tensor, frames: Sequence[int], dim: int = 2) -> torch.Tensor:
    """``x`` indexed by ``frames`` along ``dim`` (what ``x[:, :, frames]`` gives for dim 2)
    without an index tensor; a single run is a view."""
    parts = [x.narrow(dim, start, n) for start, _, n in frame_runs(frames)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def add_frames_(total: torch.Tensor, frames: Sequence[int], values: torch.Tensor,
                dim: int = 2) -> None:
    """``total[..., frames, ...] += values`` along ``dim`` in place (a frame listed twice is
    added twice), run by run: the same additions as ``index_add_``."""
    for start, at, n in frame_runs(frames):
        total.narrow(dim, start, n).add_(values.narrow(dim, at, n))


def to_device(array: np.ndarray, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """A host array on ``device`` in ``dtype``; to a GPU through pinned memory without
    waiting for the GPU (the copy is ordered on the current stream)."""
    x = torch.from_numpy(np.ascontiguousarray(array))
    if torch.device(device).type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    return x.to(device, dtype)
