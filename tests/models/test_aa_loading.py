"""Strict loading of the Moore-AnimateAnyone release layout on the tiny golden weights:
detection, the family's defaults, errors that name the keys, accepted variants (prefixes,
wrappers, dtypes, old VAE names, CLIP's position_ids), the kinemate-format round trip, and
``kinemate weights download animate-anyone`` producing a loadable folder."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kinemate.errors import InputError, UsageError, WeightsError

AA = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "animate-anyone"
ENTRIES = ("denoising_unet.pth", "reference_unet.pth", "motion_module.pth", "pose_guider.pth",
           "image_encoder", "sd-vae-ft-mse", "stable-diffusion-v1-5", "inference_v2.json")


@pytest.fixture(scope="module")
def weights() -> Path:
    if not (AA / "golden" / "weights").is_dir():
        pytest.skip(f"Animate Anyone golden weights not found at {AA}")
    return AA / "golden" / "weights"


def release(tmp: Path, golden: Path, **replace) -> Path:
    """A release folder of symlinks to the golden files; ``replace`` maps an entry
    (``motion_module_pth`` for motion_module.pth) to a state dict to save instead, or None to
    leave the entry out."""
    root = tmp / "release"
    root.mkdir(parents=True)
    for entry in ENTRIES:
        key = entry.replace(".", "_").replace("-", "_")
        if key not in replace:
            os.symlink(golden / entry, root / entry)
        elif replace[key] is not None:
            torch.save(replace[key], root / entry)
    return root


def state(golden: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(golden / name, weights_only=True)


@pytest.fixture(scope="module")
def golden_model(weights):
    from kinemate.pipeline.loading import load_model

    return load_model(weights)


def test_golden_release_loads_with_the_family_defaults(weights, golden_model):
    from kinemate.models.registry import detect_family
    from kinemate.pipeline import load_pipeline, make_scheduler

    assert detect_family(weights).name == "animate-anyone"
    assert golden_model.family == "animate-anyone" and golden_model.control_kind == "openpose"
    assert golden_model.default_size == (512, 768)
    assert golden_model.options == {"steps": 30, "guidance": 3.5, "context_frames": 24,
                                    "context_overlap": 4, "closed_loop": True}
    scheduler = make_scheduler(golden_model.scheduler)
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.timestep_spacing == "trailing"
    assert scheduler.config.rescale_betas_zero_snr and scheduler.alphas_cumprod[-1] == 0
    denoiser = golden_model.denoiser
    assert denoiser.max_context_frames == 32
    for module in denoiser.components().values():
        assert not module.training
        assert all(p.device.type == "cpu" and p.dtype == torch.float32
                   for p in module.parameters())
    pipe = load_pipeline(weights, model="animate-anyone")
    options = pipe.resolve()
    assert (options.steps, options.guidance, options.context_frames, options.context_overlap,
            options.closed_loop) == (30, 3.5, 24, 4, True)
    with pytest.raises(UsageError, match="animate-anyone"):
        load_pipeline(weights, model="magicanimate")


def test_every_file_tensor_is_the_loaded_value(weights, golden_model):
    """fp16 files upcast; motion modules (pe tables from the file), spatial UNet, reference
    UNet and pose guider all hold exactly the file's values."""
    d = golden_model.denoiser
    unet = d.unet.state_dict()
    for name, model in (("denoising_unet.pth", unet), ("motion_module.pth", unet),
                        ("reference_unet.pth", d.reference_unet.state_dict()),
                        ("pose_guider.pth", d.pose_guider.state_dict())):
        for key, value in state(weights, name).items():
            assert torch.equal(model[key], value.float()), (name, key)
    motion = [k for k in unet if ".motion_modules." in k and not k.endswith(".pe")]
    assert len(motion) == 546


def test_misnamed_motion_file_is_refused_naming_keys(weights, tmp_path):
    from kinemate.models.animate_anyone.checkpoint import load_release

    mm = {"temporal." + k: v for k, v in state(weights, "motion_module.pth").items()}
    with pytest.raises(WeightsError, match=r"not motion-module weights.*temporal\.down_blocks"):
        load_release(release(tmp_path, weights, motion_module_pth=mm))


def test_missing_motion_parameter_is_refused_naming_it(weights, tmp_path):
    from kinemate.models.animate_anyone.checkpoint import load_release

    mm = state(weights, "motion_module.pth")
    key = "mid_block.motion_modules.0.temporal_transformer.proj_out.weight"
    del mm[key]
    with pytest.raises(WeightsError, match=rf"lacks 1 of the 546 motion-module parameters: {key}"):
        load_release(release(tmp_path, weights, motion_module_pth=mm))


def test_motion_file_with_wrong_shape_is_refused(weights, tmp_path):
    from kinemate.models.animate_anyone.checkpoint import load_release

    mm = state(weights, "motion_module.pth")
    key = "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"
    mm[key] = mm[key][:, :16]
    with pytest.raises(WeightsError, match=rf"wrong shape.*{key}"):
        load_release(release(tmp_path, weights, motion_module_pth=mm))


