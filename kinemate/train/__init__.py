"""kinemate.train — MagicAnimate's two training stages (plus a small-VAE fit) on accelerate.

``train(cfg)`` runs the stages of a :class:`TrainConfig` (``load_config(path)`` reads one from
JSON/YAML): ``vae`` (fit a small AutoencoderKL), ``stage1`` (appearance encoder + pose
ControlNet [+ UNet spatial layers] on frame pairs, temporal modules off), ``stage2`` (temporal
modules only, on clips). Checkpoints resume exactly; see docs/training.md. ``model.family:
animate-anyone`` trains Moore-AnimateAnyone's design in the same two stages instead
(:mod:`kinemate.train.animate_anyone`).
"""

from kinemate.train.config import (
    DataConfig,
    ModelConfig,
    StageConfig,
    TrainConfig,
    config_from_dict,
    load_config,
)
from kinemate.train.trainer import export, stage_summary, train

__all__ = ["DataConfig", "ModelConfig", "StageConfig", "TrainConfig", "config_from_dict",
           "load_config", "train", "export", "stage_summary"]
