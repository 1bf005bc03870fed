"""Training data: clip sources and the deterministic example streams of each stage.

A *clip source* turns a clip index into ``(frames, controls)`` — uint8 arrays ``(F, H, W, 3)``
RGB, frames and their control maps (skeleton or part maps) at the training size. Two sources
exist: :class:`SynthSource` (procedural people from :mod:`kinemate.synth`, generated on the
fly) and :class:`FolderSource` (a dataset on disk in the kinemate folder format).

Each stage reads examples through :class:`StageDataset`, whose ``__getitem__(k)`` is a pure
function of the example position ``k`` and the run seed. A :class:`PositionSampler` hands out
positions ``start, start+1, ...`` (sharded over processes), so resuming a run at step ``s``
resumes the exact example stream: the data position of a checkpoint is just its step.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from kinemate.errors import ConfigError, InputError
from kinemate.train.config import DataConfig


def mix_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from several integers/strings (independent of PYTHONHASHSEED)."""
    h = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


# --------------------------------------------------------------------------- clip sources


class SynthSource:
    """Procedural clips from :func:`kinemate.synth.generate_clip`; index ``i`` is the clip seed
    ``cfg.seed_offset + i % cfg.num_seeds`` (held-out seeds are refused)."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        if cfg.seed_offset + min(cfg.num_seeds, 1 << 62) > cfg.heldout_seed_start and (
            cfg.seed_offset < cfg.heldout_seed_start
        ):
            raise ConfigError(
                "data.seed_offset + data.num_seeds reaches data.heldout_seed_start; training "
                "would see held-out evaluation people. Lower num_seeds or raise heldout_seed_start."
            )
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return self.cfg.num_seeds

    def seed_of(self, index: int) -> int:
        return self.cfg.seed_offset + index % self.cfg.num_seeds

    def num_frames(self, index: int) -> int:
        return self.cfg.synth_frames

    def clip(self, index: int, indices: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        seed = self.seed_of(index)
        if seed in self._cache:
            self._cache.move_to_end(seed)
            out = self._cache[seed]
        else:
            out = synth_clip(seed, self.cfg)
            if self.cfg.cache_clips > 0:
                self._cache[seed] = out
                while len(self._cache) > self.cfg.cache_clips:
                    self._cache.popitem(last=False)
        if indices is None:
            return out
        return out[0][indices], out[1][indices]


def synth_clip(seed: int, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic clip: ``(frames, controls)`` uint8 ``(F, H, W, 3)`` at ``cfg.size``."""
    from kinemate import synth

    openpose = cfg.control == "openpose"
    clip = synth.generate_clip(
        seed, num_frames=cfg.synth_frames * cfg.frame_stride, size=(cfg.size, cfg.size),
        skeleton=openpose, densepose=not openpose, **cfg.synth_options,
    )
    frames = np.asarray(clip.frames)
    controls = np.asarray(clip.skeleton if openpose else clip.densepose)
    if cfg.frame_stride > 1:
        frames, controls = frames[:: cfg.frame_stride], controls[:: cfg.frame_stride]
    return frames, controls


