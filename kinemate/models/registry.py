"""The one registry of model families: ``--model NAME``, ``load_pipeline``, ``kinemate weights``
and the service all find a family here.

A family is one published system (or a kinemate model of one) and lives in one package under
``kinemate/models/`` that defines a :class:`Family`: its name, the control it takes, how to
load its weights (its release layout, or kinemate's own format), the family-specific part of
a sampling step (a *denoiser*, see :mod:`kinemate.models.magicanimate.denoiser`) and the
published weight sets ``kinemate weights`` may download. To add one, write the package and
add one line to :data:`FAMILY_MODULES` (or call :func:`register_family` from your own code);
no front end changes. docs/engine.md, "Adding a model family", walks through MagicAnimate.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinemate.errors import UsageError, WeightsError

# name -> the module whose FAMILIES tuple defines it (imported only when the family is used)
FAMILY_MODULES: dict[str, str] = {
    "animate-anyone": "kinemate.models.animate_anyone",
    "dreampose": "kinemate.models.dreampose",
    "kinemate-photo": "kinemate.models.photo",
    "kinemate-tiny": "kinemate.models.magicanimate",
    "magicanimate": "kinemate.models.magicanimate",
    "text2video-zero": "kinemate.models.text2video_zero",
}
# what runs when neither a model nor weights are given: the photo renderer (no weights)
DEFAULT_FAMILY = "kinemate-photo"
_REGISTERED: dict[str, "Family"] = {}


@dataclass
class LoadedModel:
    """A loaded model, ready to be wrapped by the engine (:func:`kinemate.load_pipeline`)."""

    denoiser: Any  # the family's step (start_video, start_step, frame_features, predict, ...)
    vae: Any  # encode(x).latent_dist.mean / decode(z).sample, as diffusers' AutoencoderKL
    scheduler: dict  # a diffusers scheduler config with "_class_name"
    name: str
    family: str
    control_kind: str
    default_size: tuple[int, int] = (512, 512)
    vae_scaling_factor: float = 0.18215
    options: dict = field(default_factory=dict)  # the model's sampling options (kinemate.json)
    index: dict = field(default_factory=dict)  # the kinemate.json it came from, if any
    # options of a model that can also sample without controls (text only), for such calls
    text_options: dict | None = None


@dataclass(frozen=True)
class Family:
    """One model family (see the module docstring).

    ``assemble(components, text_embeds_uncond, text_embeds_cond)`` builds the denoiser from
    the networks of a kinemate-format folder (``components`` names them; ``vae`` is the
    engine's). ``load_release(root, device=, dtype=)`` loads the family's published layout,
    which ``detect(root)`` recognises. ``bundled``: a kinemate-format folder shipped with
    kinemate (then no weights are needed). ``weight_sets``: what ``kinemate weights download
    NAME`` fetches (:class:`kinemate.hub.WeightSet`). ``renderer``: for a family that draws
    frames itself instead of sampling a diffusion model (``kinemate-photo``), a factory of
    its renderer, which the engine wraps in a
    :class:`~kinemate.pipeline.render.RenderPipeline`; such a family needs no weights."""

    name: str
    summary: str
    control_kinds: tuple[str, ...]
    components: tuple[str, ...]
    assemble: Callable[..., Any]
    load_release: Callable[..., LoadedModel] | None = None
    detect: Callable[[Path], bool] | None = None
    bundled: Path | None = None
    weight_sets: tuple = ()
    weights_hint: str = ""
    scheduler: dict | None = None  # the family's default scheduler config
    # named parameter sets (e.g. Text2Video-Zero's "official", "diffusers-docs"):
    # ``apply_preset(loaded, name)`` returns the LoadedModel set up for preset ``name``
    presets: tuple[str, ...] = ()
    apply_preset: Callable[..., LoadedModel] | None = None
    renderer: Callable[[], Any] | None = None
    # import_files(files, dest, echo=) -> record: checks and lays out files a user downloaded
    # by hand (``kinemate weights import NAME``; DreamPose's Google Drive checkpoints)
    import_files: Callable[..., Any] | None = None

    @property
    def needs_weights(self) -> bool:
        if self.renderer is not None:
            return False
        return self.bundled is None or not (self.bundled / "kinemate.json").is_file()


def register_family(family: Family) -> Family:
    """Add (or replace) a family at run time (for families that live outside kinemate)."""
    _REGISTERED[family.name] = family
    return family


def family_names() -> tuple[str, ...]:
    """Every family name, without importing any family."""
    return tuple(sorted({*FAMILY_MODULES, *_REGISTERED}))


def get_family(name: str) -> Family:
    """The family called ``name``, or a :class:`UsageError` listing the known ones."""
    if name not in _REGISTERED:
        module = FAMILY_MODULES.get(name)
        if module is None:
            raise UsageError(f"unknown model {name!r}; choose one of "
                             f"{', '.join(family_names())}")
        for family in importlib.import_module(module).FAMILIES:
            _REGISTERED.setdefault(family.name, family)
    if name not in _REGISTERED:
        raise WeightsError(f"{FAMILY_MODULES[name]} does not define the family {name!r}")
    return _REGISTERED[name]


def families() -> list[Family]:
    return [get_family(name) for name in family_names()]


def detect_family(root: Path) -> Family | None:
    """The family whose published layout ``root`` holds, if any."""
    for family in families():
        if family.detect is not None and family.detect(root):
            return family
    return None
