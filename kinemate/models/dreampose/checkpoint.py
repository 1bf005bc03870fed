"""DreamPose's release layout, its files and strict loading (SPEC §6).

Release layout (``root``; the official ``demo/custom-chkpts`` of ``custom-chkpts.zip`` plus
CLIP, which the official pipeline loads from the hub at run time)::

    unet_epoch_<N>.pth        UNet2DConditionModel state dict (14-channel conv_in); keys may
                              carry accelerate's ``module.`` prefix (test.py strips it)
    adapter_<N>.pth           Embedding_Adapter: vae2clip.{weight,bias}, linear1.{weight,bias}
    vae_<M>.pth               the whole AutoencoderKL with the subject-fine-tuned decoder
                              (diffusers 0.15 names: mid-block attention query/key/value/proj_attn)
    checkpoint-<N>/           the saved pipeline folder: unet/, vae/, scheduler/ configs are read
                              (optional: SD1.4's are built in); its weights are not (test.py
                              replaces every one of them with the .pth files)
    clip-vit-base-patch32/    openai/clip-vit-base-patch32 (config.json + pytorch_model.bin or
                              model.safetensors; a full CLIP file's text tower is set aside)

With several epochs the highest ``unet_epoch_<N>`` is used with ``adapter_<N>`` of the same
epoch (the official scripts save them together) and the highest ``vae_<M>``. Everything is
loaded strictly: every parameter filled, every tensor used, shapes checked, otherwise a
:class:`~kinemate.errors.WeightsError` names the keys. ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kinemate.errors import WeightsError
from kinemate.models.dreampose import networks
from kinemate.models.loading import (_listing, build_on_meta, load_strict, read_config,
                                     read_tensors, vae_key)

log = logging.getLogger(__name__)

UNET_PATTERN = re.compile(r"^unet_epoch_(\d+)\.pth$")
ADAPTER_PATTERN = re.compile(r"^adapter_(\d+)\.pth$")
VAE_PATTERN = re.compile(r"^vae_(\d+)\.pth$")
CLIP_DIR = "clip-vit-base-patch32"
CLIP_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CLIP_POSITION_IDS = "vision_model.embeddings.position_ids"
# a full CLIP checkpoint (the hub's openai/clip-vit-base-patch32) also holds these; the vision
# tower DreamPose uses does not read them
CLIP_OTHER_PREFIXES = ("text_model.", "visual_projection.", "text_projection.", "logit_scale")


@dataclass
class Components:
    """The networks of a DreamPose release, loaded (eval mode)."""

    unet: nn.Module
    adapter: nn.Module
    image_encoder: nn.Module
    vae: nn.Module
    scheduler: dict
    meta: dict = field(default_factory=dict)


def _epoch_files(root: Path, pattern: re.Pattern) -> dict[int, Path]:
    return {int(m.group(1)): p for p in root.iterdir() if (m := pattern.match(p.name))}


def is_release_layout(root: Path) -> bool:
    root = Path(root)
    return root.is_dir() and bool(_epoch_files(root, UNET_PATTERN))


def release_files(root: Path) -> dict[str, Path]:
    """The files a load reads: ``unet``, ``adapter``, ``vae``, ``clip`` (a folder) and
    ``pipeline`` (the ``checkpoint-<N>`` folder, or None)."""
    root = Path(root)
    unets = _epoch_files(root, UNET_PATTERN)
    if not unets:
        raise WeightsError(f"{root} holds no unet_epoch_<N>.pth; put DreamPose's checkpoints "
                           "there with 'kinemate weights import dreampose FILES... --dir "
                           f"{root}' (see 'kinemate weights list')")
    epoch = max(unets)
    adapters = _epoch_files(root, ADAPTER_PATTERN)
    if epoch not in adapters:
        raise WeightsError(f"{root} has unet_epoch_{epoch}.pth but no adapter_{epoch}.pth (the "
                           "adapter saved with that UNet); add it from the same checkpoint set")
    vaes = _epoch_files(root, VAE_PATTERN)
    if not vaes:
        raise WeightsError(f"{root} holds no vae_<N>.pth (the subject's fine-tuned VAE "
                           "decoder); add it from the same checkpoint set")
    clip = root / CLIP_DIR
    if not (clip / "config.json").is_file():
        raise WeightsError(f"{root} has no {CLIP_DIR}/ (openai/clip-vit-base-patch32, which "
                           "DreamPose conditions on); 'kinemate weights download dreampose "
                           f"--dir {root}' fetches it")
    pipeline = root / f"checkpoint-{epoch}"
    if not pipeline.is_dir():
        folders = sorted(p for p in root.glob("checkpoint-*") if p.is_dir())
        pipeline = folders[-1] if folders else None
    return {"unet": unets[epoch], "adapter": adapters[epoch], "vae": vaes[max(vaes)],
            "clip": clip, "pipeline": pipeline}


def strip_module_prefix(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without accelerate's ``module.`` (test.py removes it anywhere in the key)."""
    return {k.replace("module.", ""): v for k, v in tensors.items()}