class FolderSource:
    """Videos of a dataset folder in the kinemate format (docs/training.md), read with
    :mod:`kinemate.synth.dataset`; every video is one clip. Only the frames an example needs
    are decoded (image-folder videos)."""

    def __init__(self, cfg: DataConfig):
        from kinemate.synth.dataset import open_dataset

        self.cfg = cfg
        root = Path(cfg.root)
        if not root.is_dir():
            raise InputError(f"dataset folder {root} does not exist; set data.root to a dataset folder")
        self._ds = open_dataset(root)
        if len(self._ds) == 0:
            raise InputError(f"dataset folder {root} holds no videos; see docs/training.md for the layout")
        self._lengths: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._ds)

    def num_frames(self, index: int) -> int:
        if index not in self._lengths:
            n = self._ds[index].num_frames
            self._lengths[index] = max(1, n // self.cfg.frame_stride) if n else 0
        return self._lengths[index]

    def clip(self, index: int, indices: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        item = self._ds[index]
        raw = None if indices is None else [i * self.cfg.frame_stride for i in indices]
        frames, controls = item.load(size=(self.cfg.size, self.cfg.size),
                                     control=self.cfg.control, indices=raw)
        return np.asarray(frames), np.asarray(controls)


_SOURCES: dict[str, object] = {}


def make_source(cfg: DataConfig):
    """The clip source of ``cfg``; one per distinct data config in a process, so the stages of
    a run share the clip cache."""
    key = repr(cfg)
    if key not in _SOURCES:
        if len(_SOURCES) >= 4:
            _SOURCES.clear()
        _SOURCES[key] = SynthSource(cfg) if cfg.kind == "synth" else FolderSource(cfg)
    return _SOURCES[key]


# --------------------------------------------------------------------------- examples


def to_signed(frames_u8: np.ndarray) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` → float ``(..., 3, H, W)`` in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames_u8)).float().div_(127.5).sub_(1.0)
    return t.movedim(-1, -3)


def to_unit(frames_u8: np.ndarray) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` → float ``(..., 3, H, W)`` in [0, 1] (ControlNet input)."""
    t = torch.from_numpy(np.ascontiguousarray(frames_u8)).float().div_(255.0)
    return t.movedim(-1, -3)


class StageDataset(Dataset):
    """Examples of one stage, a pure function of the position ``k``.

    kind ``vae``: ``{"image": (3, H, W)}`` in [-1, 1].
    kind ``stage1``: ``{"reference": (3,H,W), "target": (3,H,W)`` in [-1, 1], ``"control": (3,H,W)``
    in [0, 1]``}`` — two frames of one clip; with ``pair_margin`` m > 0 the target lies at least
    m frames before or after the reference where the clip is long enough (Moore-AnimateAnyone's
    ``sample_margin`` rule), else both are drawn independently.
    kind ``stage2``: ``{"reference": (3,H,W), "target": (3,F,H,W), "control": (3,F,H,W)}`` — a clip of
    ``clip_frames`` frames plus a reference frame of the same clip.
    """

    def __init__(self, source, kind: str, seed: int, clip_frames: int, pair_margin: int = 0):
        self.source = source
        self.kind = kind
        self.seed = seed
        self.clip_frames = clip_frames
        self.pair_margin = pair_margin

    def __len__(self) -> int:  # positions are unbounded; the sampler decides
        return 1 << 62

    def __getitem__(self, k: int) -> dict:
        rng = np.random.default_rng(mix_seed(self.seed, self.kind, k))
        n = len(self.source)
        if n >= (1 << 31):
            clip_index = int(rng.integers(0, 1 << 62)) % n
        else:
            # walk over the clips in a fresh permutation per epoch
            epoch, j = divmod(k, n)
            perm = np.random.default_rng(mix_seed(self.seed, "perm", epoch)).permutation(n)
            clip_index = int(perm[j])
        f = self.source.num_frames(clip_index)
        if f < 1:
            raise InputError(f"clip {clip_index} of the dataset has no frames")
        if self.kind in ("vae", "vae_decoder"):
            frames, _ = self.source.clip(clip_index, [int(rng.integers(f))])
            return {"image": to_signed(frames[0])}
        ref = int(rng.integers(f))
        if self.kind == "stage1":
            tgt = self._target_frame(rng, ref, f)
            frames, controls = self.source.clip(clip_index, [ref, tgt])
            return {
                "reference": to_signed(frames[0]),
                "target": to_signed(frames[1]),
                "control": to_unit(controls[1]),
            }
        length = min(self.clip_frames, f)
        start = int(rng.integers(f - length + 1))
        idx = [ref] + list(range(start, start + length))
        frames, controls = self.source.clip(clip_index, idx)
        return {
            "reference": to_signed(frames[0]),
            "target": to_signed(frames[1:]).movedim(0, 1),  # (3, F, H, W)
            "control": to_unit(controls[1:]).movedim(0, 1),
        }


    def _target_frame(self, rng: np.random.Generator, ref: int, f: int) -> int:
        """The stage-1 target frame for reference frame ``ref`` of a clip of ``f`` frames."""
        if self.pair_margin <= 0:
            return int(rng.integers(f))
        m = min(self.pair_margin, f)
        if ref + m < f:  # after the reference, at least m frames on
            return int(rng.integers(ref + m, f))
        if ref - m > 0:  # else before it, at least m frames back
            return int(rng.integers(0, ref - m + 1))
        return int(rng.integers(f))  # a clip too short for the margin: anywhere


class PositionSampler(Sampler):
    """Infinite positions ``start + i*world + rank`` (i = 0, 1, ...): the example stream of one
    process. ``start`` is ``step * batch_size * world`` when resuming at ``step``."""

    def __init__(self, start: int = 0, rank: int = 0, world: int = 1):
        self.start, self.rank, self.world = int(start), int(rank), int(world)

    def __iter__(self) -> Iterator[int]:
        i = 0
        while True:
            yield self.start + i * self.world + self.rank
            i += 1

    def __len__(self) -> int:  # pragma: no cover - infinite
        return 1 << 62


def make_loader(source, kind: str, *, seed: int, clip_frames: int, batch_size: int, step: int,
                rank: int, world: int, num_workers: int = 0, pair_margin: int = 0):
    """A DataLoader yielding batches from position ``step*batch_size*world`` on. Its own
    generator gives its workers their base seed (else it is drawn from torch's global one)."""
    ds = StageDataset(source, kind, seed, clip_frames, pair_margin)
    sampler = PositionSampler(step * batch_size * world, rank, world)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        persistent_workers=False, drop_last=True,
        generator=torch.Generator().manual_seed(mix_seed(seed, kind, "loader", step, rank)),
    )
