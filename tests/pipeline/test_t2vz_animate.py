"""Text2Video-Zero through kinemate's front ends and its behaviour without an oracle: the CLI
from a real dance video (kinemate's pose extraction) and from text alone, the provenance
naming the preset, refusals (a reference photo, no prompt), cross-frame attention that
matters, identical poses giving identical frames, chunks anchored on frame 0. Weights: the
golden set (``$KINEMATE_T2VZ_GOLDEN_DIR`` or ``../shared/reference/text2video-zero/golden``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(os.environ.get("KINEMATE_T2VZ_GOLDEN_DIR",
                             REPO.parent / "shared" / "reference" / "text2video-zero" / "golden"))


@pytest.fixture(scope="module")
def weights() -> Path:
    if not (GOLDEN / "cases.json").is_file():
        pytest.skip(f"Text2Video-Zero golden set not found at {GOLDEN}")
    return GOLDEN


@pytest.fixture(scope="module")
def atol(weights) -> float:
    """The pose case's tolerance on final latents (cases.json)."""
    cases = json.loads((weights / "cases.json").read_text())["cases"]
    pose = next(c for c in cases if c["kind"] == "pose_pipeline")
    return pose["outputs"]["final_latents"]["atol"]


@pytest.fixture(scope="module")
def pipe(weights):
    from kinemate.pipeline import load_pipeline

    return load_pipeline(weights, model="text2video-zero")


