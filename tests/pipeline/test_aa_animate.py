"""``kinemate animate --model animate-anyone``: the published layout (tiny golden weights) end
to end through the CLI, with skeleton maps from kinemate's own pose extraction."""

from __future__ import annotations

from pathlib import Path

import pytest

AA = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "animate-anyone"


@pytest.fixture(scope="module")
def weights() -> Path:
    if not (AA / "golden" / "weights").is_dir():
        pytest.skip(f"Animate Anyone golden weights not found at {AA}")
    return AA / "golden" / "weights"


def test_cli_animate_anyone_from_a_dance_video(weights, tmp_path, capsys, one_thread):
    """Photo + dance video -> pose extracted, retargeted and drawn as skeleton maps (the
    family's control kind, chosen by --control auto) -> Animate Anyone -> video."""
    from kinemate.cli import main
    from kinemate.cli.animate import example_inputs
    from kinemate.io import probe_video

    photo, dance = example_inputs()
    out = tmp_path / "out.mp4"
    rc = main(["animate", "--model", "animate-anyone", "--weights", str(weights), str(photo),
               str(dance), "-o", str(out), "--size", "64x96", "--max-frames", "3",
               "--steps", "1", "--context-frames", "3", "--context-overlap", "1",
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "animate-anyone" in printed
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height) == (3, 64, 96)


def test_cli_animate_anyone_refuses_densepose_control(weights, tmp_path, capsys):
    """The family was trained on skeleton maps: DensePose renders are refused, not run."""
    from kinemate.cli import main
    from kinemate.cli.animate import example_inputs

    photo, dance = example_inputs()
    rc = main(["animate", "--model", "animate-anyone", "--weights", str(weights), str(photo),
               str(dance), "-o", str(tmp_path / "o.mp4"), "--control", "densepose",
               "--size", "64x96", "--max-frames", "2", "--steps", "1", "--no-progress"])
    assert rc != 0
    assert "skeleton" in capsys.readouterr().err.lower()
    assert not (tmp_path / "o.mp4").exists()


def test_windows_batched_and_pose_guider_once_per_frame_and_step(weights, one_thread):
    """window_batch=2 gives the same latents as one window per call; the pose guider runs
    on each frame once per step however many windows hold the frame."""
    import numpy as np
    import torch

    from kinemate.pipeline import load_pipeline

    pipe = load_pipeline(weights)
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)
    controls = rng.integers(0, 256, (10, 128, 64, 3), dtype=np.uint8)
    frames = []
    hook = pipe.pose_guider.register_forward_hook(lambda m, i, o: frames.append(i[0].shape[0]))
    try:
        one = pipe.sample_latents(ref, controls, steps=2, context_frames=4, context_overlap=2,
                                  progress=False)
    finally:
        hook.remove()
    assert sum(frames) == 2 * len(controls)  # 5 closed-loop windows cover each frame twice
    two = pipe.sample_latents(ref, controls, steps=2, context_frames=4, context_overlap=2,
                              window_batch=2, progress=False)
    torch.testing.assert_close(one, two, atol=1e-4, rtol=1e-4)
