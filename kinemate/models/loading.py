"""Checkpoint loading with strict accounting, for the MagicAnimate release layout and for
kinemate's own format.

Strict accounting: every parameter/buffer of the model is filled from a file, every tensor of
every file is used, shapes agree — otherwise a :class:`~kinemate.errors.WeightsError` names
what is missing, unexpected or mis-shaped. (The official loader's ``strict=False`` silently
loads nothing from a wrongly named motion checkpoint; this one refuses.) Files may be
``.safetensors`` or torch pickles (``.bin``/``.ckpt``/``.pt``), fp16 or fp32: tensors are cast
to the requested dtype after reading.

Release layout (``root``)::

    stable-diffusion-v1-5/unet/{config.json, diffusion_pytorch_model.(bin|safetensors)}
    stable-diffusion-v1-5/{text_encoder/, tokenizer/}      (optional: CLIP for the empty prompt)
    sd-vae-ft-mse/{config.json, diffusion_pytorch_model.(safetensors|bin)}
    MagicAnimate/appearance_encoder/{config.json, diffusion_pytorch_model.(safetensors|bin)}
    MagicAnimate/densepose_controlnet/{config.json, diffusion_pytorch_model.(safetensors|bin)}
    MagicAnimate/temporal_attention/temporal_attention.ckpt
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from kinemate.errors import WeightsError
from kinemate.models.appearance import AppearanceEncoder
from kinemate.models.motion import sinusoidal_table
from kinemate.models.unet3d import MAGICANIMATE_MOTION_KWARGS, VideoUNet

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
        raise WeightsError(f"weights file {path} does not exist; check the --weights folder "
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


# -- the motion-module checkpoint ----------------------------------------------------------
def motion_key(key: str) -> str:
    """A motion checkpoint key under the video UNet's naming: a leading ``module.`` and/or
    ``unet.`` (DataParallel / training-wrapper prefixes the official loader strips) removed."""
    for prefix in ("module.", "unet."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix):] if key.startswith(prefix) else key


def motion_module_tensors(path: Path, unet_shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Tensors of ``temporal_attention.ckpt`` under the video UNet's key names, chosen the way
    the official loader chooses them (optionally inside ``{"state_dict": ...}``):

    A. a leading ``module.`` stripped; if every key is a video-UNet key of the right shape, all
       of them load -- spatial tensors too, over the SD1.5 UNet's (the release file is 5.11 GB
       on the hub, the size of the whole 3D UNet, so it is believed to carry fine-tuned spatial
       weights as well as the motion modules);
    B. otherwise only keys containing ``motion_modules`` load, a leading ``unet.`` stripped;
       spatial UNet tensors under a ``unet.`` prefix are skipped (as officially), with a log line.

    Unlike the official loader, a tensor that is neither (an unknown key, a wrong shape, a
    misnamed module) is a WeightsError naming it, and missing motion modules are reported by
    the caller's strict load instead of silently keeping random weights."""
    raw = {_strip(key, "module."): value for key, value in read_tensors(path).items()}
    if raw and all(k in unet_shapes and tuple(v.shape) == tuple(unet_shapes[k])
                   for k, v in raw.items()):
        spatial = sum(".motion_modules." not in k for k in raw)
        if spatial:
            log.info("%s also holds %d spatial UNet tensors; they replace the SD1.5 UNet's "
                     "(as the official loader does)", path, spatial)
        return raw
    out = {_strip(k, "unet."): v for k, v in raw.items() if "motion_modules" in k}
    skipped = [k for k in raw if "motion_modules" not in k]
    foreign = [k for k in out if ".motion_modules." not in k or k not in unet_shapes]
    foreign += [k for k in skipped if _strip(k, "unet.") not in unet_shapes]
    if foreign:
        raise WeightsError(f"{path} holds {len(foreign)} tensors that are not motion-module "
                           f"weights of this UNet: {_listing(foreign)}; expected keys like "
                           "down_blocks.0.motion_modules.0.temporal_transformer.norm.weight")
    wrong = [k for k, v in out.items() if tuple(v.shape) != tuple(unet_shapes[k])]
    if wrong:
        raise WeightsError(f"{path}: {len(wrong)} motion-module tensors have the wrong shape "
                           f"for this UNet ({_listing(wrong)}); is the motion-module config "
                           "(inference.yaml) the one these weights were trained with?")
    if skipped:
        log.warning("%s: %d spatial UNet tensors under a 'unet.' prefix are not loaded (the "
                    "official loader skips them too)", path, len(skipped))
    return out


