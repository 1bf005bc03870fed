"""End to end through ``kinemate animate`` and behaviour of the sampling loop (tiny golden
weights, small sizes, few steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def release_dir(golden_release) -> Path:
    return golden_release


@pytest.fixture(scope="module")
def tiny_pipe(release_dir, one_thread):
    from kinemate import load_pipeline

    return load_pipeline(release_dir, model="magicanimate")


def test_cli_animate_densepose_demo_end_to_end(release_dir, demo_inputs, tmp_path, one_thread):
    from kinemate.cli import main
    from kinemate.io import probe_video

    out, grid = tmp_path / "out.mp4", tmp_path / "grid.mp4"
    rc = main(["animate", "--model", "magicanimate", "--weights", str(release_dir),
               str(demo_inputs / "demo4.png"), str(demo_inputs / "demo4_densepose.mp4"),
               "-o", str(out), "--control", "densepose", "--size", "64x64", "--fit", "letterbox",
               "--max-frames", "6", "--steps", "2", "--guidance", "7.5", "--seed", "3",
               "--context-frames", "4", "--context-overlap", "2", "--grid", str(grid),
               "--pad-to", "4", "--no-progress"])
    assert rc == 0  # sampled as 8 frames (the official edge padding), written as 6
    driving = probe_video(demo_inputs / "demo4_densepose.mp4")
    info = probe_video(out)
    assert info.num_frames == 6
    assert info.fps == pytest.approx(driving.fps)
    assert (info.width, info.height) == (64, 64)
    g = probe_video(grid)
    assert g.num_frames == 6 and g.width == 3 * 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.mp4", "out.mp4"]


def test_cli_animate_needs_weights_for_magicanimate(demo_inputs, tmp_path, capsys):
    from kinemate.cli import main

    rc = main(["animate", "--model", "magicanimate", str(demo_inputs / "demo4.png"),
               str(demo_inputs / "demo4_densepose.mp4"), "-o", str(tmp_path / "o.mp4")])
    assert rc == 2
    assert "--weights" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_animate_example_through_pose_extraction(tmp_path, capsys, one_thread):
    """--example: the bundled photo + dance video, pose extracted, retargeted and rendered for
    the bundled model (trained on skeleton maps)."""
    from kinemate.cli import main
    from kinemate.io import probe_video

    out = tmp_path / "demo.mp4"
    rc = main(["animate", "--model", "kinemate-tiny", "--example", "--control", "pose",
               "-o", str(out), "--size", "64x64", "--max-frames", "3", "--steps", "1",
               "--context-frames", "3", "--context-overlap", "1",
               "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "model: kinemate-tiny" in printed and str(out) in printed
    assert probe_video(out).num_frames == 3


def test_cli_animate_needs_inputs_or_example(tmp_path, capsys):
    from kinemate.cli import main

    assert main(["animate", "-o", str(tmp_path / "o.mp4")]) == 2
    assert "--example" in capsys.readouterr().err
    assert main(["animate", "--example", "a.png", "-o", str(tmp_path / "o.mp4")]) == 2
    assert not list(tmp_path.iterdir())


def test_cli_animate_rejects_bad_size(release_dir, demo_inputs, tmp_path, capsys):
    from kinemate.cli import main

    rc = main(["animate", "--weights", str(release_dir), str(demo_inputs / "demo4.png"),
               str(demo_inputs / "demo4_densepose.mp4"), "-o", str(tmp_path / "o.mp4"),
               "--size", "60x64"])
    assert rc == 2 and "multiples of 8" in capsys.readouterr().err


def _inputs(n: int, size=(64, 48), seed=0):
    rng = np.random.default_rng(seed)
    w, h = size
    ref = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    controls = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    return ref, controls


def test_any_frame_count_and_controlnet_once_per_frame_per_step(tiny_pipe):
    ref, controls = _inputs(7)
    seen = []
    hook = tiny_pipe.controlnet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(args[0].shape[0]), with_kwargs=True)
    windows = []
    try:
        frames = tiny_pipe(ref, controls, steps=2, context_frames=4,
                           context_overlap=2, seed=1, progress=False,
                           callback=lambda i, t, info: windows.append(info["windows"]))
    finally:
        hook.remove()
    assert frames.shape == (7, 48, 64, 3) and frames.dtype == np.uint8
    assert windows[0] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 0], [6, 0, 1, 2]]
    assert sum(seen) == 7 * 2  # every frame exactly once per step
    assert max(seen) <= 4      # computed per window, never all frames at once


def test_seed_reproducible_and_noise_tiling(tiny_pipe):
    ref, controls = _inputs(5)
    kwargs = dict(steps=1, context_frames=4, context_overlap=1, progress=False)
    a = tiny_pipe.sample_latents(ref, controls, seed=5, **kwargs)
    b = tiny_pipe.sample_latents(ref, controls, seed=5, **kwargs)
    c = tiny_pipe.sample_latents(ref, controls, seed=6, **kwargs)
    assert torch.equal(a, b) and not torch.equal(a, c)
    tiled = tiny_pipe.initial_noise(5, 48, 64, seed=1, tiling=2)
    assert torch.equal(tiled[:, :, 0], tiled[:, :, 2]) and torch.equal(tiled[:, :, 1], tiled[:, :, 3])
    assert not torch.equal(tiled[:, :, 0], tiled[:, :, 1])


def test_open_windows_and_no_guidance_run(tiny_pipe):
    ref, controls = _inputs(6)
    windows = []
    out = tiny_pipe.sample_latents(ref, controls, steps=1, guidance=1.0,
                                   context_frames=4, context_overlap=1, closed_loop=False,
                                   progress=False, callback=lambda i, t, info: windows.append(info["windows"]))
    assert windows[0] == [[0, 1, 2, 3], [2, 3, 4, 5]]
    assert out.shape == (1, 4, 6, 6, 8) and torch.isfinite(out).all()


def test_lean_and_official_paths_agree(tiny_pipe):
    ref, controls = _inputs(6)
    kwargs = dict(steps=1, context_frames=4, context_overlap=2, seed=2, progress=False)
    lean = tiny_pipe.sample_latents(ref, controls, lean=True, **kwargs)
    official = tiny_pipe.sample_latents(ref, controls, lean=False, **kwargs)
    torch.testing.assert_close(lean, official, atol=1e-4, rtol=1e-4)


def test_mismatched_sizes_are_input_errors(tiny_pipe):
    from kinemate.errors import InputError

    ref, controls = _inputs(2)
    with pytest.raises(InputError, match="same size"):
        tiny_pipe(ref[:40], controls, steps=1, progress=False)
    with pytest.raises(InputError, match="multiple of 8"):
        tiny_pipe(ref[:44], controls[:, :44], steps=1, progress=False)


@pytest.mark.parametrize("name", ["DPMSolverMultistepScheduler", "EulerDiscreteScheduler"])
def test_other_diffusers_schedulers(tiny_pipe, name):
    import diffusers

    ref, controls = _inputs(4)
    original = tiny_pipe.scheduler
    tiny_pipe.scheduler = getattr(diffusers, name).from_config(original.config)
    try:
        out = tiny_pipe.sample_latents(ref, controls, steps=2, context_frames=4,
                                       context_overlap=1, progress=False)
    finally:
        tiny_pipe.scheduler = original
    assert out.shape == (1, 4, 4, 6, 8) and torch.isfinite(out).all()


def test_context_longer_than_positional_table_is_a_usage_error(tiny_pipe):
    from kinemate.errors import UsageError

    ref, controls = _inputs(30)
    with pytest.raises(UsageError, match="24 frames"):
        tiny_pipe.sample_latents(ref, controls, steps=1, context_frames=28,
                                 progress=False)


def test_windows_batched_through_the_unet_give_the_same_video(tiny_pipe):
    ref, controls = _inputs(9)
    kwargs = dict(steps=1, context_frames=4, context_overlap=1, seed=4, progress=False)
    calls = []
    hook = tiny_pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        one = tiny_pipe.sample_latents(ref, controls, **kwargs)
        n_single = len(calls)
        three = tiny_pipe.sample_latents(ref, controls, window_batch=3, **kwargs)
    finally:
        hook.remove()
    assert n_single == 3 and len(calls) - n_single == 1  # windows [0-3] [3-6] [6-8,0]
    torch.testing.assert_close(three, one, atol=1e-5, rtol=1e-5)


def test_latent_size_follows_the_vae_downsampling(tiny_pipe):
    """A 3-level VAE (4x, as a small model may use) with a ControlNet embedding to match: the
    pipeline sizes its latents by the VAE, not by SD's fixed 8."""
    import copy

    from diffusers import AutoencoderKL, ControlNetModel

    pipe = copy.copy(tiny_pipe)
    pipe.denoiser = copy.copy(tiny_pipe.denoiser)
    torch.manual_seed(0)
    pipe.vae = AutoencoderKL(block_out_channels=(8, 8, 8), layers_per_block=1, norm_num_groups=4,
                             down_block_types=("DownEncoderBlock2D",) * 3,
                             up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4)
    config = {k: v for k, v in tiny_pipe.controlnet.config.items() if not k.startswith("_")}
    config["conditioning_embedding_out_channels"] = (8, 8, 16)
    pipe.denoiser.controlnet = ControlNetModel(**config)
    assert pipe.latent_factor == 4 and tiny_pipe.latent_factor == 8
    ref, controls = _inputs(3, size=(32, 32))
    latents = pipe.sample_latents(ref, controls, steps=1, context_frames=3,
                                  context_overlap=1, seed=0, progress=False)
    assert latents.shape[-2:] == (8, 8)
    assert pipe(ref, controls, steps=1, context_frames=3, context_overlap=1,
                seed=0, progress=False).shape == (3, 32, 32, 3)


