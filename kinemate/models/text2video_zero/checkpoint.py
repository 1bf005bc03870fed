"""Where Text2Video-Zero's networks live on disk, and strict loading.

Two layouts are read (the same networks; SD1.5 may be shared with MagicAnimate's download):

* the download layout (``kinemate weights download text2video-zero``)::

      stable-diffusion-v1-5/{unet,vae,text_encoder,tokenizer}/...
      sd-controlnet-openpose/{config.json, diffusion_pytorch_model.safetensors}

* the diffusers component layout (a ``save_pretrained`` pipeline folder, the golden set)::

      unet/ vae/ text_encoder/ tokenizer/ controlnet/

The ControlNet is optional: without it only text mode runs. Loading is strict (every tensor
used, nothing missing, shapes checked, :func:`kinemate.models.loading.load_strict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kinemate.errors import WeightsError
from kinemate.models.loading import (build_on_meta, find_weights, load_controlnet, load_strict,
                                     load_vae, read_config, read_tensors)

SD_DIR = "stable-diffusion-v1-5"
CONTROLNET_DIRS = ("controlnet", "sd-controlnet-openpose")


def _first(root: Path, candidates: tuple[str, ...]) -> Path | None:
    for rel in candidates:
        if (root / rel / "config.json").is_file() or (root / rel / "tokenizer_config.json").is_file():
            return root / rel
    return None


def component_dir(root: Path, name: str) -> Path | None:
    """Folder of ``name`` (unet, vae, text_encoder, tokenizer, controlnet) in either layout."""
    root = Path(root)
    if name == "controlnet":
        return _first(root, CONTROLNET_DIRS)
    return _first(root, (name, f"{SD_DIR}/{name}"))


def is_layout(root: Path) -> bool:
    """SD1.5 (UNet, VAE, CLIP text encoder, tokenizer) in either layout, and nothing that
    makes it another family's release (MagicAnimate/, Animate Anyone's UNet files)."""
    root = Path(root)
    if (root / "MagicAnimate").is_dir() or (root / "denoising_unet.pth").is_file():
        return False
    return all(component_dir(root, n) is not None
               for n in ("unet", "vae", "text_encoder", "tokenizer"))


@dataclass
class Parts:
    unet: nn.Module
    controlnet: nn.Module | None
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    vae_scaling_factor: float


def _need(root: Path, name: str) -> Path:
    folder = component_dir(root, name)
    if folder is None:
        raise WeightsError(f"{root} has no {name}/ (nor {SD_DIR}/{name}/); download the set with "
                           "'kinemate weights download text2video-zero --dir DIR'")
    return folder


def load_unet(folder: Path, *, dtype=torch.float32, device="cpu") -> nn.Module:
    from diffusers import UNet2DConditionModel

    config = read_config(folder / "config.json")
    model = build_on_meta(lambda: UNet2DConditionModel.from_config(config))
    path = find_weights(folder)
    return load_strict(model, read_tensors(path), what=str(path), dtype=dtype, device=device)


def load_text_encoder(folder: Path, *, dtype=torch.float32, device="cpu") -> nn.Module:
    """CLIPTextModel, strictly. ``position_ids`` (saved by older transformers) must be the
    plain ``arange`` if present, and is dropped."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig.from_dict(read_config(folder / "config.json"))
    model = build_on_meta(lambda: CLIPTextModel(config))
    path = find_weights(folder) if any((folder / n).is_file() for n in (
        "model.safetensors", "diffusion_pytorch_model.safetensors")) else folder / "pytorch_model.bin"
    tensors = read_tensors(path)
    expected = model.state_dict()
    for key in [k for k in tensors if k.endswith("position_ids") and k not in expected]:
        ids = tensors.pop(key)
        if not torch.equal(ids.long().flatten(), torch.arange(ids.numel())):
            raise WeightsError(f"{path}: {key} is not 0..{ids.numel() - 1}; the file is not a "
                               "CLIP text encoder kinemate can read")
    model = load_strict(model, tensors, what=str(path), dtype=dtype, device=device)
    for module in model.modules():  # position_ids: outside the state dict, computed
        ids = module._buffers.get("position_ids")
        if ids is not None and ids.is_meta:
            module.register_buffer("position_ids", torch.arange(
                ids.shape[-1], device=device).expand((1, -1)), persistent=False)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise WeightsError(f"{path}: the text encoder has tensors no file fills: {', '.join(left)}")
    return model.eval()


def load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    try:
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot load the CLIP tokenizer from {folder}: {exc}; re-download "
                           "it ('kinemate weights download text2video-zero')") from exc


def load_parts(root: Path, *, dtype=torch.float32, device="cpu") -> Parts:
    root = Path(root)
    controlnet_dir = component_dir(root, "controlnet")
    vae_dir = _need(root, "vae")
    vae = load_vae(vae_dir, dtype=dtype, device=device)
    return Parts(
        unet=load_unet(_need(root, "unet"), dtype=dtype, device=device).eval(),
        controlnet=None if controlnet_dir is None else
        load_controlnet(controlnet_dir, dtype=dtype, device=device).eval(),
        vae=vae.eval(),
        text_encoder=load_text_encoder(_need(root, "text_encoder"), dtype=dtype, device=device),
        tokenizer=load_tokenizer(_need(root, "tokenizer")),
        vae_scaling_factor=float(read_config(vae_dir / "config.json").get("scaling_factor",
                                                                          0.18215)))