def unet_config(pipeline: Path | None, tensors: dict[str, torch.Tensor]) -> dict:
    """The UNet's config: ``checkpoint-<N>/unet/config.json`` or SD1.4's; ``in_channels``
    always from the file's ``conv_in.weight`` (14 for 5 poses)."""
    path = pipeline / "unet" / "config.json" if pipeline is not None else None
    config = read_config(path) if path is not None and path.is_file() else dict(networks.SD14_UNET_CONFIG)
    conv_in = tensors.get("conv_in.weight")
    if conv_in is None:
        raise WeightsError("the UNet file has no conv_in.weight; it is not a DreamPose UNet")
    if conv_in.shape[1] != int(config.get("in_channels", 0)):
        log.info("UNet config says in_channels %s, conv_in.weight has %d: using the weights",
                 config.get("in_channels"), conv_in.shape[1])
        config = {**config, "in_channels": int(conv_in.shape[1])}
    if (int(config["in_channels"]) - 4) % 2 or config["in_channels"] <= 4:
        raise WeightsError(f"conv_in.weight takes {config['in_channels']} channels; DreamPose's "
                           "UNet takes 4 latent channels + 2 per pose (14 for its 5 poses)")
    return config


def load_unet(path: Path, pipeline: Path | None, *, dtype=torch.float32, device="cpu") -> nn.Module:
    tensors = strip_module_prefix(read_tensors(path))
    config = unet_config(pipeline, tensors)
    model = build_on_meta(lambda: networks.unet(config))
    return load_strict(model, tensors, what=str(path), dtype=dtype, device=device)


def load_adapter(path: Path, *, dtype=torch.float32, device="cpu") -> nn.Module:
    tensors = strip_module_prefix(read_tensors(path))
    weight = tensors.get("vae2clip.weight")
    if weight is None or weight.ndim != 2:
        raise WeightsError(f"{path} has no 2-D vae2clip.weight; it is not a DreamPose adapter "
                           f"(keys: {_listing(tensors)})")
    model = build_on_meta(lambda: networks.EmbeddingAdapter(clip_dim=weight.shape[0],
                                                            vae_features=weight.shape[1]))
    return load_strict(model, tensors, what=str(path), dtype=dtype, device=device)


def vae_config(pipeline: Path | None) -> dict:
    path = pipeline / "vae" / "config.json" if pipeline is not None else None
    return read_config(path) if path is not None and path.is_file() else dict(networks.SD14_VAE_CONFIG)


def load_vae_file(path: Path, pipeline: Path | None, *, dtype=torch.float32, device="cpu") -> nn.Module:
    """The whole VAE from ``vae_<M>.pth`` (old attention names renamed as diffusers does)."""
    config = vae_config(pipeline)
    tensors = {vae_key(k): v for k, v in strip_module_prefix(read_tensors(path)).items()}
    model = build_on_meta(lambda: networks.vae(config))
    return load_strict(model, tensors, what=str(path), dtype=dtype, device=device)