def test_init_strength_starts_from_the_noised_reference(tiny_pipe):
    from kinemate.errors import UsageError

    ref, controls = _inputs(4)
    kw = dict(steps=4, guidance=1.0, context_frames=4, context_overlap=1,
              progress=False, seed=3)
    seen = []
    full = tiny_pipe.sample_latents(ref, controls, **kw, callback=lambda i, t, _: seen.append(int(t)))
    assert torch.equal(full, tiny_pipe.sample_latents(ref, controls, **kw, init_strength=1.0))
    half = []
    out = tiny_pipe.sample_latents(ref, controls, **kw, init_strength=0.5,
                                   callback=lambda i, t, _: half.append(int(t)))
    assert half == seen[2:]  # only the last half of the schedule runs
    # one last step from a barely noised reference: every frame stays close to the reference
    last = tiny_pipe.sample_latents(ref, controls, **kw, init_strength=0.25)
    ref_lat = tiny_pipe.encode_reference(ref).unsqueeze(2)
    assert float((last - ref_lat).abs().mean()) < 0.2 * float((full - ref_lat).abs().mean())
    assert not torch.equal(out, full)
    for bad in (0.0, 1.5):
        with pytest.raises(UsageError, match="init_strength"):
            tiny_pipe.sample_latents(ref, controls, **kw, init_strength=bad)


