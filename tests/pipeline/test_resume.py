"""An interrupted render resumes from its last saved denoising step and gives the same frames
as a run that was never interrupted (tiny golden weights, small frames)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kinemate.errors import UsageError
from kinemate.pipeline.resume import SamplerCheckpoint

STEPS = 6


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def pipe(golden_release, one_thread):
    from kinemate import load_pipeline

    return load_pipeline(golden_release)


def _inputs(frames=5, size=32):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8))


def _crash_at(step):
    def callback(i, t, info):
        if i == step:
            raise Crash()
    return callback


@pytest.mark.parametrize("scheduler, extra", [
    ("DDIMScheduler", {}),
    ("DDIMScheduler", {"eta": 0.7}),  # stochastic: the sampler's generator is saved too
    ("DPMSolverMultistepScheduler", {}),  # multistep history in the scheduler's state
], ids=["ddim", "ddim-eta", "dpm-multistep"])
def test_resume_after_a_crash_equals_an_uninterrupted_run(pipe, tmp_path, scheduler, extra):
    import copy

    from kinemate.pipeline import make_scheduler

    run_pipe = copy.copy(pipe)
    run_pipe.scheduler = make_scheduler({**pipe.scheduler.config, "_class_name": scheduler})
    ref, controls = _inputs()
    kw = dict(steps=STEPS, context_frames=4, context_overlap=2, seed=5, progress=False, **extra)
    expected = run_pipe(ref, controls, **kw)
    state = tmp_path / "state.safetensors"
    crash_step = random.Random(scheduler + str(extra)).randrange(0, STEPS - 1)
    with pytest.raises(Crash):
        run_pipe(ref, controls, checkpoint=SamplerCheckpoint(state, resume=False, every_s=0),
                 callback=_crash_at(crash_step), **kw)
    assert state.is_file()
    ran = []
    resumed = run_pipe(ref, controls, checkpoint=SamplerCheckpoint(state, every_s=0),
                       callback=lambda i, t, info: ran.append(i), **kw)
    assert ran == list(range(crash_step + 1, STEPS))  # the step saved before the crash is not redone
    assert np.array_equal(resumed, expected)
    assert not state.exists()  # removed once the frames were complete


def test_a_state_is_only_resumed_by_its_own_job(pipe, tmp_path):
    ref, controls = _inputs()
    kw = dict(steps=STEPS, context_frames=4, context_overlap=2, progress=False)
    state = tmp_path / "state.safetensors"
    with pytest.raises(Crash):
        pipe(ref, controls, seed=1, checkpoint=SamplerCheckpoint(state, every_s=0),
             callback=_crash_at(2), **kw)
    with pytest.raises(UsageError, match="another job"):
        pipe(ref, controls, seed=2, checkpoint=SamplerCheckpoint(state), **kw)
    state.write_bytes(b"not a state")
    with pytest.raises(Exception, match="cannot be read"):
        pipe(ref, controls, seed=1, checkpoint=SamplerCheckpoint(state), **kw)


def test_cli_resumes_after_sigkill(golden_release, demo_inputs, tmp_path):
    """`kinemate animate` killed (SIGKILL) at a random step, then run again with --resume,
    writes the same frames as an uninterrupted run."""
    from kinemate.io import read_video

    def command(out, *extra):
        return [sys.executable, "-m", "kinemate", "animate", "--weights", str(golden_release),
                str(demo_inputs / "demo4.png"), str(demo_inputs / "demo4_densepose.mp4"),
                "-o", str(out), "--size", "64x64", "--max-frames", "6", "--steps", "40",
                "--context-frames", "4", "--context-overlap", "2", "--no-progress",
                "--no-watermark", *extra]

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run(command(tmp_path / "whole.mp4"), env=env, check=True, capture_output=True)
    out = tmp_path / "out.mp4"
    state = tmp_path / ".out.mp4.kinemate-state.safetensors"
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    wait_for = random.Random(7).uniform(0.0, 2.0)  # seconds of saved states before the kill
    first = None
    while proc.poll() is None and time.monotonic() < deadline:
        if state.is_file():
            first = first or time.monotonic()
            if time.monotonic() - first >= wait_for:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait()
    if proc.returncode == 0:
        pytest.skip("the run finished before it could be killed (machine too fast)")
    assert not out.exists() and state.is_file()
    done = subprocess.run(command(out, "--resume"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(read_video(out)[0], read_video(tmp_path / "whole.mp4")[0])
    assert not state.exists()


def test_window_callback_can_stop_a_step_between_windows(pipe):
    """A long step can be stopped between its windows (the service's cancel uses this)."""
    ref, controls = _inputs(frames=8)
    seen = []

    def stop_at_second_window(step, window):
        seen.append((step, window))
        if len(seen) == 2:
            raise Crash()

    with pytest.raises(Crash):
        pipe(ref, controls, steps=3, context_frames=4, context_overlap=2, progress=False,
             window_callback=stop_at_second_window)
    assert seen == [(0, 0), (0, 1)]  # stopped inside the first step
