"""kinemate's on-disk model format (a folder), written and read for every family.

::

    kinemate.json                 index: format, family, name, control_kind, default_size,
                                  scheduler, options, components {name: folder},
                                  text_embeddings file; optional facts a model states
                                  about itself (notice, gpu_dtype), added by hand
    <component>/{config.json, model.safetensors}     one folder per network (incl. vae)
    text_embeddings.safetensors   "uncond", "cond": (1, 77, D) fixed text embeddings

A model without a CLIP text encoder (the bundled tiny one) stores its fixed embeddings; for
SD1.5 weights the empty-prompt embedding is computed once with CLIP and stored. Folders
written before families existed have no ``family``: they are MagicAnimate-design models.
"""

from __future__ import annotations

import json
from pathlib import Path


from kinemate.errors import WeightsError
from kinemate.io.atomic import atomic_folder
from kinemate.models.loading import TEXT_EMBEDDINGS, read_config, save_component
from kinemate.models.registry import LoadedModel

INDEX = "kinemate.json"
FORMAT = "kinemate-pipeline"
LEGACY_FAMILY = "magicanimate"  # the design of every folder written before the field existed


def read_index(root: Path) -> dict:
    """The ``kinemate.json`` of a model folder, checked to be one."""
    index = read_config(Path(root) / INDEX)
    if index.get("format") != FORMAT:
        raise WeightsError(f"{Path(root) / INDEX} is not a kinemate pipeline index (format "
                           f"{index.get('format')!r})")
    return index


def model_index(root: str | Path) -> dict:
    """The ``kinemate.json`` of a model folder as a dict; ``{}`` where there is none (e.g. a
    published release layout)."""
    try:
        index = json.loads((Path(root).expanduser() / INDEX).read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def index_family(index: dict) -> str:
    return index.get("family") or LEGACY_FAMILY


def load_folder(root: Path, *, device, dtype) -> LoadedModel:
    """Load a kinemate-format folder with its family's ``assemble``."""
    from kinemate.models.loading import load_component, read_text_embeddings
    from kinemate.models.registry import get_family

    index = read_index(root)
    family = get_family(index_family(index))
    comps = index.get("components", {})
    missing = [c for c in (*family.components, "vae") if c not in comps]
    if missing:
        raise WeightsError(f"{root / INDEX} lacks components {missing}; re-save the model")
    models = {name: load_component(name, root / comps[name], dtype=dtype, device=device)
              for name in comps}
    uncond = cond = None
    if index.get("text_embeddings"):
        uncond, cond = read_text_embeddings(root / index["text_embeddings"])
    denoiser = family.assemble({k: v for k, v in models.items() if k != "vae"}, uncond, cond)
    return LoadedModel(
        denoiser, models["vae"], index.get("scheduler") or family.scheduler,
        name=index.get("name", root.name), family=family.name,
        control_kind=index.get("control_kind", family.control_kinds[0]),
        default_size=tuple(index.get("default_size", (512, 512))),
        vae_scaling_factor=float(index.get("vae_scaling_factor", 0.18215)),
        options=index.get("options", {}), index=index)


def save_pipeline(pipe, folder: str | Path) -> Path:
    """Write ``pipe`` in the kinemate format to ``folder`` (atomically: built under a
    temporary name, an existing folder is replaced only when the new one is complete)."""
    from safetensors.torch import save_file

    with atomic_folder(folder) as tmp:
        components = pipe.components
        for name, module in components.items():
            save_component(module, tmp / name)
        index = {
            "format": FORMAT,
            "format_version": 1,
            "family": pipe.family,
            "name": pipe.name,
            "control_kind": pipe.control_kind,
            "default_size": list(pipe.default_size),
            "vae_scaling_factor": pipe.vae_scaling_factor,
            "scheduler": {**dict(pipe.scheduler.config),
                          "_class_name": type(pipe.scheduler).__name__},
            "options": pipe.options.to_dict(),
            "components": {name: name for name in components},
        }
        denoiser = pipe.denoiser
        uncond = getattr(denoiser, "text_embeds_uncond", None)
        cond = getattr(denoiser, "text_embeds_cond", None)
        if cond is not None and uncond is not None:
            save_file({"uncond": uncond.detach().float().cpu().contiguous(),
                       "cond": cond.detach().float().cpu().contiguous()},
                      str(tmp / TEXT_EMBEDDINGS))
            index["text_embeddings"] = TEXT_EMBEDDINGS
        (tmp / INDEX).write_text(json.dumps(index, indent=2, default=list))
    return Path(folder)


__all__ = ["FORMAT", "INDEX", "index_family", "load_folder", "model_index", "read_index",
           "save_pipeline"]