def test_motion_file_variants_load_the_same(weights, golden_model, tmp_path):
    """``module.`` prefixes in a ``state_dict`` wrapper, fp32, without the pe tables
    (computed, equal to the file's)."""
    from kinemate.models.animate_anyone.checkpoint import load_release

    mm = {"module." + k: v.float() for k, v in state(weights, "motion_module.pth").items()
          if not k.endswith("pos_encoder.pe")}
    unet = load_release(release(tmp_path, weights,
                                motion_module_pth={"state_dict": mm, "global_step": 7})).unet
    expected = golden_model.denoiser.unet.state_dict()
    for key, value in unet.state_dict().items():
        torch.testing.assert_close(value, expected[key], atol=1e-6, rtol=0, msg=key)


def test_denoising_unet_errors_name_the_keys(weights, tmp_path):
    from kinemate.models.animate_anyone.checkpoint import load_release

    sd = state(weights, "denoising_unet.pth")
    del sd["conv_in.bias"]
    with pytest.raises(WeightsError, match=r"1 missing: conv_in\.bias"):
        load_release(release(tmp_path / "a", weights, denoising_unet_pth=sd))
    sd = {**state(weights, "denoising_unet.pth"),
          **{k: v for k, v in list(state(weights, "motion_module.pth").items())[:2]}}
    with pytest.raises(WeightsError, match="motion-module tensors.*stage-1 UNet"):
        load_release(release(tmp_path / "b", weights, denoising_unet_pth=sd))


def test_reference_unet_with_an_output_head_is_refused(weights, tmp_path):
    """The SD1.5 UNet's own file has conv_norm_out/conv_out, the reference UNet has not."""
    from kinemate.models.animate_anyone.checkpoint import load_release

    sd = state(weights, "denoising_unet.pth")  # the full SD key set
    with pytest.raises(WeightsError, match=r"4 unexpected: conv_norm_out\.bias"):
        load_release(release(tmp_path, weights, reference_unet_pth=sd))


def test_pose_guider_of_another_width_is_refused(weights, tmp_path):
    from kinemate.models.animate_anyone.checkpoint import load_release

    sd = state(weights, "pose_guider.pth")
    sd["conv_out.weight"] = torch.zeros(320, *sd["conv_out.weight"].shape[1:])
    sd["conv_out.bias"] = torch.zeros(320)
    with pytest.raises(WeightsError, match=r"wrong shapes: conv_out\.bias \(320,\) != \(32,\)"):
        load_release(release(tmp_path, weights, pose_guider_pth=sd))


def test_missing_files_say_what_to_download(weights, tmp_path):
    from kinemate.models.animate_anyone.checkpoint import load_release

    with pytest.raises(WeightsError, match="motion_module.pth is missing.*weights download"):
        load_release(release(tmp_path / "a", weights, motion_module_pth=None))
    with pytest.raises(WeightsError, match="image_encoder is missing.*weights download"):
        load_release(release(tmp_path / "b", weights, image_encoder=None))


def test_image_encoder_position_ids_and_safetensors(weights, golden_model, tmp_path):
    """A file without ``position_ids`` (current transformers) or as safetensors loads the
    same; wrong ``position_ids`` are refused."""
    from kinemate.models.animate_anyone.checkpoint import load_image_encoder

    sd = torch.load(weights / "image_encoder" / "pytorch_model.bin", weights_only=True)
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    want = golden_model.denoiser.image_embeds(image)
    for name, tensors in (("bin", {k: v for k, v in sd.items() if "position_ids" not in k}),
                          ("safe", sd)):
        folder = tmp_path / name
        folder.mkdir()
        os.symlink(weights / "image_encoder" / "config.json", folder / "config.json")
        if name == "safe":
            save_file({k: v.contiguous() for k, v in tensors.items()},
                      str(folder / "model.safetensors"))
        else:
            torch.save(tensors, folder / "pytorch_model.bin")
        clip = load_image_encoder(folder)
        from kinemate.models.animate_anyone.preprocess import clip_pixels

        got = clip(pixel_values=clip_pixels(image)).image_embeds
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    bad = dict(sd)
    bad["vision_model.embeddings.position_ids"] = bad["vision_model.embeddings.position_ids"].flip(-1)
    folder = tmp_path / "bad"
    folder.mkdir()
    os.symlink(weights / "image_encoder" / "config.json", folder / "config.json")
    torch.save(bad, folder / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="position_ids"):
        load_image_encoder(folder)


