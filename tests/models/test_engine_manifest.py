"""Manifest tests: full-size models built on the meta device from the shared configs have
exactly the keys and shapes of the published checkpoints (after the loader's key mapping)."""

from __future__ import annotations

import json

import pytest
import torch


def manifest(reference_dir, name) -> dict[str, list[int]]:
    entries = json.loads((reference_dir / "manifests" / name).read_text())
    return {e["key"]: list(e["shape"]) for e in entries}


def config(reference_dir, name) -> dict:
    return json.loads((reference_dir / "configs" / name).read_text())


def shapes(model) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def assert_same(actual: dict, expected: dict) -> None:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    wrong = [k for k in expected if actual[k] != expected[k]]
    assert not wrong, f"shape mismatch: {[(k, actual[k], expected[k]) for k in wrong[:5]]}"


@pytest.fixture(scope="module")
def full_unet(reference_dir):
    from kinemate.models import VideoUNet
    from kinemate.models.loading import build_on_meta

    extra = config(reference_dir, "magicanimate_inference.json")["unet_additional_kwargs"]
    unet = build_on_meta(lambda: VideoUNet.from_2d_config(
        config(reference_dir, "sd15_unet_config.json"), extra))
    return unet


def test_manifest_video_unet_full_state_dict(reference_dir, full_unet):
    assert_same(shapes(full_unet), manifest(reference_dir, "unet3d_full_state_dict_after_loading.json"))


def test_manifest_sd15_unet_file_and_motion_ckpt_partition_the_unet(reference_dir, full_unet):
    from kinemate.models.magicanimate.checkpoint import motion_key

    sd = manifest(reference_dir, "sd15_unet_diffusion_pytorch_model.bin.json")
    motion = manifest(reference_dir, "temporal_attention.ckpt.json")
    unet = shapes(full_unet)
    assert_same({k: unet[k] for k in unet if ".motion_modules." not in k}, sd)
    assert_same({k: unet[k] for k in unet if ".motion_modules." in k}, motion)
    # the prefixes the official loader accepts map onto the same keys
    for prefix in ("", "module.", "unet.", "module.unet."):
        assert {motion_key(prefix + k) for k in motion} == set(motion)
    assert len(full_unet.motion_module_keys()) == 560


def test_manifest_appearance_encoder(reference_dir):
    from kinemate.models import AppearanceEncoder
    from kinemate.models.loading import build_on_meta

    model = build_on_meta(lambda: AppearanceEncoder.from_unet_config(
        config(reference_dir, "appearance_encoder_config.INFERRED.json")))
    assert_same(shapes(model),
                manifest(reference_dir, "appearance_encoder_diffusion_pytorch_model.safetensors.json"))
    assert model.num_reference_slots == 10


def test_manifest_densepose_controlnet(reference_dir):
    from diffusers import ControlNetModel

    from kinemate.models.loading import build_on_meta

    model = build_on_meta(lambda: ControlNetModel.from_config(
        config(reference_dir, "densepose_controlnet_config.INFERRED.json")))
    assert_same(shapes(model), manifest(
        reference_dir, "densepose_controlnet_diffusion_pytorch_model.safetensors.json"))


def test_manifest_reference_slots_pair_by_width(reference_dir, full_unet):
    from kinemate.models.reference import fusion_blocks

    widths = [b.norm1.normalized_shape[0] for b in fusion_blocks(full_unet)]
    assert widths == [1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320]
    assert full_unet.num_reference_slots == 10
    assert full_unet.device == torch.device("meta")
