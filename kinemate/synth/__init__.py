"""kinemate.synth — procedural people and motions with exact ground truth.

Torch-free training/eval data and test fixtures::

    from kinemate.synth import generate_clip, SyntheticClips
    clip = generate_clip(seed=7, num_frames=16, size=(128, 128), motion="wave")
    clip.frames     # (F, H, W, 3) uint8 RGB
    clip.pose       # (F, 18, 3) float32 OpenPose COCO-18 (x, y, conf) in pixels
    clip.skeleton   # (F, H, W, 3) uint8 OpenPose-style control maps
    clip.densepose  # (F, H, W, 3) uint8 DensePose (viridis part index) control maps
    clip.parts, clip.iuv, clip.mask, clip.background, clip.meta

Seeds ``0 <= seed < 1_000_000`` are for training, ``seed >= 1_000_000`` are held out for
evaluation (``SyntheticClips(split="train"|"eval")``). See docs/synth.md.

The dataset folder format (real and synthetic videos; docs/dataset-format.md) is read by
``open_dataset(dir)`` (alias ``load_dataset``) and written by ``write_dataset`` /
``write_index`` (:mod:`kinemate.synth.dataset`).
"""

from kinemate.synth.clip import (
    DEFAULT_FPS,
    EVAL_SEEDS,
    GENERATOR_VERSION,
    TRAIN_SEEDS,
    Clip,
    SyntheticClips,
    densepose_map,
    generate_clip,
    render_skeleton_maps,
    split_seeds,
    to_pose_track,
)
from kinemate.synth.dataset import load_dataset, open_dataset, write_dataset, write_index
from kinemate.synth.motions import MOTIONS
from kinemate.synth.render import PART_NAMES

MOTION_NAMES: tuple[str, ...] = tuple(sorted(MOTIONS))

__all__ = [
    "GENERATOR_VERSION", "Clip", "generate_clip", "SyntheticClips", "TRAIN_SEEDS", "EVAL_SEEDS", "DEFAULT_FPS",
    "MOTION_NAMES", "PART_NAMES", "densepose_map", "render_skeleton_maps", "split_seeds",
    "to_pose_track", "open_dataset", "load_dataset", "write_dataset", "write_index",
]
