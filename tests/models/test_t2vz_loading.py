"""Text2Video-Zero's weights folder: the download layout (``stable-diffusion-v1-5/`` +
``sd-controlnet-openpose/``, SD1.5 shared with MagicAnimate's) and the diffusers layout, strict
loading with the keys named, a folder without the ControlNet (text mode only), presets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(os.environ.get("KINEMATE_T2VZ_GOLDEN_DIR",
                             REPO.parent / "shared" / "reference" / "text2video-zero" / "golden"))


@pytest.fixture(scope="module")
def golden() -> Path:
    if not (GOLDEN / "unet").is_dir():
        pytest.skip(f"Text2Video-Zero golden weights not found at {GOLDEN}")
    return GOLDEN


def _download_layout(src: Path, dst: Path, controlnet: bool = True) -> Path:
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        shutil.copytree(src / name, dst / "stable-diffusion-v1-5" / name)
    if controlnet:
        shutil.copytree(src / "controlnet", dst / "sd-controlnet-openpose")
    return dst


def test_download_layout_loads_like_the_diffusers_layout(golden, tmp_path):
    from kinemate.pipeline import load_pipeline

    a = load_pipeline(golden)  # recognised without --model
    b = load_pipeline(_download_layout(golden, tmp_path / "dl"), model="text2video-zero")
    assert a.family == b.family == "text2video-zero" and a.index["preset"] == "official"
    for name in ("unet", "controlnet", "text_encoder"):
        sa, sb = a.components[name].state_dict(), b.components[name].state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_strict_loading_names_the_keys(golden, tmp_path):
    from safetensors.torch import load_file, save_file

    from kinemate.errors import WeightsError
    from kinemate.pipeline import load_pipeline

    root = _download_layout(golden, tmp_path / "dl")
    path = root / "sd-controlnet-openpose" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(path))
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    tensors["extra.weight"] = torch.zeros(1)
    save_file(tensors, str(path))
    with pytest.raises(WeightsError) as info:
        load_pipeline(root, model="text2video-zero")
    assert dropped in str(info.value) and "extra.weight" in str(info.value)


def test_without_controlnet_only_text_mode(golden, tmp_path):
    from kinemate.errors import UsageError
    from kinemate.pipeline import load_pipeline

    pipe = load_pipeline(_download_layout(golden, tmp_path / "sd", controlnet=False),
                         model="text2video-zero", preset="diffusers-docs")
    assert pipe.index["preset"] == "diffusers-docs" and type(pipe.scheduler).__name__ == "PNDMScheduler"
    assert pipe.resolve(text_only=True).steps == 50
    frames = pipe(None, None, num_frames=2, size=(32, 32), prompt="a cat", steps=3,
                  progress=False)
    assert frames.shape == (2, 32, 32, 3)
    with pytest.raises(UsageError, match="no ControlNet"):
        pipe(None, np.zeros((2, 32, 32, 3), np.uint8), prompt="a cat", steps=1, progress=False)
    with pytest.raises(UsageError, match="preset"):
        load_pipeline(golden, preset="fast")