def test_pad_to_samples_the_official_padded_video_and_cuts_it_back(tiny_pipe):
    from kinemate.errors import UsageError

    ref, controls = _inputs(5)
    kw = dict(steps=1, guidance=1.0, context_frames=4, context_overlap=1,
              progress=False, seed=2)
    windows = []
    padded = tiny_pipe.sample_latents(ref, controls, **kw, pad_to=4,
                                      callback=lambda i, t, info: windows.append(info["windows"]))
    # the official scripts: the last control frame repeated up to 8 frames, the result cut to 5
    by_hand = np.concatenate([controls, np.repeat(controls[-1:], 3, axis=0)])
    full = tiny_pipe.sample_latents(ref, by_hand, **kw)
    assert padded.shape[2] == 5 and torch.equal(padded, full[:, :, :5])
    assert max(max(w) for w in windows[0]) == 7
    # a different window layout than the unpadded video, so a different result
    assert not torch.equal(padded, tiny_pipe.sample_latents(ref, controls, **kw))
    assert torch.equal(tiny_pipe.sample_latents(ref, controls, **kw, pad_to=5),
                       tiny_pipe.sample_latents(ref, controls, **kw, pad_to=0))
    with pytest.raises(UsageError, match="pad_to"):
        tiny_pipe.sample_latents(ref, controls, **kw, pad_to=-1)
    noise = tiny_pipe.initial_noise(5, *ref.shape[:2], seed=2)
    with pytest.raises(UsageError, match="needs 8"):
        tiny_pipe.sample_latents(ref, controls, **kw, pad_to=4, latents=noise)
