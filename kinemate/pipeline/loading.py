"""``load_pipeline``: a model folder (or a family's bundled model) -> :class:`AnimationPipeline`.

Which family a folder belongs to comes from the registry (:mod:`kinemate.models.registry`):
a kinemate-format folder names its family in ``kinemate.json``; a published layout is
recognised by the family that declares it. The on-disk format is :mod:`kinemate.pipeline.format`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kinemate.errors import UsageError, WeightsError
from kinemate.models.registry import DEFAULT_FAMILY, LoadedModel, detect_family, get_family
from kinemate.pipeline.animation import AnimationPipeline, make_scheduler
from kinemate.pipeline.format import INDEX, index_family, load_folder, model_index
from kinemate.pipeline.options import SamplingOptions

DEFAULT_MODEL = DEFAULT_FAMILY


def bundled_model_dir(name: str = DEFAULT_MODEL) -> Path | None:
    """The folder of a model shipped with kinemate, or None for a family without one."""
    return get_family(name).bundled


def has_bundled_model(name: str = DEFAULT_MODEL) -> bool:
    folder = bundled_model_dir(name)
    return folder is not None and (folder / INDEX).is_file()


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, str):
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):
            raise UsageError(f"unknown `dtype` {dtype!r}; use float32, float16 or bfloat16")
        return value
    return dtype


def resolve_weights(weights: str | Path | None, model: str | None) -> Path:
    """The folder to load: ``weights``, else the bundled model of ``model`` (default:
    kinemate-tiny). A ``model`` that ships no weights needs ``weights``."""
    if model is not None:
        family = get_family(model)  # unknown names fail here, listing the known ones
    if weights is None:
        family = get_family(model or DEFAULT_MODEL)
        if family.bundled is None:
            raise UsageError(f"`model` {family.name} needs `weights` DIR ({family.weights_hint})")
        if not (family.bundled / INDEX).is_file():
            raise WeightsError(f"the bundled model is not installed at {family.bundled}; pass "
                               "`weights` DIR")
        return family.bundled
    root = Path(weights).expanduser()
    if not root.is_dir():
        raise WeightsError(f"weights folder {root} does not exist; pass the folder that holds the "
                           "model (see 'kinemate weights download')")
    return root


def default_dtype(weights: str | Path | None = None, device: str | torch.device = "cpu",
                  model: str | None = None) -> str:
    """The compute dtype to use when none is asked for: float32 on the CPU; on a GPU the
    ``gpu_dtype`` a kinemate model folder declares in its index (the bundled model declares
    bfloat16, because its activations overflow float16), else float16."""
    if str(device).split(":")[0] == "cpu":
        return "float32"
    try:
        root = resolve_weights(weights, model)
    except (UsageError, WeightsError):
        return "float16"
    declared = model_index(root).get("gpu_dtype")
    return declared if declared in ("float32", "float16", "bfloat16") else "float16"


def load_model(weights: str | Path | None = None, *, model: str | None = None,
               device: str | torch.device = "cpu", dtype=torch.float32) -> LoadedModel:
    """The family's networks and facts for a folder (see :func:`load_pipeline`)."""
    dtype = _dtype(dtype)
    root = resolve_weights(weights, model)
    if (root / INDEX).is_file():
        loaded = load_folder(root, device=device, dtype=dtype)
    else:
        family = detect_family(root)
        if family is None:
            layouts = "; ".join(f"{f.name}: {f.weights_hint}" for f in _release_families())
            raise WeightsError(f"{root} is neither a kinemate model folder ({INDEX}) nor a "
                               f"published layout kinemate knows ({layouts})")
        loaded = family.load_release(root, device=device, dtype=dtype)
    if model is not None and model != loaded.family and model != loaded.name:
        raise UsageError(f"{root} holds a {loaded.family} model ({loaded.name}), not "
                         f"`model` {model}; drop `model` or pass that model's weights")
    return loaded


def _release_families():
    from kinemate.models.registry import families

    return [f for f in families() if f.detect is not None]


def load_pipeline(weights: str | Path | None = None, *, model: str | None = None,
                  device: str | torch.device = "cpu", dtype=torch.float32,
                  preset: str | None = None) -> AnimationPipeline:
    """Load an :class:`AnimationPipeline` from a folder.

    ``weights``: a published layout a family knows (e.g. MagicAnimate's release:
    ``stable-diffusion-v1-5/``, ``sd-vae-ft-mse/``, ``MagicAnimate/``) or a kinemate-format
    folder (``kinemate.json``). Without it, the bundled model of ``model`` (default
    kinemate-tiny). ``model`` names a family of the registry and is checked against what the
    folder holds. CPU float32 always works; use ``device="cuda", dtype=torch.float16`` (or the
    model's ``gpu_dtype``) for speed. ``preset`` names one of the family's parameter sets
    (Text2Video-Zero: ``official``, ``diffusers-docs``); the preset is in ``pipe.index``."""
    loaded = load_model(weights, model=model, device=device, dtype=dtype)
    if preset is not None:
        family = get_family(loaded.family)
        if family.apply_preset is None:
            raise UsageError(f"{loaded.family} models have no presets; leave `preset` out")
        loaded = family.apply_preset(loaded, preset)
    return AnimationPipeline(
        loaded.denoiser, loaded.vae, make_scheduler(loaded.scheduler), name=loaded.name,
        family=loaded.family, control_kind=loaded.control_kind,
        default_size=loaded.default_size, vae_scaling_factor=loaded.vae_scaling_factor,
        options=SamplingOptions.from_model(loaded.options), index=loaded.index,
        text_options=None if loaded.text_options is None
        else SamplingOptions.from_model(loaded.text_options))


__all__ = ["DEFAULT_MODEL", "bundled_model_dir", "default_dtype", "has_bundled_model",
           "index_family", "load_model", "load_pipeline", "model_index", "resolve_weights"]