def _poses(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_cli_pose_mode_from_a_dance_video(weights, tmp_path, capsys, one_thread):
    """Prompt + dance video (no photo) -> pose extracted and drawn -> video; the manifest
    names the prompt and the preset."""
    from kinemate.cli import main
    from kinemate.cli.animate import example_inputs
    from kinemate.io import probe_video
    from kinemate.provenance.manifest import read_manifest

    _, dance = example_inputs()
    out = tmp_path / "out.mp4"
    rc = main(["animate", "--model", "text2video-zero", "--weights", str(weights),
               "--prompt", "a cat dancing", str(dance), "-o", str(out), "--size", "32x32",
               "--max-frames", "3", "--steps", "1", "--context-frames", "2", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height) == (3, 32, 32)
    report = read_manifest(out)
    settings = json.dumps(report.kinemate)
    assert '"preset": "official"' in settings and "a cat dancing" in settings


def test_cli_text_mode(weights, tmp_path, capsys, one_thread):
    from kinemate.cli import main
    from kinemate.io import probe_video

    out = tmp_path / "text.mp4"
    rc = main(["animate", "--model", "text2video-zero", "--weights", str(weights),
               "--preset", "diffusers-docs", "--prompt", "a cat dancing", "--frames", "3",
               "-o", str(out), "--size", "32x32", "--steps", "3", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height) == (3, 32, 32)
    assert abs(info.fps - 4) < 1e-6


@pytest.mark.parametrize("args, words", [
    (["photo.png", "dance.mp4"], "takes no reference photo"),
    (["photo.png"], "is a photo"),
    (["dance.mp4", "--prompt", ""], "needs --prompt"),
    ([], "--frames N"),
])
def test_cli_refuses(weights, tmp_path, capsys, args, words):
    from kinemate.cli import main

    argv = ["animate", "--model", "text2video-zero", "--weights", str(weights), "-o",
            str(tmp_path / "out.mp4"), *args]
    if "--prompt" not in args:
        argv += ["--prompt", "a cat"]
    assert main(argv) != 0
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()


def test_reference_and_replaced_attention_refused(pipe):
    from diffusers.models.attention_processor import AttnProcessor2_0

    from kinemate.errors import UsageError

    photo = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(UsageError, match="no reference photo"):
        pipe.sample_latents(photo, _poses(2), prompt="a cat", steps=1, progress=False)
    with pytest.raises(UsageError, match="needs a .?prompt"):
        pipe.sample_latents(None, _poses(2), steps=1, progress=False)
    processors = pipe.unet.attn_processors
    pipe.unet.set_attn_processor(AttnProcessor2_0())  # e.g. a "fast attention" switch
    try:
        with pytest.raises(UsageError, match="cross-frame attention"):
            pipe.sample_latents(None, _poses(2), prompt="a cat", steps=1, progress=False)
    finally:
        pipe.unet.set_attn_processor(processors)


def test_cross_frame_attention_matters_and_identical_poses_agree(pipe, atol, one_thread):
    """On the tiny model: cross-frame vs plain attention differ on frames >= 1 by far more
    than the golden tolerance (frame 0 identical); the same pose on every frame (same initial
    latent) gives the same frame everywhere, also across chunks."""
    from kinemate.models.text2video_zero.attention import install

    kw = dict(prompt="a cat dancing", steps=3, progress=False, context_frames=8)
    poses = _poses(4)
    cross = pipe.sample_latents(None, poses, **kw)[0]
    try:
        pipe.denoiser.cross_frame = False
        for model in (pipe.unet, pipe.controlnet):
            install(model, cross_frame=False)
        plain = pipe.sample_latents(None, poses, **kw)[0]
    finally:
        pipe.denoiser.cross_frame = True
        for model in (pipe.unet, pipe.controlnet):
            install(model, cross_frame=True)
    assert float((cross[:, 0] - plain[:, 0]).abs().max()) < atol
    assert float((cross[:, 1:] - plain[:, 1:]).abs().max()) > 1000 * atol
    same = np.repeat(poses[:1], 7, axis=0)
    for chunk in (8, 3):  # one call, and chunks of frame 0 + 2 new frames
        out = pipe.sample_latents(None, same, **{**kw, "context_frames": chunk})[0]
        assert float((out - out[:, :1]).abs().max()) == 0.0


def test_chunks_anchor_frame_zero(pipe, atol, one_thread):
    """Chunked pose mode equals the one-call run within the tolerance (chunking only changes
    batch sizes: every frame attends to itself and frame 0), also with several chunks in one
    call, and the windows are the reference's chunks."""
    from kinemate.models.text2video_zero import chunk_windows

    assert chunk_windows(10, 4) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert chunk_windows(5, 8) == [[0, 1, 2, 3, 4]]
    poses = _poses(7, seed=1)
    kw = dict(prompt="a cat dancing", steps=2, progress=False)
    whole = pipe.sample_latents(None, poses, context_frames=8, **kw)
    chunked = pipe.sample_latents(None, poses, context_frames=3, **kw)
    torch.testing.assert_close(chunked, whole, atol=atol, rtol=0)
    # chunks batched into one network call keep their own anchors and guidance branches
    batched = pipe.sample_latents(None, poses, context_frames=3, window_batch=3, **kw)
    torch.testing.assert_close(batched, whole, atol=atol, rtol=0)


@pytest.mark.parametrize("mode", ["pose", "text"])
def test_non_finite_values_stop_the_run(pipe, mode):
    """The engine's inf/NaN guard covers the family (and text mode's own frame-1 loop): a
    NumericsError, not black frames with exit code 0 (fp16 overflow, upstream issue #80)."""
    from kinemate.errors import NumericsError

    bias = pipe.unet.conv_out.bias
    saved = bias.detach().clone()
    try:
        with torch.no_grad():
            bias[0] = float("nan")
        with pytest.raises(NumericsError, match="non-finite"):
            if mode == "pose":
                pipe.sample_latents(None, _poses(2), prompt="a cat", steps=2, progress=False)
            else:
                pipe.sample_latents(None, None, num_frames=2, size=(32, 32), prompt="a cat",
                                    steps=4, progress=False)
    finally:
        with torch.no_grad():
            bias.copy_(saved)


def test_weight_set_shares_sd15_with_magicanimate():
    """``kinemate weights download text2video-zero``: SD1.5 exactly as the MagicAnimate set
    declares it (same pins and layout, so one folder serves both) + the OpenPose ControlNet
    v1.0, whose size is bounded (no published hash); found through the registry."""
    from kinemate import hub
    from kinemate.models.magicanimate.weights import MAGICANIMATE_WEIGHTS

    t2vz = hub.get("text2video-zero")
    sd15 = {f for f in MAGICANIMATE_WEIGHTS.files if f.target.startswith("stable-diffusion-v1-5/")}
    assert sd15 <= set(t2vz.files)
    others = [f for f in t2vz.files if f not in sd15]
    assert {f.repo_id for f in others} == {"lllyasviel/sd-controlnet-openpose"}
    weights = [f for f in others if f.filename.startswith("diffusion_pytorch_model")]
    assert len(weights) == 1 and weights[0].min_size and weights[0].target.startswith(
        "sd-controlnet-openpose/")
