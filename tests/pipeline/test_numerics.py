"""Compute dtypes: the default per device and model, and the overflow guard of the sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import kinemate
from kinemate.errors import NumericsError
from kinemate.pipeline.loading import bundled_model_dir, default_dtype


def _index(folder: Path, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kinemate.json").write_text(json.dumps({"format": "kinemate-pipeline", **extra}))
    return folder


def test_default_dtype_per_device_and_model(tmp_path):
    # the CPU always computes in float32, whatever the model says
    assert default_dtype(None, "cpu") == "float32"
    assert default_dtype(_index(tmp_path / "a", gpu_dtype="bfloat16"), "cpu") == "float32"
    # on a GPU: what the model folder declares ...
    assert default_dtype(tmp_path / "a", "cuda") == "bfloat16"
    assert default_dtype(_index(tmp_path / "b", gpu_dtype="float32"), "cuda:1") == "float32"
    assert default_dtype(None, "cuda", "kinemate-tiny") == json.loads(
        (bundled_model_dir() / "kinemate.json").read_text())["gpu_dtype"]
    # ... else float16 (no declaration, a value that is no dtype, a release folder)
    assert default_dtype(_index(tmp_path / "c"), "cuda") == "float16"
    assert default_dtype(_index(tmp_path / "d", gpu_dtype="int8"), "cuda") == "float16"
    (tmp_path / "release").mkdir()
    assert default_dtype(tmp_path / "release", "cuda") == "float16"


@pytest.fixture(scope="module")
def clip():
    from kinemate.synth import generate_clip

    return generate_clip(1_000_051, num_frames=4, size=(64, 64), densepose=False)


KW = {"seed": 0, "progress": False, "context_frames": 4, "context_overlap": 0}


@pytest.mark.parametrize("dtype, advice", [(torch.float32, "kinemate weights verify"),
                                           (torch.bfloat16, "with dtype float32")])
def test_overflow_stops_with_a_clear_error(clip, dtype, advice):
    """A non-finite prediction (here planted in the UNet's last layer) stops the sampler at
    that step with an error that says what to do, instead of writing a black video."""
    pipe = kinemate.load_pipeline(model="kinemate-tiny", dtype=dtype)
    handle = pipe.unet.conv_out.register_forward_hook(lambda m, i, out: out * float("inf"))
    try:
        with pytest.raises(NumericsError, match=advice) as err:
            pipe(clip.frames[0], clip.skeleton, **KW)
        assert "at step 1 in" in str(err.value)
    finally:
        handle.remove()
    out = pipe(clip.frames[0], clip.skeleton, **KW)  # the same pipeline, hook removed: fine
    assert np.isfinite(out).all() and out.std() > 1


def test_bundled_model_runs_in_its_declared_gpu_dtype(clip):
    """The bundled model declares bfloat16 for GPUs: its appearance encoder's activations reach
    ~3.5e4, past float16's range (float16 gave NaN on an H200). bfloat16 must give the
    float32 result up to rounding (run here on the CPU, the same arithmetic)."""
    name = json.loads((bundled_model_dir() / "kinemate.json").read_text())["gpu_dtype"]
    full = kinemate.load_pipeline(model="kinemate-tiny")(clip.frames[0], clip.skeleton, **KW)
    half = kinemate.load_pipeline(model="kinemate-tiny", dtype=name)(clip.frames[0], clip.skeleton, **KW)
    mse = np.mean((full.astype(float) - half.astype(float)) ** 2)
    psnr = 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))
    print(f"\n{name} vs float32 on the bundled model: {psnr:.1f} dB")
    assert psnr > 35.0
