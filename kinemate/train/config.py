"""Training configuration: plain dataclasses loaded from a JSON or YAML file.

One file describes a whole run: where outputs go, the data, the model to start from (or the
architecture to build from scratch), and the stages to run in order (``vae`` → ``stage1`` →
``stage2``). Every field has a default here and only here; a config file overrides what it
names. Unknown keys are an error (a typo must not silently train something else).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, get_args, get_origin, get_type_hints

from kinemate.errors import ConfigError

STAGE_KINDS = ("vae", "vae_decoder", "stage1", "stage2")
# model designs the diffusion stages train (model.family): MagicAnimate's (appearance encoder +
# ControlNet + video UNet) and Moore-AnimateAnyone's (reference UNet + pose guider + video UNet,
# CLIP image conditioning)
TRAIN_FAMILIES = ("magicanimate", "animate-anyone")
SNR_WEIGHTINGS = ("min_snr", "min_snr_plus_one")


@dataclass
class DataConfig:
    """Where training examples come from.

    ``kind="synth"`` draws procedural people on the fly from :mod:`kinemate.synth` (clip seeds
    ``seed_offset + k``; held-out evaluation seeds live at or above ``heldout_seed_start`` and are
    never drawn). ``kind="folder"`` reads a dataset in the kinemate folder format (see
    docs/training.md) from ``root``.
    """

    kind: str = "synth"
    root: Optional[str] = None
    size: int = 64  # square training frames (pixels); a multiple of 8
    clip_frames: int = 8  # frames per training clip in stage 2 (the temporal window)
    synth_frames: int = 16  # frames per generated synthetic clip (pairs/windows are drawn from it)
    frame_stride: int = 1  # temporal subsampling of clips in stage 2
    control: str = "openpose"  # "openpose" (skeleton) or "densepose" (part maps)
    seed_offset: int = 0
    num_seeds: int = 1_000_000  # synthetic clip seeds used for training: [offset, offset + num)
    heldout_seed_start: int = 1_000_000  # = kinemate.synth.EVAL_SEEDS.start
    synth_options: dict = field(default_factory=dict)  # extra keyword arguments of generate_clip
    cache_clips: int = 0  # keep this many generated clips in memory and re-use them (0: none)
    # stage 1: the target frame lies at least this many frames from the reference frame where
    # the clip allows it (Moore-AnimateAnyone's sample_margin); 0: both drawn independently
    pair_margin: int = 0


@dataclass
class ModelConfig:
    """The networks. ``init`` is a kinemate-format pipeline folder to start from (fine-tuning);
    without it the components are built from ``arch`` (from scratch). ``vae`` optionally names
    a folder with a trained AutoencoderKL (otherwise stage ``vae`` trains one, or ``init``
    provides it). ``scheduler`` overrides keys of the noise scheduler's config (MagicAnimate's
    DDIM by default, or ``init``'s), e.g. ``{prediction_type: v_prediction}``: the training
    target follows it and the saved model samples with it.

    ``family`` is the design the diffusion stages train: ``magicanimate`` (appearance encoder +
    pose ControlNet + video UNet, a fixed text embedding) or ``animate-anyone``
    (Moore-AnimateAnyone: reference UNet + pose guider + video UNet, CLIP image conditioning;
    see docs/training.md). ``train_scheduler`` overrides the betas the training noise is drawn
    with, leaving the scheduler the model is saved with as it is (Moore-AnimateAnyone trained
    on ``scaled_linear`` zero-SNR betas and samples with ``linear`` ones); None: the family's
    choice (animate-anyone: ``{beta_schedule: scaled_linear}``, magicanimate: none)."""

    init: Optional[str] = None
    family: str = "magicanimate"
    vae: Optional[str] = None
    arch: dict = field(default_factory=dict)
    name: str = "kinemate-custom"
    sampling: dict = field(default_factory=dict)  # SamplingOptions saved with the model
    scheduler: dict = field(default_factory=dict)  # noise-scheduler config overrides
    train_scheduler: Optional[dict] = None  # training-noise beta overrides (None: the family's)


@dataclass
class StageConfig:
    """One training stage.

    kind: ``vae`` (fit the autoencoder on frames), ``vae_decoder`` (fine-tune only the decoder
    of the previous stage's autoencoder: the latent space, hence the diffusion stages, stay
    unchanged), ``stage1`` (appearance encoder + pose
    ControlNet [+ UNet spatial layers] on frame pairs, temporal modules off) or ``stage2``
    (temporal modules only, on clips; everything else frozen).

    name: the stage's folder under ``output_dir`` and its name in logs (default: ``kind``).
    Give one to run a kind twice, e.g. a second ``stage1`` that fine-tunes the first one's
    result on other settings. Each stage starts from the result of the stage before it.
    """

    kind: str = "stage1"
    name: Optional[str] = None
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    cooldown_steps: int = 0  # LR decays linearly to 0 over the last cooldown_steps of steps
    max_grad_norm: float = 1.0
    train_unet_spatial: Optional[bool] = None  # stage1: None = True when training from scratch
    # square training size of this stage in pixels (default data.size), e.g. Moore-AnimateAnyone's
    # stage 1 at 768 and stage 2 at 512; the sample videos use it too
    size: Optional[int] = None
    kl_weight: float = 1e-6  # vae only
    crop: int = 0  # vae only: train on random square crops of this size (0: whole frames)
    fit_frames: int = 4096  # vae with a patch autoencoder: frames of the closed-form fit
    reference_dropout: float = 0.1  # share of samples trained without the reference (CFG)
    snr_gamma: float = 0.0  # > 0: min-SNR-gamma loss weighting
    # the form of that weighting for v-prediction: "min_snr" min(SNR, g) / (SNR + 1) (Hang et
    # al.), "min_snr_plus_one" min(SNR + 1, g) / (SNR + 1) (Moore-AnimateAnyone's scripts: weight
    # 1, not 0, at zero terminal SNR); None: the family's (animate-anyone: min_snr_plus_one)
    snr_weighting: Optional[str] = None
    # [lo, hi]: train on timesteps lo..hi only (inclusive); None: all. For a model that is
    # sampled in one step from t = 999, training near that step is what counts
    timestep_range: Optional[list] = None
    # stage 2: weight of a loss on the frame-to-frame change of the predicted clean clip
    # against the true change (0: off)
    temporal_loss_weight: float = 0.0
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay ramps up as min(decay, (1+n)/(10+n))

    @property
    def id(self) -> str:
        """The stage's folder name and label: ``name`` if set, else ``kind``."""
        return self.name or self.kind


