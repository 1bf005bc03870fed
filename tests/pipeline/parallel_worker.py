"""One process of the window-parallel test (tests/pipeline/test_parallel.py), started by
``torchrun --nproc-per-node 2``: the kinemate-tiny engine split over the processes (gloo),
rank 0's cancellation, a resume from rank 0's saved state, then ``kinemate animate`` as a
launcher runs it. Each rank writes what it saw to ``OUT/rank<R>.json`` and its latents to
``OUT/rank<R>.safetensors``; the test compares them with single-process runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch


def main(out: Path) -> None:
    from safetensors.torch import save_file

    from kinemate.cli import main as cli
    from kinemate.pipeline import load_pipeline
    from kinemate.pipeline.parallel import init_from_env
    from kinemate.pipeline.resume import SamplerCheckpoint

    torch.set_num_threads(1)
    parallel, device = init_from_env("cpu")
    rank = parallel.rank
    job = json.loads((out / "job.json").read_text())
    inputs = np.load(out / "inputs.npz")
    ref, controls = inputs["reference"], inputs["controls"]
    pipe = load_pipeline()  # the bundled kinemate-tiny
    seen: dict = {"world_size": parallel.world_size, "device": device, "windows": {}}
    latents = {}
    for name, options in job["cases"].items():
        windows = []
        latents[name] = pipe.sample_latents(
            ref, controls, progress=False, parallel=parallel,
            window_callback=lambda step, w: windows.append([step, w]), **options)
        seen["windows"][name] = windows

    # rank 0 stops the job from its window callback at the second step
    def stop(step, window):
        if step == 1:
            raise KeyboardInterrupt("stopped by rank 0")

    try:
        pipe.sample_latents(ref, controls, progress=False, parallel=parallel,
                            window_callback=stop, **job["cases"]["cfg"])
        seen["cancel"] = "finished"
    except BaseException as exc:  # noqa: BLE001 - what each rank saw is the result
        seen["cancel"] = type(exc).__name__
    # resume the state a single-process run left after its first step (rank 0 reads it)
    checkpoint = SamplerCheckpoint(out / "state.safetensors", resume=True)
    latents["resumed"] = pipe.sample_latents(ref, controls, progress=False, parallel=parallel,
                                             checkpoint=checkpoint, **job["cases"]["cfg"])
    seen["resumed_at"] = checkpoint.resumed_at
    save_file({k: v.contiguous() for k, v in latents.items()}, str(out / f"rank{rank}.safetensors"))
    # the command line, as torchrun runs it: rank 0 writes the video, the others only compute
    seen["cli_rc"] = cli(job["cli"])
    (out / f"rank{rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
