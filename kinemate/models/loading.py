"""Checkpoint loading with strict accounting (shared by every family), and kinemate's own
format.

Strict accounting: every parameter/buffer of the model is filled from a file, every tensor of
every file is used, shapes agree — otherwise a :class:`~kinemate.errors.WeightsError` names
what is missing, unexpected or mis-shaped. (The official loader's ``strict=False`` silently
loads nothing from a wrongly named motion checkpoint; this one refuses.) Files may be
``.safetensors`` or torch pickles (``.bin``/``.ckpt``/``.pt``), fp16 or fp32: tensors are cast
to the requested dtype after reading.

The MagicAnimate release layout and its key mapping are in
:mod:`kinemate.models.magicanimate.checkpoint`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from kinemate.errors import WeightsError
from kinemate.models.appearance import AppearanceEncoder
from kinemate.models.motion import sinusoidal_table
from kinemate.models.unet3d import VideoUNet

log = logging.getLogger(__name__)

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                "model.safetensors")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")


# -- reading files -------------------------------------------------------------------------
def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file or a torch pickle (a state dict, possibly wrapped in
    ``{"state_dict": ...}``; non-tensor entries such as ``global_step`` are dropped)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; check the `weights` folder "
                           "(see 'kinemate weights download')")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as exc:  # corrupt/truncated/unsafe pickle
        raise WeightsError(f"cannot read weights file {path}: {exc}; re-download it") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        if "global_step" in obj:
            log.info("%s: global_step %s", path, obj["global_step"])
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}


def find_weights(folder: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"no weights file in {folder} (expected one of {', '.join(WEIGHT_NAMES)}); "
                       "check the weights folder layout (docs/engine.md)")


def read_config(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise WeightsError(f"missing config file {path}; check the weights folder layout") from None
    except json.JSONDecodeError as exc:
        raise WeightsError(f"config file {path} is not valid JSON: {exc}") from None


# -- strict assignment ---------------------------------------------------------------------
def _listing(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_strict(model: nn.Module, tensors: dict[str, torch.Tensor], *, what: str,
                defaults: dict[str, torch.Tensor] | None = None,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> nn.Module:
    """Fill every parameter and buffer of ``model`` from ``tensors`` (keys = state-dict
    names), casting floating tensors to ``dtype``. ``defaults`` may supply tensors a file
    is allowed to omit. Works on a model built on the meta device (tensors are assigned)."""
    expected = model.state_dict()
    defaults = defaults or {}
    missing = [k for k in expected if k not in tensors and k not in defaults]
    unexpected = [k for k in tensors if k not in expected]
    mismatched = [f"{k} {tuple(tensors[k].shape)} != {tuple(expected[k].shape)}"
                  for k in tensors if k in expected and tensors[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} with wrong shapes: {_listing(mismatched, 4)}")
    if problems:
        raise WeightsError(f"{what} does not match the model ({'; '.join(problems)}); the file is "
                           "for another architecture/config or incomplete — use the matching "
                           "checkpoint and config.json")
    full = {}
    for key, ref in expected.items():
        t = tensors.get(key, defaults.get(key))
        t = t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
        full[key] = t
    model.load_state_dict(full, strict=True, assign=True)
    return model


def build_on_meta(factory: Callable[[], nn.Module]) -> nn.Module:
    """Construct without allocating or initialising weights (they are loaded right after)."""
    with torch.device("meta"):
        return factory()


def positional_defaults(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The computed sin/cos tables for every ``pos_encoder.pe`` buffer (a file may omit them)."""
    return {k: sinusoidal_table(v.shape[1], v.shape[2]) for k, v in unet.state_dict().items()
            if k.endswith("pos_encoder.pe")}



# -- diffusers components -----------------------------------------------------------------
def load_appearance_encoder(folder: Path, *, dtype=torch.float32, device="cpu") -> AppearanceEncoder:
    config = read_config(folder / "config.json")
    model = build_on_meta(lambda: AppearanceEncoder.from_unet_config(config))
    path = find_weights(folder)
    return load_strict(model, read_tensors(path), what=str(path), dtype=dtype, device=device)


def load_controlnet(folder: Path, *, dtype=torch.float32, device="cpu") -> nn.Module:
    from diffusers import ControlNetModel

    config = read_config(folder / "config.json")
    model = build_on_meta(lambda: ControlNetModel.from_config(config))
    path = find_weights(folder)
    return load_strict(model, read_tensors(path), what=str(path), dtype=dtype, device=device)


# VAE attention names of diffusers < 0.14 (sd-vae-ft-mse's files were written by 0.4.2)
_OLD_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def vae_key(key: str) -> str:
    """A VAE key under current diffusers names: the attention's old ``query``/``key``/
    ``value``/``proj_attn`` renamed ``to_q``/``to_k``/``to_v``/``to_out.0``, as diffusers
    itself renames them on load."""
    parts = key.split(".")
    if len(parts) >= 3 and "attentions" in parts and parts[-2] in _OLD_VAE_ATTENTION:
        return ".".join([*parts[:-2], _OLD_VAE_ATTENTION[parts[-2]], parts[-1]])
    return key


