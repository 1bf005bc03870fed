"""Sync-free frame gathering and accumulation (kinemate.models.frames) give the same bits as
indexing with a list and ``index_add_``: the engine's speed work changes no output."""

from __future__ import annotations

import torch

from kinemate.models.frames import add_frames_, frame_runs, take_frames
from kinemate.models.guidance import GuidanceRows
from kinemate.pipeline.context import accumulate, closed_loop_windows

WINDOWS = [*closed_loop_windows(23, 8, 3), *closed_loop_windows(23, 8, 2, context_stride=3),
           [5], [4, 4, 9, 3, 4]]  # wrapped, dilated, a single frame, repeats and gaps


def test_runs():
    assert frame_runs([12, 13, 14, 15, 0, 1]) == [(12, 0, 4), (0, 4, 2)]
    assert frame_runs([4, 4, 5]) == [(4, 0, 1), (4, 1, 2)]
    assert frame_runs([]) == []


def test_take_and_add_equal_index_ops_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 23, 4, 5, generator=g)
    fast_total, slow_total = torch.zeros_like(x), torch.zeros_like(x)
    fast_counts, slow_counts = torch.zeros(23), torch.zeros(23)
    for window in WINDOWS:
        assert torch.equal(take_frames(x, window), x[:, :, window])
        pred = torch.randn(2, 3, len(window), 4, 5, generator=g) * 1e3
        accumulate(fast_total, fast_counts, window, pred)
        index = torch.as_tensor(window)
        slow_total.index_add_(2, index, pred)
        slow_counts.index_add_(0, index, torch.ones(len(window)))
        one = torch.zeros(7)
        add_frames_(one, [1, 1, 2], torch.tensor([1.0, 2.0, 4.0]), dim=0)
        assert one.tolist() == [0, 3, 4, 0, 0, 0, 0]
    assert torch.equal(fast_total, slow_total) and torch.equal(fast_counts, slow_counts)


def test_guidance_rows_of_video_by_slicing():
    pred = torch.arange(6.0).view(6, 1)
    rows = GuidanceRows(cfg=True, videos=3)
    for j in range(3):
        assert rows.of_video(pred, j).flatten().tolist() == [j, 3 + j]
    assert GuidanceRows(cfg=False, videos=3).of_video(pred[:3], 1).flatten().tolist() == [1]