def test_vae_with_the_old_attention_names_loads(weights, golden_model, tmp_path):
    """sd-vae-ft-mse's files were written by diffusers 0.4 (query/key/value/proj_attn)."""
    from kinemate.models.loading import load_vae

    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    sd = torch.load(weights / "sd-vae-ft-mse" / "diffusion_pytorch_model.bin", weights_only=True)
    renamed = {}
    for key, value in sd.items():
        for new, was in old.items():
            key = key.replace(f".{new}.", f".{was}.")
        renamed[key] = value
    assert any(".proj_attn." in k for k in renamed)
    folder = tmp_path / "vae"
    folder.mkdir()
    os.symlink(weights / "sd-vae-ft-mse" / "config.json", folder / "config.json")
    torch.save(renamed, folder / "diffusion_pytorch_model.bin")
    vae = load_vae(folder)
    expected = golden_model.vae.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in vae.state_dict().items())


def test_family_inputs_are_checked_by_the_engine(weights, golden_release):
    """``image_embeds`` is Animate Anyone's input: a MagicAnimate model refuses it, and an
    Animate Anyone denoiser needs the reference image or its embedding."""
    from kinemate.pipeline import load_pipeline

    ma = load_pipeline(golden_release)
    ref = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(UsageError, match="image_embeds: not an input of magicanimate"):
        ma.start_video(ref, [ref], ma.resolve(), torch.zeros(1, 4, 8, 8),
                       image_embeds=torch.zeros(1, 32))
    aa = load_pipeline(weights)
    with pytest.raises(InputError, match="reference"):
        aa.denoiser.start_video(torch.zeros(1, 4, 8, 8), [ref])


def test_kinemate_format_round_trip(weights, tmp_path):
    """save_pretrained writes every Animate Anyone network; load_pipeline reads it back as
    the same family, with the same options and the same prediction."""
    from kinemate.pipeline import load_pipeline

    pipe = load_pipeline(weights)
    folder = pipe.save_pretrained(tmp_path / "aa")
    back = load_pipeline(folder)
    assert (back.family, back.control_kind, back.default_size) == \
        ("animate-anyone", "openpose", (512, 768))
    assert back.options == pipe.options
    assert dict(back.scheduler.config) == dict(pipe.scheduler.config)
    for name, module in pipe.components.items():
        other = back.components[name].state_dict()
        assert all(torch.equal(v, other[k]) for k, v in module.state_dict().items()), name
    # same prediction (not bit for bit: the two loads place the same values in other
    # buffers, and CPU kernels may sum in another order, ~1e-6)
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)
    controls = rng.integers(0, 256, (3, 128, 64, 3), dtype=np.uint8)
    preds = []
    for p in (pipe, back):
        p.sample_latents(ref, controls, steps=1, progress=False,
                         callback=lambda i, t, info: preds.append(info["noise_pred"]))
    torch.testing.assert_close(preds[0], preds[1], atol=1e-4, rtol=1e-4)


def test_download_targets_form_a_loadable_release(weights, tmp_path):
    """The download set's targets, filled from a local mirror holding the golden files under
    the published repositories and names, is a folder load_pipeline detects and loads (size
    bounds and the VAE hash are those of the real files, so this set drops them)."""
    from kinemate import hub
    from kinemate.models.animate_anyone.weights import ANIMATE_ANYONE_WEIGHTS
    from kinemate.pipeline import load_pipeline

    mirror = tmp_path / "mirror"
    sources = {
        "denoising_unet.pth": weights / "denoising_unet.pth",
        "reference_unet.pth": weights / "reference_unet.pth",
        "motion_module.pth": weights / "motion_module.pth",
        "pose_guider.pth": weights / "pose_guider.pth",
        "image_encoder/config.json": weights / "image_encoder/config.json",
        "image_encoder/pytorch_model.bin": weights / "image_encoder/pytorch_model.bin",
        "sd-vae-ft-mse/config.json": weights / "sd-vae-ft-mse/config.json",
        "stable-diffusion-v1-5/unet/config.json": weights / "stable-diffusion-v1-5/unet/config.json",
    }
    files = []
    for f in ANIMATE_ANYONE_WEIGHTS.files:
        path = mirror / f.repo_id / f.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if f.target in sources:
            os.symlink(sources[f.target], path)
        else:
            assert f.target == "sd-vae-ft-mse/diffusion_pytorch_model.safetensors"
            sd = torch.load(weights / "sd-vae-ft-mse/diffusion_pytorch_model.bin", weights_only=True)
            save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        files.append(dataclasses.replace(f, sha256=None, size=None, min_size=None))
    test_set = dataclasses.replace(ANIMATE_ANYONE_WEIGHTS, name="aa-mirror-test", files=tuple(files))
    hub.register(test_set)
    try:
        hub.download("aa-mirror-test", tmp_path / "dest", from_folder=mirror, echo=lambda s: None)
    finally:
        hub.REGISTRY.pop("aa-mirror-test", None)
    pipe = load_pipeline(tmp_path / "dest")
    assert pipe.family == "animate-anyone"