def load_vae(folder: Path, *, dtype=torch.float32, device="cpu") -> nn.Module:
    from diffusers import AutoencoderKL

    config = read_config(folder / "config.json")
    model = build_on_meta(lambda: AutoencoderKL.from_config(config))
    path = find_weights(folder)
    tensors = {vae_key(k): v for k, v in read_tensors(path).items()}
    return load_strict(model, tensors, what=str(path), dtype=dtype, device=device)


def empty_prompt_embedding(sd_root: Path, *, device="cpu") -> torch.Tensor:
    """CLIP last hidden state of the empty prompt ``(1, 77, D)`` (computed once at load)."""
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as exc:  # pragma: no cover
        raise WeightsError(f"transformers is needed for the CLIP text encoder: {exc}") from exc
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(sd_root / "tokenizer"), local_files_only=True)
        encoder = CLIPTextModel.from_pretrained(str(sd_root / "text_encoder"),
                                                local_files_only=True).to(device).eval()
    except Exception as exc:
        raise WeightsError(f"cannot load the CLIP text encoder/tokenizer from {sd_root}: {exc}; "
                           "re-download stable-diffusion-v1-5 (text_encoder/, tokenizer/)") from exc
    ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids.to(device)
    with torch.no_grad():
        embeds = encoder(ids)[0].float().cpu()
    del encoder
    return embeds


TEXT_EMBEDDINGS = "text_embeddings.safetensors"


def read_text_embeddings(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uncond, cond)`` ``(1, 77, D)`` from a safetensors file with exactly those two names."""
    tensors = read_tensors(path)
    if set(tensors) != {"uncond", "cond"}:
        raise WeightsError(f"{path} must hold exactly 'uncond' and 'cond' text embeddings "
                           f"(found {sorted(tensors)})")
    return tensors["uncond"].float(), tensors["cond"].float()


# -- kinemate format -----------------------------------------------------------------------
COMPONENT_CLASSES = ("unet", "appearance_encoder", "controlnet", "vae", "reference_unet",
                     "pose_guider", "image_encoder")


def build_component(name: str, config: dict) -> nn.Module:
    """Build one component (random weights) from its saved config. The names are an
    allow-list (nothing is imported from a model folder): MagicAnimate's ``unet``,
    ``appearance_encoder``, ``controlnet``; Animate Anyone's ``reference_unet``,
    ``pose_guider``, ``image_encoder`` (transformers' CLIP vision model); ``vae``."""
    if name == "unet":
        return VideoUNet.from_config(config)
    if name in ("appearance_encoder", "reference_unet"):  # the config says which kind
        return AppearanceEncoder.from_unet_config(config)
    if name == "pose_guider":
        from kinemate.models.animate_anyone.networks import PoseGuider

        return PoseGuider.from_config(config)
    if name == "image_encoder":
        from kinemate.models.animate_anyone.networks import image_encoder

        return image_encoder(config)
    if name == "controlnet":
        from diffusers import ControlNetModel

        return ControlNetModel.from_config(config)
    if name == "vae":
        if config.get("_class_name") == "PatchAutoencoder":
            from kinemate.models.patch_vae import PatchAutoencoder

            return PatchAutoencoder.from_config(config)
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_config(config)
    raise WeightsError(f"unknown component {name!r} in kinemate.json")


def save_component(model: nn.Module, folder: Path) -> None:
    """``folder/config.json`` + ``folder/model.safetensors`` (fp32 unless the model is fp16)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    # "_name_or_path" is where diffusers loaded the model from: a machine-local path that
    # says nothing about the saved model
    # "_use_default_values" is diffusers' note of the keys left at their defaults when the
    # model was built; on load it would drop values set since (register_to_config), so the
    # resolved values are saved without it
    raw = model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)
    config = {k: v for k, v in raw.items() if k not in ("_name_or_path", "_use_default_values")}
    config["_class_name"] = type(model).__name__
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=list))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))


def load_component(name: str, folder: Path, *, dtype=torch.float32, device="cpu") -> nn.Module:
    config = read_config(folder / "config.json")
    model = build_on_meta(lambda: build_component(name, config))
    path = find_weights(folder)
    defaults = positional_defaults(model) if name == "unet" else None
    model = load_strict(model, read_tensors(path), what=str(path), defaults=defaults,
                        dtype=dtype, device=device)
    if name == "image_encoder":
        from kinemate.models.animate_anyone.networks import restore_position_ids

        restore_position_ids(model)
    return model.eval().requires_grad_(False)
