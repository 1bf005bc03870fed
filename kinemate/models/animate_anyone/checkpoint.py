"""The Moore-AnimateAnyone release layout, its files and strict loading (SPEC §1).

Release layout (``root``, the official ``pretrained_weights/``)::

    denoising_unet.pth        stage-1 denoising UNet (the SD1.5 UNet's keys), no motion modules
    reference_unet.pth        reference UNet: SD1.5 keys minus conv_norm_out.*, conv_out.*
    motion_module.pth         the 21 AnimateDiff-v2 motion modules (bare keys, + 42 pe tables)
    pose_guider.pth           PoseGuider(320, (16, 32, 96, 256)) (16 keys)
    image_encoder/{config.json, pytorch_model.bin | model.safetensors}   CLIP ViT-L/14 vision
    sd-vae-ft-mse/{config.json, diffusion_pytorch_model.(bin|safetensors)}
    stable-diffusion-v1-5/unet/config.json   the architecture of both UNets
    inference_v2.yaml | *.json with unet_additional_kwargs   (optional; default: the release's)

``stable-diffusion-v1-5/unet/diffusion_pytorch_model.bin`` is not read: the official loader
loads it and then overwrites every tensor with the two ``.pth`` UNet files, so its values never
reach the model (SPEC §8.18). Everything else is loaded strictly: every parameter filled,
every tensor of every file used, shapes checked, and the motion modules' parameters all
present (the official loader's ``strict=False`` silently keeps a misnamed motion file's
modules at their initial values, i.e. as identities).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kinemate.errors import WeightsError
from kinemate.models.animate_anyone import networks
from kinemate.models.loading import (_listing, build_on_meta, load_strict, load_vae,
                                     positional_defaults, read_config, read_tensors)

log = logging.getLogger(__name__)

DENOISING_UNET = "denoising_unet.pth"
REFERENCE_UNET = "reference_unet.pth"
MOTION_MODULE = "motion_module.pth"
POSE_GUIDER = "pose_guider.pth"
IMAGE_ENCODER = "image_encoder"
VAE = "sd-vae-ft-mse"
BASE_UNET_CONFIG = "stable-diffusion-v1-5/unet/config.json"
IMAGE_ENCODER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# transformers < 4.31 saved this buffer; later versions rebuild it (an arange)
CLIP_POSITION_IDS = "vision_model.embeddings.position_ids"


@dataclass
class Components:
    """The networks of the release, loaded and ready (eval mode)."""

    unet: nn.Module
    reference_unet: nn.Module
    pose_guider: nn.Module
    image_encoder: nn.Module
    vae: nn.Module
    meta: dict = field(default_factory=dict)


def is_release_layout(root: Path) -> bool:
    """A folder holding the Moore-AnimateAnyone UNet files (what the rest lacks is reported
    by :func:`load_release`, naming the file)."""
    root = Path(root)
    return (root / DENOISING_UNET).is_file() and (root / REFERENCE_UNET).is_file()


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise WeightsError(f"{path} is missing ({what}); run 'kinemate weights download "
                           "animate-anyone --dir DIR' (or complete the official "
                           "pretrained_weights/ folder) and pass that DIR as `weights`")
    return path


# -- motion modules ------------------------------------------------------------------------
def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "unet."):  # DataParallel / training-wrapper prefixes
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def motion_module_tensors(path: Path, unet_shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """The tensors of ``motion_module.pth`` under the UNet's key names (bare keys as
    released; ``module.``/``unet.`` prefixes and a ``state_dict`` wrapper are accepted).

    Every tensor must be a motion-module tensor of this UNet with its shape, and every
    motion-module *parameter* must be there (546 for SD1.5: 21 modules x 26); the
    ``pos_encoder.pe`` tables may be absent (they are the computed sin/cos tables)."""
    tensors = {_strip_prefixes(k): v for k, v in read_tensors(path).items()}
    foreign = [k for k in tensors if ".motion_modules." not in k or k not in unet_shapes]
    if foreign:
        raise WeightsError(f"{path} holds {len(foreign)} tensors that are not motion-module "
                           f"weights of this UNet: {_listing(foreign)}; expected the AnimateDiff-"
                           "v2 layout (keys like down_blocks.0.motion_modules.0.temporal_"
                           "transformer.norm.weight, mid_block.motion_modules.0... included)")
    wrong = [f"{k} {tuple(v.shape)} != {tuple(unet_shapes[k])}" for k, v in tensors.items()
             if tuple(v.shape) != tuple(unet_shapes[k])]
    if wrong:
        raise WeightsError(f"{path}: {len(wrong)} motion-module tensors have the wrong shape "
                           f"({_listing(wrong, 4)}); is the inference config (unet_additional_"
                           "kwargs) the one these weights were trained with?")
    params = [k for k in unet_shapes
              if ".motion_modules." in k and not k.endswith("pos_encoder.pe")]
    missing = [k for k in params if k not in tensors]
    if missing:
        raise WeightsError(f"{path} lacks {len(missing)} of the {len(params)} motion-module "
                           f"parameters: {_listing(missing)}; the official loader would leave "
                           "those modules at their initial values (identities) without a word. "
                           "Use the complete motion_module.pth of the release")
    return tensors


def load_denoising_unet(root: Path, config: dict, motion: dict | None = None, *,
                        dtype=torch.float32, device="cpu") -> nn.Module:
    """``denoising_unet.pth`` (spatial) + ``motion_module.pth`` into the video UNet."""
    unet = build_on_meta(lambda: networks.denoising_unet(config, motion))
    shapes = {k: v.shape for k, v in unet.state_dict().items()}
    spatial_path = _require(root / DENOISING_UNET, "the denoising UNet")
    motion_path = _require(root / MOTION_MODULE, "the motion modules")
    spatial = read_tensors(spatial_path)
    stray = [k for k in spatial if ".motion_modules." in k]
    if stray:
        raise WeightsError(f"{spatial_path} holds {len(stray)} motion-module tensors "
                           f"({_listing(stray)}); it must be the stage-1 UNet without them "
                           f"(the motion modules come from {MOTION_MODULE})")
    tensors = {**spatial, **motion_module_tensors(motion_path, shapes)}
    return load_strict(unet, tensors, what=f"{spatial_path} + {motion_path}",
                       defaults=positional_defaults(unet), dtype=dtype, device=device)


def load_reference_unet(root: Path, config: dict, *, dtype=torch.float32, device="cpu") -> nn.Module:
    model = build_on_meta(lambda: networks.reference_unet(config))
    path = _require(root / REFERENCE_UNET, "the reference UNet")
    return load_strict(model, read_tensors(path), what=str(path), dtype=dtype, device=device)


def load_pose_guider(root: Path, config: dict, *, dtype=torch.float32, device="cpu") -> nn.Module:
    model = build_on_meta(lambda: networks.pose_guider(config))
    path = _require(root / POSE_GUIDER, "the pose guider")
    return load_strict(model, read_tensors(path), what=str(path), dtype=dtype, device=device)


def load_image_encoder(folder: Path, *, dtype=torch.float32, device="cpu") -> nn.Module:
    """transformers' CLIP vision tower + projection from ``config.json`` and its weights
    (a ``position_ids`` buffer saved by transformers < 4.31 is checked and dropped)."""
    folder = _require(Path(folder), "the CLIP image encoder")
    config = read_config(folder / "config.json")
    model = build_on_meta(lambda: networks.image_encoder(config))
    path = next((folder / n for n in IMAGE_ENCODER_WEIGHTS if (folder / n).is_file()), None)
    if path is None:
        raise WeightsError(f"no weights file in {folder} (expected one of "
                           f"{', '.join(IMAGE_ENCODER_WEIGHTS)}); re-download the image encoder")
    tensors = read_tensors(path)
    ids = tensors.pop(CLIP_POSITION_IDS, None)
    if ids is not None and not torch.equal(ids.reshape(-1).long(), torch.arange(ids.numel())):
        raise WeightsError(f"{path}: {CLIP_POSITION_IDS} is not 0..{ids.numel() - 1}; the file "
                           "is not a CLIP vision model")
    model = load_strict(model, tensors, what=str(path), dtype=dtype, device=device)
    return networks.restore_position_ids(model)


def find_inference_config(root: Path) -> Path | None:
    """An inference config in ``root`` (``inference_v2.yaml`` or any ``*.json``/``*.yaml``
    holding ``unet_additional_kwargs``), or None."""
    from kinemate.models.magicanimate.checkpoint import find_inference_config as find

    return find(root)


def read_inference_config(path: Path) -> dict:
    from kinemate.models.magicanimate.checkpoint import read_inference_config as read

    return read(path)


def load_release(root: Path, *, dtype=torch.float32, device="cpu", motion: dict | None = None,
                 inference_config: Path | None = None) -> Components:
    """Load the release layout under ``root`` (see the module docstring).

    Motion-module hyper-parameters: ``motion`` (an ``unet_additional_kwargs`` dict), else
    those of ``inference_config`` or of an inference config found in ``root``, else the
    release's (``inference_v2.yaml``)."""
    root = Path(root)
    if not is_release_layout(root):
        raise WeightsError(f"{root} is not an Animate Anyone weights folder (expected "
                           f"{DENOISING_UNET}, {REFERENCE_UNET}, {MOTION_MODULE}, {POSE_GUIDER}, "
                           f"{IMAGE_ENCODER}/, {VAE}/ and {BASE_UNET_CONFIG} in it); run 'kinemate "
                           "weights download animate-anyone --dir DIR' and pass that DIR")
    config = read_config(_require(root / BASE_UNET_CONFIG, "the UNet architecture"))
    inference_config = inference_config or find_inference_config(root)
    if motion is None and inference_config is not None:
        motion = read_inference_config(inference_config)["unet_additional_kwargs"]
    unet = load_denoising_unet(root, config, motion, dtype=dtype, device=device)
    reference = load_reference_unet(root, config, dtype=dtype, device=device)
    guider = load_pose_guider(root, config, dtype=dtype, device=device)
    clip = load_image_encoder(root / IMAGE_ENCODER, dtype=dtype, device=device)
    vae = load_vae(_require(root / VAE, "the VAE"), dtype=dtype, device=device)
    for m in (unet, reference, guider, clip, vae):
        m.eval().requires_grad_(False)
    return Components(unet, reference, guider, clip, vae,
                      meta={"format": "animate-anyone-release", "root": str(root),
                            "inference_config": str(inference_config) if inference_config else None})


__all__ = ["Components", "is_release_layout", "load_denoising_unet", "load_image_encoder",
           "load_pose_guider", "load_reference_unet", "load_release", "motion_module_tensors"]