def clip_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The vision tower's tensors of a CLIPVisionModel or full CLIP file (text tower and
    projections set aside, ``position_ids`` checked and dropped)."""
    tensors = read_tensors(path)
    tensors = {k: v for k, v in tensors.items() if not k.startswith(CLIP_OTHER_PREFIXES)}
    ids = tensors.pop(CLIP_POSITION_IDS, None)
    # transformers >= 5 keeps the tower at the top of CLIPVisionModel (no vision_model.)
    tensors = {k.removeprefix("vision_model."): v for k, v in tensors.items()}
    if ids is not None and not torch.equal(ids.reshape(-1).long(), torch.arange(ids.numel())):
        raise WeightsError(f"{path}: {CLIP_POSITION_IDS} is not 0..{ids.numel() - 1}; the file "
                           "is not a CLIP model")
    return tensors


def _restore_position_ids(clip: nn.Module) -> nn.Module:
    """CLIP's ``position_ids`` (a non-persistent ``arange`` buffer) for a model built on the
    meta device: no state dict holds it."""
    embeddings = clip.embeddings
    device = embeddings.position_embedding.weight.device
    ids = torch.arange(embeddings.num_positions, device=device).expand((1, -1))
    embeddings.register_buffer("position_ids", ids, persistent=False)
    return clip


def load_clip(folder: Path, *, dtype=torch.float32, device="cpu") -> nn.Module:
    config = read_config(folder / "config.json")
    if "vision_config" in config:  # a full CLIPModel config
        config = config["vision_config"]
    path = next((folder / n for n in CLIP_WEIGHTS if (folder / n).is_file()), None)
    if path is None:
        raise WeightsError(f"no weights file in {folder} (expected one of "
                           f"{', '.join(CLIP_WEIGHTS)}); re-download openai/clip-vit-base-patch32")
    model = build_on_meta(lambda: networks.clip_vision(config))
    model = load_strict(model, clip_tensors(path), what=str(path), dtype=dtype, device=device)
    return _restore_position_ids(model)


def scheduler_config(pipeline: Path | None, default: dict) -> dict:
    path = pipeline / "scheduler" / "scheduler_config.json" if pipeline is not None else None
    return read_config(path) if path is not None and path.is_file() else dict(default)


def load_release(root: Path, *, default_scheduler: dict, dtype=torch.float32,
                 device="cpu") -> Components:
    files = release_files(root)
    pipeline = files["pipeline"]
    unet = load_unet(files["unet"], pipeline, dtype=dtype, device=device)
    adapter = load_adapter(files["adapter"], dtype=dtype, device=device)
    clip = load_clip(files["clip"], dtype=dtype, device=device)
    vae = load_vae_file(files["vae"], pipeline, dtype=dtype, device=device)
    if adapter.vae2clip.out_features != unet.config.cross_attention_dim:
        raise WeightsError(f"the adapter writes {adapter.vae2clip.out_features}-wide tokens but "
                           f"the UNet's cross-attention takes {unet.config.cross_attention_dim}; "
                           "use files of one checkpoint set")
    if clip.config.hidden_size != adapter.vae2clip.out_features:
        raise WeightsError(f"CLIP's tokens are {clip.config.hidden_size} wide, the adapter's "
                           f"{adapter.vae2clip.out_features}; DreamPose uses "
                           "openai/clip-vit-base-patch32")
    for m in (unet, adapter, clip, vae):
        m.eval().requires_grad_(False)
    meta = {"format": "dreampose-release", "root": str(root),
            **{k: (str(v) if v is not None else None) for k, v in files.items()}}
    return Components(unet, adapter, clip, vae, scheduler_config(pipeline, default_scheduler), meta)


__all__ = ["Components", "is_release_layout", "load_adapter", "load_clip", "load_release",
           "load_unet", "load_vae_file", "release_files", "strip_module_prefix"]
