"""Animate Anyone manifest tests: the full-size networks, built on the meta device from the
reference kit's configs the way the loader builds them, have exactly the keys and shapes of
every published file (``../shared/reference/animate-anyone/manifests``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

AA = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "animate-anyone"


@pytest.fixture(scope="module")
def kit() -> Path:
    if not (AA / "manifests").is_dir():
        pytest.skip(f"Animate Anyone reference kit not found at {AA}")
    return AA


def manifest(kit: Path, name: str) -> dict[str, list[int]]:
    entries = json.loads((kit / "manifests" / name).read_text())
    return {e["key"]: list(e["shape"]) for e in entries}


def config(kit: Path, name: str) -> dict:
    return json.loads((kit / "configs" / name).read_text())


def shapes(model) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def assert_same(actual: dict, expected: dict) -> None:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    wrong = [k for k in expected if actual[k] != expected[k]]
    assert not wrong, f"shape mismatch: {[(k, actual[k], expected[k]) for k in wrong[:5]]}"


@pytest.fixture(scope="module")
def full_unet(kit):
    from kinemate.models.animate_anyone import networks
    from kinemate.models.loading import build_on_meta

    extra = config(kit, "inference_v2.json")["unet_additional_kwargs"]
    assert extra == networks.ANIMATE_ANYONE_MOTION_KWARGS  # the family's default is the release's
    return build_on_meta(lambda: networks.denoising_unet(config(kit, "sd15_unet_config.json"),
                                                         extra))


@pytest.fixture(scope="module")
def full_reference_unet(kit):
    from kinemate.models.animate_anyone import networks
    from kinemate.models.loading import build_on_meta

    return build_on_meta(lambda: networks.reference_unet(config(kit, "sd15_unet_config.json")))


def test_manifest_denoising_unet_after_loading(kit, full_unet):
    assert_same(shapes(full_unet),
                manifest(kit, "denoising_unet3d_full_state_dict_after_loading.json"))
    assert full_unet.device == torch.device("meta")


def test_manifest_denoising_and_motion_files_partition_the_unet(kit, full_unet):
    from kinemate.models.animate_anyone.checkpoint import _strip_prefixes

    unet = shapes(full_unet)
    spatial = {k: v for k, v in unet.items() if ".motion_modules." not in k}
    motion = {k: v for k, v in unet.items() if ".motion_modules." in k}
    assert_same(spatial, manifest(kit, "denoising_unet.pth.json"))
    assert_same(spatial, manifest(kit, "sd15_unet_diffusion_pytorch_model.bin.json"))
    assert_same(motion, manifest(kit, "motion_module.pth.json"))
    params = [k for k in motion if not k.endswith("pos_encoder.pe")]
    assert len(motion) == 588 and len(params) == 546
    modules = {k.split(".temporal_transformer.")[0] for k in motion}
    assert len(modules) == 21 and "mid_block.motion_modules.0" in modules
    assert sum(k.startswith("mid_block.") for k in motion) == 28
    assert {tuple(v) for k, v in motion.items() if k.endswith("pe")} == \
        {(1, 32, 320), (1, 32, 640), (1, 32, 1280)}
    for prefix in ("module.", "unet.", "module.unet."):
        assert {_strip_prefixes(prefix + k) for k in motion} == set(motion)


def test_manifest_reference_unet(kit, full_reference_unet):
    assert_same(shapes(full_reference_unet), manifest(kit, "reference_unet.pth.json"))
    assert full_reference_unet.num_reference_slots == 16


def test_manifest_reference_blocks_pair_by_module_path(full_unet, full_reference_unet):
    """16 blocks each, sorted by width as the official code does (down, up, mid walk), and
    writer slot k and reader slot k are the blocks with the same module path."""
    from kinemate.models.reference import fusion_blocks

    def order(model):
        names = {id(m): n for n, m in model.named_modules()}
        return [names[id(b)] for b in fusion_blocks(model, "full")]

    writers, readers = order(full_reference_unet), order(full_unet)
    assert writers == readers
    assert writers[:6] == [f"down_blocks.2.attentions.{i}.transformer_blocks.0" for i in (0, 1)] + \
        [f"up_blocks.1.attentions.{i}.transformer_blocks.0" for i in (0, 1, 2)] + \
        ["mid_block.attentions.0.transformer_blocks.0"]
    widths = [b.norm1.normalized_shape[0] for b in fusion_blocks(full_unet, "full")]
    assert widths == [1280] * 6 + [640] * 5 + [320] * 5
    for slot, path in enumerate(writers):
        assert full_reference_unet.get_submodule(path).attn1.processor.slot == slot
        assert full_unet.get_submodule(path).attn1.processor.slot == slot


def test_manifest_pose_guider(kit):
    from kinemate.models.animate_anyone import networks
    from kinemate.models.loading import build_on_meta

    constructor = config(kit, "pose_guider_constructor.json")
    model = build_on_meta(lambda: networks.pose_guider(config(kit, "sd15_unet_config.json")))
    assert model.config.conditioning_embedding_channels == \
        constructor["conditioning_embedding_channels"]
    assert list(model.config.block_out_channels) == constructor["block_out_channels"]
    assert_same(shapes(model), manifest(kit, "pose_guider.pth.json"))


def test_manifest_image_encoder(kit):
    """CLIP ViT-L/14 + projection; the file's position_ids buffer (transformers 4.30) is the
    one key the loader checks and drops."""
    from kinemate.models.animate_anyone import networks
    from kinemate.models.animate_anyone.checkpoint import CLIP_POSITION_IDS
    from kinemate.models.loading import build_on_meta

    model = build_on_meta(lambda: networks.image_encoder(
        config(kit, "image_encoder_config.INFERRED.json")))
    expected = manifest(kit, "image_encoder_pytorch_model.bin.json")
    assert expected.pop(CLIP_POSITION_IDS) == [1, 257]
    assert_same(shapes(model), expected)


def test_manifest_vae(kit):
    from diffusers import AutoencoderKL

    from kinemate.models.loading import build_on_meta

    model = build_on_meta(lambda: AutoencoderKL.from_config(config(kit,
                                                                   "sd_vae_ft_mse_config.json")))
    assert_same(shapes(model), manifest(kit, "sd_vae_ft_mse_diffusers_state_dict.json"))


def test_published_files_cover_the_manifests(kit):
    """`kinemate weights download animate-anyone` fetches every file of the manifests that
    kinemate reads (the SD1.5 UNet weights excepted: never read), each with a lower size
    bound at most the float16 size of its tensors."""
    from kinemate.models.animate_anyone.weights import ANIMATE_ANYONE_WEIGHTS

    summary = json.loads((kit / "manifests" / "_summary.json").read_text())
    by_target = {f.target: f for f in ANIMATE_ANYONE_WEIGHTS.files}
    for name, facts in summary.items():
        if name.startswith("_") or not facts["file"].startswith("pretrained_weights/"):
            continue
        target = facts["file"][len("pretrained_weights/"):]
        if target == "stable-diffusion-v1-5/unet/diffusion_pytorch_model.bin":
            assert target not in by_target
            continue
        assert target in by_target, target
        assert by_target[target].min_size <= facts["bytes_fp16"]
    for target in ("stable-diffusion-v1-5/unet/config.json", "image_encoder/config.json",
                   "sd-vae-ft-mse/config.json", "sd-vae-ft-mse/diffusion_pytorch_model.safetensors"):
        assert target in by_target
