"""Strict loading of the release layout (prefixes, wrappers, dtypes, file kinds) and the
kinemate format round trip, on the tiny golden weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kinemate.errors import WeightsError


@pytest.fixture(scope="module")
def golden_weights(reference_dir) -> Path:
    return reference_dir / "golden" / "weights"


def fake_release(tmp: Path, golden: Path, *, motion: dict | None = None,
                 unet_safetensors: dict | None = None) -> Path:
    """A release-layout folder made of symlinks to the golden files, with replacements."""
    root = tmp / "release"
    for sub in ("sd-vae-ft-mse", "MagicAnimate/appearance_encoder",
                "MagicAnimate/densepose_controlnet"):
        (root / sub).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(golden / sub, root / sub)
    unet = root / "stable-diffusion-v1-5" / "unet"
    unet.mkdir(parents=True)
    os.symlink(golden / "stable-diffusion-v1-5/unet/config.json", unet / "config.json")
    if unet_safetensors is None:
        os.symlink(golden / "stable-diffusion-v1-5/unet/diffusion_pytorch_model.bin",
                   unet / "diffusion_pytorch_model.bin")
    else:
        save_file(unet_safetensors, str(unet / "diffusion_pytorch_model.safetensors"))
    ta = root / "MagicAnimate" / "temporal_attention"
    ta.mkdir(parents=True)
    if motion is None:
        os.symlink(golden / "MagicAnimate/temporal_attention/temporal_attention.ckpt",
                   ta / "temporal_attention.ckpt")
    else:
        torch.save(motion, ta / "temporal_attention.ckpt")
    return root


@pytest.fixture(scope="module")
def motion_sd(golden_weights):
    return torch.load(golden_weights / "MagicAnimate/temporal_attention/temporal_attention.ckpt",
                      weights_only=True)


@pytest.fixture(scope="module")
def reference_unet(golden_weights):
    from kinemate.models.magicanimate.checkpoint import load_release

    return load_release(golden_weights).unet.state_dict()


def load_unet(root: Path):
    from kinemate.models.magicanimate.checkpoint import load_video_unet

    return load_video_unet(root / "stable-diffusion-v1-5/unet",
                           root / "MagicAnimate/temporal_attention/temporal_attention.ckpt")


@pytest.mark.parametrize("form", ["module", "unet", "state_dict_module", "state_dict_unet"])
def test_motion_checkpoint_prefixes_and_wrapper(tmp_path, golden_weights, motion_sd,
                                                reference_unet, form):
    prefix = "module." if form.endswith("module") else "unet."
    tensors = {prefix + k: v for k, v in motion_sd.items()}
    obj = {"state_dict": tensors, "global_step": 7} if form.startswith("state_dict") else tensors
    unet = load_unet(fake_release(tmp_path, golden_weights, motion=obj))
    for k, v in unet.state_dict().items():
        assert torch.equal(v, reference_unet[k]), k


def test_misnamed_motion_checkpoint_is_refused(tmp_path, golden_weights, motion_sd):
    renamed = {k.replace("motion_modules", "temporal_modules"): v for k, v in motion_sd.items()}
    with pytest.raises(WeightsError, match="not motion-module"):
        load_unet(fake_release(tmp_path, golden_weights, motion=renamed))


def test_incomplete_motion_checkpoint_names_the_missing_key(tmp_path, golden_weights, motion_sd):
    key = "up_blocks.3.motion_modules.2.temporal_transformer.proj_out.weight"
    partial = {k: v for k, v in motion_sd.items() if k != key}
    with pytest.raises(WeightsError, match=r"1 missing: .*" + key.replace(".", r"\.")):
        load_unet(fake_release(tmp_path, golden_weights, motion=partial))


def test_positional_tables_may_be_absent(tmp_path, golden_weights, motion_sd, reference_unet):
    without_pe = {k: v for k, v in motion_sd.items() if not k.endswith("pos_encoder.pe")}
    assert len(without_pe) == len(motion_sd) - 40
    unet = load_unet(fake_release(tmp_path, golden_weights, motion=without_pe))
    for k, v in unet.state_dict().items():
        torch.testing.assert_close(v, reference_unet[k], atol=1e-6, rtol=0)


def test_unet_as_fp32_safetensors(tmp_path, golden_weights, reference_unet):
    sd = torch.load(golden_weights / "stable-diffusion-v1-5/unet/diffusion_pytorch_model.bin",
                    weights_only=True)
    assert all(v.dtype == torch.float16 for v in sd.values())
    fp32 = {k: v.float().contiguous() for k, v in sd.items()}
    unet = load_unet(fake_release(tmp_path, golden_weights, unet_safetensors=fp32))
    for k, v in unet.state_dict().items():
        assert torch.equal(v, reference_unet[k]), k


def test_extra_tensor_in_unet_file_is_unexpected(tmp_path, golden_weights):
    sd = torch.load(golden_weights / "stable-diffusion-v1-5/unet/diffusion_pytorch_model.bin",
                    weights_only=True)
    sd = {k: v.contiguous() for k, v in sd.items()}
    sd["extra_head.weight"] = torch.zeros(3)
    with pytest.raises(WeightsError, match="1 unexpected: extra_head.weight"):
        load_unet(fake_release(tmp_path, golden_weights, unet_safetensors=sd))


def test_not_a_weights_folder(tmp_path):
    from kinemate.pipeline import load_pipeline

    with pytest.raises(WeightsError, match="neither a kinemate model folder"):
        load_pipeline(tmp_path)
    with pytest.raises(WeightsError, match="does not exist"):
        load_pipeline(tmp_path / "nope")


def test_kinemate_format_round_trip(tmp_path, golden_weights):
    import json

    from kinemate.pipeline import load_pipeline

    pipe = load_pipeline(golden_weights)
    assert pipe.denoiser.text_embeds_cond is None  # no CLIP in the golden layout
    pipe.denoiser.text_embeds_cond = torch.randn(1, 77, 32)
    pipe.denoiser.text_embeds_uncond = torch.zeros(1, 77, 32)
    pipe.name, pipe.default_size = "tiny-test", (128, 256)
    out = pipe.save_pretrained(tmp_path / "model")
    index = json.loads((out / "kinemate.json").read_text())
    assert index["name"] == "tiny-test" and index["default_size"] == [128, 256]
    assert not list(tmp_path.glob(".*kinemate-tmp*"))
    again = load_pipeline(out)
    assert again.name == "tiny-test" and again.default_size == (128, 256)
    assert again.control_kind == "densepose"
    assert torch.equal(again.denoiser.text_embeds_cond, pipe.denoiser.text_embeds_cond)
    for name in ("unet", "appearance_encoder", "controlnet", "vae"):
        a, b = getattr(pipe, name).state_dict(), getattr(again, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert type(again.scheduler).__name__ == "DDIMScheduler"
    assert again.scheduler.config.beta_schedule == "linear"



def test_release_with_clip_computes_the_empty_prompt_once(tmp_path, golden_weights):
    """With stable-diffusion-v1-5/{text_encoder,tokenizer} the empty-prompt embedding is
    computed with CLIP at load time (a tiny random CLIP here, width = cross_attention_dim)."""
    import json

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from kinemate.pipeline import load_pipeline

    root = fake_release(tmp_path, golden_weights)
    sd = root / "stable-diffusion-v1-5"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"),
                  model_max_length=77).save_pretrained(str(sd / "tokenizer"))
    torch.manual_seed(0)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=4, hidden_size=32, intermediate_size=37,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        max_position_embeddings=77, bos_token_id=0,
                                        eos_token_id=1, pad_token_id=1)).eval()
    clip.save_pretrained(str(sd / "text_encoder"))
    pipe = load_pipeline(root)
    ids = torch.tensor([[0] + [1] * 76])  # <start> then <end>/padding: the empty prompt
    with torch.no_grad():
        expected = clip(ids)[0]
    assert pipe.denoiser.text_embeds_cond.shape == (1, 77, 32)
    torch.testing.assert_close(pipe.denoiser.text_embeds_cond, expected)
    assert pipe.denoiser.text_embeds_uncond is pipe.denoiser.text_embeds_cond


def test_full_unet_motion_checkpoint_replaces_spatial_weights(tmp_path, golden_weights,
                                                              reference_unet):
    """The hub's temporal_attention.ckpt has the size of the whole 3D UNet: with bare (or
    ``module.``) keys every tensor loads, spatial ones over the SD1.5 UNet (official attempt A)."""
    full = {k: v.clone() for k, v in reference_unet.items()}
    key = "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    full[key] = full[key] + 1.0
    unet = load_unet(fake_release(tmp_path, golden_weights,
                                  motion={"module." + k: v for k, v in full.items()}))
    state = unet.state_dict()
    assert torch.equal(state[key], full[key])
    assert not torch.equal(state[key], reference_unet[key])


def test_unet_prefixed_full_checkpoint_loads_only_motion_modules(tmp_path, golden_weights,
                                                                 reference_unet):
    """With ``unet.`` keys the official loader falls back to the motion modules alone (B)."""
    full = {k: v.clone() for k, v in reference_unet.items()}
    key = "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    full[key] = full[key] + 1.0
    unet = load_unet(fake_release(tmp_path, golden_weights,
                                  motion={"unet." + k: v for k, v in full.items()}))
    assert torch.equal(unet.state_dict()[key], reference_unet[key])


def test_motion_tensor_of_wrong_shape_is_refused(tmp_path, golden_weights, motion_sd):
    key = "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"
    bad = dict(motion_sd)
    bad[key] = torch.zeros(3, 3)
    with pytest.raises(WeightsError, match="wrong shape"):
        load_unet(fake_release(tmp_path, golden_weights, motion=bad))