def positional_defaults(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The computed sin/cos tables for every ``pos_encoder.pe`` buffer (a file may omit them)."""
    return {k: sinusoidal_table(v.shape[1], v.shape[2]) for k, v in unet.state_dict().items()
            if k.endswith("pos_encoder.pe")}


# -- the release layout --------------------------------------------------------------------
@dataclass
class Components:
    """The networks of one animation model, loaded and ready (eval mode)."""

    unet: VideoUNet
    appearance_encoder: AppearanceEncoder
    controlnet: nn.Module
    vae: nn.Module
    text_embeds_uncond: torch.Tensor | None = None  # (1, 77, D)
    text_embeds_cond: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)


def is_release_layout(root: Path) -> bool:
    root = Path(root)
    return (root / "MagicAnimate").is_dir() and (root / "stable-diffusion-v1-5").is_dir()


def load_video_unet(unet_dir: Path, motion_ckpt: Path, *, motion: dict | None = None,
                    dtype=torch.float32, device="cpu") -> VideoUNet:
    """SD ``unet/`` folder (config + .bin or .safetensors) + ``temporal_attention.ckpt``."""
    config = read_config(unet_dir / "config.json")
    unet = build_on_meta(lambda: VideoUNet.from_2d_config(config, motion))
    shapes = {k: v.shape for k, v in unet.state_dict().items()}
    spatial_file = find_weights(unet_dir)
    spatial = read_tensors(spatial_file)
    stray = [k for k in spatial if ".motion_modules." in k]
    if stray:
        raise WeightsError(f"{spatial_file} unexpectedly holds motion-module tensors "
                           f"({_listing(stray)}); it must be the plain SD1.5 UNet")
    tensors = {**spatial, **motion_module_tensors(motion_ckpt, shapes)}
    return load_strict(unet, tensors, what=f"{spatial_file} + {motion_ckpt}",
                       defaults=positional_defaults(unet), dtype=dtype, device=device)


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


def load_vae(folder: Path, *, dtype=torch.float32, device="cpu") -> nn.Module:
    from diffusers import AutoencoderKL

    config = read_config(folder / "config.json")
    model = build_on_meta(lambda: AutoencoderKL.from_config(config))
    path = find_weights(folder)
    return load_strict(model, read_tensors(path), what=str(path), dtype=dtype, device=device)


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


def read_inference_config(path: Path) -> dict:
    """The official ``configs/inference/inference.yaml`` (YAML or JSON): a dict with
    ``unet_additional_kwargs`` (motion modules) and ``noise_scheduler_kwargs``."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            config = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise WeightsError(f"cannot read inference config {path}: {exc}") from None
    else:
        config = read_config(path)
    if not isinstance(config, dict) or "unet_additional_kwargs" not in config:
        raise WeightsError(f"{path} is not a MagicAnimate inference config (no "
                           "unet_additional_kwargs)")
    return config


def find_inference_config(root: Path) -> Path | None:
    """An inference config placed in the weights root (``inference.yaml``/``.json`` or any
    ``*.json``/``*.yaml`` holding ``unet_additional_kwargs``); None if there is none."""
    for path in sorted(Path(root).glob("*")):
        if path.suffix not in (".json", ".yaml", ".yml") or not path.is_file():
            continue
        try:
            read_inference_config(path)
        except WeightsError:
            continue
        return path
    return None


def load_release(root: Path, *, dtype=torch.float32, device="cpu",
                 motion: dict | None = None, vae_dir: Path | None = None,
                 inference_config: Path | None = None) -> Components:
    """Load the MagicAnimate release layout under ``root`` (see module docstring).

    Motion-module hyper-parameters: ``motion`` (the ``unet_additional_kwargs`` dict), else
    those of ``inference_config`` or of an inference config found in ``root``, else the
    official ones (``MAGICANIMATE_MOTION_KWARGS``).

    Without ``stable-diffusion-v1-5/text_encoder`` the text embeddings come from
    ``root/text_embeddings.safetensors`` if present, else stay None and must be given to the
    pipeline (the golden cases inject them)."""
    root = Path(root)
    if not is_release_layout(root):
        raise WeightsError(f"{root} is not a MagicAnimate weights folder (expected "
                           "stable-diffusion-v1-5/, sd-vae-ft-mse/ and MagicAnimate/ in it); run "
                           "'kinemate weights download magicanimate --dir DIR' and pass that DIR")
    sd = root / "stable-diffusion-v1-5"
    ma = root / "MagicAnimate"
    if vae_dir is None:
        vae_dir = root / "sd-vae-ft-mse"
        if not vae_dir.is_dir():
            vae_dir = sd / "vae"  # the official fallback when no separate VAE is given
    inference_config = inference_config or find_inference_config(root)
    if motion is None and inference_config is not None:
        motion = read_inference_config(inference_config)["unet_additional_kwargs"]
    unet = load_video_unet(sd / "unet", ma / "temporal_attention" / "temporal_attention.ckpt",
                           motion=motion or MAGICANIMATE_MOTION_KWARGS, dtype=dtype, device=device)
    appearance = load_appearance_encoder(ma / "appearance_encoder", dtype=dtype, device=device)
    controlnet = load_controlnet(ma / "densepose_controlnet", dtype=dtype, device=device)
    vae = load_vae(vae_dir, dtype=dtype, device=device)
    uncond = cond = None
    if (sd / "text_encoder").is_dir():
        uncond = cond = empty_prompt_embedding(sd, device=device)
    elif (root / TEXT_EMBEDDINGS).is_file():  # kinemate extension: stored text embeddings
        uncond, cond = read_text_embeddings(root / TEXT_EMBEDDINGS)
    for m in (unet, appearance, controlnet, vae):
        m.eval().requires_grad_(False)
    return Components(unet, appearance, controlnet, vae, uncond, cond,
                      meta={"format": "magicanimate-release", "root": str(root),
                            "inference_config": str(inference_config) if inference_config else None})


# -- kinemate format -----------------------------------------------------------------------
COMPONENT_CLASSES = ("unet", "appearance_encoder", "controlnet", "vae")


def build_component(name: str, config: dict) -> nn.Module:
    """Build one component (random weights) from its saved config."""
    if name == "unet":
        return VideoUNet.from_config(config)
    if name == "appearance_encoder":
        return AppearanceEncoder.from_unet_config(config)
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
    config = {k: v for k, v in dict(model.config).items() if k != "_name_or_path"}
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
    return model.eval().requires_grad_(False)