@dataclass
class TrainConfig:
    output_dir: str = "runs/kinemate"
    seed: int = 0
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    find_unused_parameters: bool = True
    num_workers: int = 0
    torch_threads: int = 0  # 0: leave torch's default
    log_every: int = 10
    checkpoint_every: int = 200  # steps
    checkpoint_every_minutes: float = 5.0  # also checkpoint when this much wall time has passed
    keep_checkpoints: int = 2
    sample_every: int = 0  # steps; 0 = only at the end of a stage
    sample_steps: int = 20  # sampler steps of the sample videos
    sample_seed: int = 1_000_000
    export_dir: Optional[str] = None  # where the final pipeline folder is written as well
    export_fp16: bool = False
    noise_offset: float = 0.0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stages: list = field(default_factory=lambda: [StageConfig()])

    def validate(self) -> "TrainConfig":
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ConfigError(
                f"mixed_precision={self.mixed_precision!r} is not valid; use 'no', 'fp16' or 'bf16'"
            )
        if self.data.kind not in ("synth", "folder"):
            raise ConfigError(f"data.kind={self.data.kind!r} is not valid; use 'synth' or 'folder'")
        if self.data.kind == "folder" and not self.data.root:
            raise ConfigError("data.kind is 'folder' but data.root is empty; set it to the dataset folder")
        if self.data.size % 8:
            raise ConfigError(f"data.size={self.data.size} must be a multiple of 8")
        if self.data.control not in ("openpose", "densepose"):
            raise ConfigError(
                f"data.control={self.data.control!r} is not valid; use 'openpose' or 'densepose'"
            )
        if self.data.pair_margin < 0:
            raise ConfigError(f"data.pair_margin={self.data.pair_margin} must be >= 0")
        if self.model.family not in TRAIN_FAMILIES:
            raise ConfigError(f"model.family={self.model.family!r} is not a design the trainer "
                              f"knows; use one of {', '.join(TRAIN_FAMILIES)}")
        if self.model.family == "animate-anyone" and self.data.control != "openpose":
            raise ConfigError("model.family animate-anyone is driven by skeleton maps: set "
                              "data.control to 'openpose'")
        if not self.stages:
            raise ConfigError("the config has no stages; add at least one of " + ", ".join(STAGE_KINDS))
        for s in self.stages:
            if s.kind not in STAGE_KINDS:
                raise ConfigError(f"stage kind {s.kind!r} is not valid; use one of {', '.join(STAGE_KINDS)}")
            if s.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", s.name):
                raise ConfigError(f"stage name {s.name!r} is not valid: it names a folder; use "
                                  "letters, digits, '_', '-' and '.'")
            if s.steps <= 0 or s.batch_size <= 0:
                raise ConfigError(f"stage {s.id}: steps and batch_size must be positive")
            if s.size is not None and (s.size <= 0 or s.size % 8):
                raise ConfigError(f"stage {s.id}: size={s.size} must be a positive multiple of 8")
            if s.warmup_steps < 0 or s.cooldown_steps < 0:
                raise ConfigError(f"stage {s.id}: warmup_steps and cooldown_steps must be >= 0")
            if s.snr_weighting is not None and s.snr_weighting not in SNR_WEIGHTINGS:
                raise ConfigError(f"stage {s.id}: snr_weighting={s.snr_weighting!r} is not valid; "
                                  f"use one of {', '.join(SNR_WEIGHTINGS)}")
            if s.temporal_loss_weight < 0:
                raise ConfigError(f"stage {s.id}: temporal_loss_weight must be >= 0")
            if s.timestep_range is not None:
                r = s.timestep_range
                if (len(r) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in r)
                        or not 0 <= r[0] <= r[1]):
                    raise ConfigError(
                        f"stage {s.id}: timestep_range={r!r} must be two integers [lo, hi] with "
                        "0 <= lo <= hi (e.g. [900, 999]), or null for all timesteps"
                    )
        ids = [s.id for s in self.stages]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"each stage needs its own name; got {ids} (give a repeated kind "
                              "a 'name', e.g. name: stage1_finetune)")
        if self.gradient_accumulation_steps < 1:
            raise ConfigError("gradient_accumulation_steps must be >= 1")
        return self


