"""Window-parallel sampling (kinemate.pipeline.parallel): the windows of each step split over
two real processes started by torchrun (gloo on the CPU), against single-process runs of the
same jobs: kinemate-tiny with and without guidance, batched windows, frames in up to four
windows, rank 0 stopping the job, a resume from rank 0's saved state, and
``kinemate animate`` under the launcher."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kinemate.pipeline.parallel import share

WORKER = Path(__file__).with_name("parallel_worker.py")
CASES = {  # frames in two windows each (bitwise path) and in four (rounding may differ)
    "cfg": dict(steps=2, guidance=2.0, eta=0.5, seed=3, context_frames=8, context_overlap=4),
    "batched": dict(steps=1, guidance=1.0, seed=4, context_frames=8, context_overlap=6,
                    window_batch=2, closed_loop=False),
}


def test_share_is_consecutive_and_balanced():
    for count in range(0, 12):
        for world in range(1, 5):
            parts = [share(count, r, world) for r in range(world)]
            assert [i for p in parts for i in p] == list(range(count))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path, golden_release, demo_inputs, one_thread):
    from safetensors.torch import load_file

    from kinemate.cli import main as cli
    from kinemate.io import probe_video, read_video
    from kinemate.pipeline import load_pipeline
    from kinemate.pipeline.resume import SamplerCheckpoint

    rng = np.random.default_rng(7)
    ref = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    controls = rng.integers(0, 256, (12, 48, 64, 3), dtype=np.uint8)
    np.savez(tmp_path / "inputs.npz", reference=ref, controls=controls)
    cli_args = ["animate", "--model", "magicanimate", "--weights", str(golden_release),
                str(demo_inputs / "demo4.png"), str(demo_inputs / "demo4_densepose.mp4"),
                "--control", "densepose", "--size", "64x64", "--max-frames", "6", "--steps", "2",
                "--context-frames", "4", "--context-overlap", "2", "--seed", "5",
                "--no-progress", "--no-watermark"]
    job = {"cases": CASES, "cli": cli_args + ["-o", str(tmp_path / "parallel.mp4")]}
    (tmp_path / "job.json").write_text(json.dumps(job))

    # single-process runs; one of them interrupted after its first step leaves a state
    pipe = load_pipeline()
    single = {name: pipe.sample_latents(ref, controls, progress=False, **o)
              for name, o in CASES.items()}

    def interrupt(step, window):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipe.sample_latents(ref, controls, progress=False, window_callback=interrupt,
                            checkpoint=SamplerCheckpoint(tmp_path / "state.safetensors",
                                                         resume=False, every_s=0),
                            **CASES["cfg"])
    assert cli(cli_args + ["-o", str(tmp_path / "single.mp4")]) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
         str(WORKER), str(tmp_path)], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    got = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]

    for name in CASES:  # both ranks hold the single-process result
        for r in range(2):
            torch.testing.assert_close(got[r][name], single[name], rtol=1e-5, atol=1e-6)
        assert torch.equal(got[0][name], got[1][name])

    # rank 0 reports every window of every step (the other rank's after the reduction)
    windows = {name: len(pipe.plan(ref, controls, pipe.resolve(**o)).windows)
               for name, o in CASES.items()}
    for name, o in CASES.items():
        assert sorted(map(tuple, seen[0]["windows"][name])) == sorted(
            (s, w) for s in range(o["steps"]) for w in range(windows[name]))
        assert seen[1]["windows"][name] == []
    # rank 0's callback stops the job; the other process stops at the same step
    assert seen[0]["cancel"] == "KeyboardInterrupt" and seen[1]["cancel"] == "ParallelStop"
    # rank 0 read the saved state and sent it: the job continued from step 1
    assert seen[0]["resumed_at"] == 1 and seen[1]["resumed_at"] is None
    for r in range(2):
        torch.testing.assert_close(got[r]["resumed"], single["cfg"], rtol=1e-5, atol=1e-6)

    # kinemate animate under torchrun: one output, written by rank 0, the single run's frames
    assert [s["cli_rc"] for s in seen] == [0, 0]
    assert "window-parallel: 2 processes" in run.stdout
    assert run.stdout.count("wrote ") == 1
    assert probe_video(tmp_path / "parallel.mp4").num_frames == 6
    a = read_video(tmp_path / "parallel.mp4")[0].astype(int)
    b = read_video(tmp_path / "single.mp4")[0].astype(int)
    # (latents within ~1e-6 of each other; the random golden VAE and the codec make a few
    # pixels differ by up to ~20 levels, on average below one level)
    assert a.shape == b.shape and np.abs(a - b).mean() < 1.5
    assert not list(tmp_path.glob(".*kinemate-state*"))
