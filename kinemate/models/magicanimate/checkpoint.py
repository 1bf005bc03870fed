"""The MagicAnimate release layout: its files, their key mapping and strict loading.

Release layout (``root``)::

    stable-diffusion-v1-5/unet/{config.json, diffusion_pytorch_model.(bin|safetensors)}
    stable-diffusion-v1-5/{text_encoder/, tokenizer/}      (optional: CLIP for the empty prompt)
    sd-vae-ft-mse/{config.json, diffusion_pytorch_model.(safetensors|bin)}
    MagicAnimate/appearance_encoder/{config.json, diffusion_pytorch_model.(safetensors|bin)}
    MagicAnimate/densepose_controlnet/{config.json, diffusion_pytorch_model.(safetensors|bin)}
    MagicAnimate/temporal_attention/temporal_attention.ckpt

Generic strict loading (every tensor used, nothing missing, shapes checked) is
:mod:`kinemate.models.loading`; this module knows where MagicAnimate keeps what.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kinemate.errors import WeightsError
from kinemate.models.appearance import AppearanceEncoder
from kinemate.models.loading import (TEXT_EMBEDDINGS, _listing, build_on_meta,
                                     empty_prompt_embedding, find_weights,
                                     load_appearance_encoder, load_controlnet, load_strict,
                                     load_vae, positional_defaults, read_config, read_tensors,
                                     read_text_embeddings)
from kinemate.models.unet3d import MAGICANIMATE_MOTION_KWARGS, VideoUNet

log = logging.getLogger(__name__)


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