def stage_data(cfg: TrainConfig, stage: StageConfig) -> DataConfig:
    """The data section a stage reads: ``cfg.data`` at the stage's ``size`` if it has one."""
    if stage.size is None or stage.size == cfg.data.size:
        return cfg.data
    return dataclasses.replace(cfg.data, size=stage.size)


def _build(cls, data: Any, where: str):
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
        hints = get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {unknown} in {where or 'config'}; valid keys: {sorted(names)}"
            )
        kwargs = {}
        for name, value in data.items():
            kwargs[name] = _build(hints[name], value, f"{where}.{name}" if where else name)
        return cls(**kwargs)
    origin = get_origin(cls)
    if origin is list or cls is list:
        if not isinstance(data, list):
            raise ConfigError(f"{where} must be a list")
        if where.endswith("stages"):
            return [_build(StageConfig, d, f"{where}[{i}]") for i, d in enumerate(data)]
        return list(data)
    if origin is not None and type(None) in get_args(cls):  # Optional[X]
        if data is None:
            return None
        inner = [a for a in get_args(cls) if a is not type(None)][0]
        return _build(inner, data, where)
    if cls is float and isinstance(data, (int, float)) and not isinstance(data, bool):
        return float(data)
    if cls in (int, str, bool, dict) and not isinstance(data, cls):
        raise ConfigError(f"{where} must be of type {cls.__name__}, got {data!r}")
    if cls is int and isinstance(data, bool):
        raise ConfigError(f"{where} must be an integer, got {data!r}")
    return data


def config_from_dict(data: dict) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a plain (possibly nested) dict."""
    return _build(TrainConfig, data, "").validate()


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """Read a training config from ``.json`` or ``.yaml``/``.yml``. Relative paths inside the
    file stay relative to the current directory (run from the repository root)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a .json or .yaml file")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
        raise ConfigError(f"cannot parse {path}: {exc}; fix the syntax") from exc
    if overrides:
        data = _merge(data, overrides)
    return config_from_dict(data)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
