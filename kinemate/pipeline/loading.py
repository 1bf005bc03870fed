"""``load_pipeline`` and the kinemate on-disk format.

Kinemate format (a folder)::

    kinemate.json                 index: name, control_kind, default_size, scheduler, options,
                                  components {name: folder}, text_embeddings file
    unet/{config.json, model.safetensors}
    appearance_encoder/{...}  controlnet/{...}  vae/{...}
    text_embeddings.safetensors   "uncond", "cond": (1, 77, D) fixed text embeddings

A model without a CLIP text encoder (the bundled tiny one) stores its fixed embeddings; for
SD1.5 weights the empty-prompt embedding is computed once with CLIP and stored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from kinemate.errors import UsageError, WeightsError
from kinemate.models.loading import (COMPONENT_CLASSES, is_release_layout, load_component,
                                     load_release, read_config, read_text_embeddings,
                                     save_component)
from kinemate.pipeline.animation import (MAGICANIMATE_SCHEDULER, AnimationPipeline,
                                         SamplingOptions, make_scheduler)

INDEX = "kinemate.json"
FORMAT = "kinemate-pipeline"
PACKAGE_ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_MODEL = "kinemate-tiny"
MODELS = ("magicanimate", "kinemate-tiny")


def bundled_model_dir(name: str = DEFAULT_MODEL) -> Path:
    return PACKAGE_ASSETS / name


def has_bundled_model(name: str = DEFAULT_MODEL) -> bool:
    return (bundled_model_dir(name) / INDEX).is_file()


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, str):
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):
            raise UsageError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16")
        return value
    return dtype


def model_index(weights: str | Path | None = None) -> dict:
    """The ``kinemate.json`` of a kinemate model folder (the bundled model when ``weights`` is
    None) as a dict; ``{}`` for a folder without a readable one (e.g. the MagicAnimate
    release layout)."""
    root = Path(weights).expanduser() if weights is not None else bundled_model_dir()
    try:
        index = json.loads((root / INDEX).read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def default_dtype(weights: str | Path | None = None, device: str | torch.device = "cpu") -> str:
    """The compute dtype to use when none is asked for: float32 on the CPU; on a GPU the
    ``gpu_dtype`` a kinemate model folder declares in its index (the bundled model declares
    bfloat16, because its activations overflow float16), else float16."""
    if str(device).split(":")[0] == "cpu":
        return "float32"
    declared = model_index(weights).get("gpu_dtype")
    return declared if declared in ("float32", "float16", "bfloat16") else "float16"


def load_pipeline(weights: str | Path | None = None, *, model: str | None = None,
                  device: str | torch.device = "cpu", dtype=torch.float32) -> AnimationPipeline:
    """Load an :class:`AnimationPipeline` from a folder.

    ``weights``: the MagicAnimate release layout (``stable-diffusion-v1-5/``, ``sd-vae-ft-mse/``,
    ``MagicAnimate/``) or a kinemate-format folder (``kinemate.json``). Default: the bundled
    ``kinemate/assets/kinemate-tiny``. ``model`` ("magicanimate" or "kinemate-tiny") only
    checks/chooses the default. CPU float32 always works; use ``device="cuda",
    dtype=torch.float16`` for speed."""
    dtype = _dtype(dtype)
    if model is not None and model not in MODELS:
        raise UsageError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if weights is None:
        if model == "magicanimate":
            raise UsageError("--model magicanimate needs --weights DIR (download the release with "
                             "'kinemate weights download magicanimate --dir DIR')")
        weights = bundled_model_dir(model or DEFAULT_MODEL)
        if not (weights / INDEX).is_file():
            raise WeightsError(f"the bundled model is not installed at {weights}; pass --weights DIR")
    root = Path(weights).expanduser()
    if not root.is_dir():
        raise WeightsError(f"weights folder {root} does not exist; pass the folder that holds the "
                           "model (see 'kinemate weights download')")
    if (root / INDEX).is_file():
        return _load_kinemate(root, device=device, dtype=dtype)
    if is_release_layout(root):
        parts = load_release(root, dtype=dtype, device=device)
        scheduler = dict(MAGICANIMATE_SCHEDULER)
        if parts.meta.get("inference_config"):
            from kinemate.models.loading import read_inference_config

            scheduler.update(read_inference_config(parts.meta["inference_config"])
                             .get("noise_scheduler_kwargs") or {})
        return AnimationPipeline(
            parts.unet, parts.appearance_encoder, parts.controlnet, parts.vae,
            make_scheduler(scheduler),
            text_embeds_uncond=parts.text_embeds_uncond, text_embeds_cond=parts.text_embeds_cond,
            name="magicanimate", control_kind="densepose", default_size=(512, 512))
    raise WeightsError(f"{root} is neither a kinemate model folder ({INDEX}) nor the MagicAnimate "
                       "release layout (stable-diffusion-v1-5/, sd-vae-ft-mse/, MagicAnimate/)")


def _load_kinemate(root: Path, *, device, dtype) -> AnimationPipeline:
    index = read_config(root / INDEX)
    if index.get("format") != FORMAT:
        raise WeightsError(f"{root / INDEX} is not a kinemate pipeline index (format "
                           f"{index.get('format')!r})")
    comps = index.get("components", {})
    missing = [c for c in COMPONENT_CLASSES if c not in comps]
    if missing:
        raise WeightsError(f"{root / INDEX} lacks components {missing}; re-save the model")
    models = {name: load_component(name, root / comps[name], dtype=dtype, device=device)
              for name in COMPONENT_CLASSES}
    uncond = cond = None
    if index.get("text_embeddings"):
        uncond, cond = read_text_embeddings(root / index["text_embeddings"])
    known = {f.name for f in dataclasses.fields(SamplingOptions)}
    options = SamplingOptions(**{k: v for k, v in index.get("options", {}).items() if k in known})
    return AnimationPipeline(
        models["unet"], models["appearance_encoder"], models["controlnet"], models["vae"],
        make_scheduler(index.get("scheduler")), text_embeds_uncond=uncond, text_embeds_cond=cond,
        name=index.get("name", root.name), control_kind=index.get("control_kind", "densepose"),
        default_size=tuple(index.get("default_size", (512, 512))),
        vae_scaling_factor=float(index.get("vae_scaling_factor", 0.18215)), options=options)


def save_pipeline(pipe: AnimationPipeline, folder: str | Path) -> Path:
    """Write ``pipe`` in the kinemate format to ``folder`` (atomically: a temporary sibling
    folder renamed at the end; an existing folder is replaced)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.kinemate-tmp-", dir=folder.parent))
    try:
        for name in COMPONENT_CLASSES:
            save_component(getattr(pipe, name), tmp / name)
        index = {
            "format": FORMAT,
            "format_version": 1,
            "name": pipe.name,
            "control_kind": pipe.control_kind,
            "default_size": list(pipe.default_size),
            "vae_scaling_factor": pipe.vae_scaling_factor,
            "scheduler": {**dict(pipe.scheduler.config),
                          "_class_name": type(pipe.scheduler).__name__},
            "options": dataclasses.asdict(pipe.options),
            "components": {name: name for name in COMPONENT_CLASSES},
        }
        if pipe.text_embeds_cond is not None and pipe.text_embeds_uncond is not None:
            from safetensors.torch import save_file

            save_file({"uncond": pipe.text_embeds_uncond.detach().float().cpu().contiguous(),
                       "cond": pipe.text_embeds_cond.detach().float().cpu().contiguous()},
                      str(tmp / "text_embeddings.safetensors"))
            index["text_embeddings"] = "text_embeddings.safetensors"
        (tmp / INDEX).write_text(json.dumps(index, indent=2, default=list))
        if folder.exists():
            old = folder.with_name(f".{folder.name}.kinemate-old-{os.getpid()}")
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
