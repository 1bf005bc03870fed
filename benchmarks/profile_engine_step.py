"""Where does one denoising step go? Full-size MagicAnimate networks (random weights), one
step of ``AnimationPipeline.predict_noise`` on one 16-frame window with guidance 7.5, under
``torch.profiler``: seconds per network (appearance encoder, ControlNet, video UNet, the
engine's own work) and the operators that take the most time.

    .venv/bin/python benchmarks/profile_engine_step.py --size 64 --threads 2     # CPU, fp32
    python benchmarks/profile_engine_step.py --device cuda --dtype float16 --size 512

On the CPU the networks take ~10 GB of memory (fp32 weights) whatever the size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine_gpu import build  # noqa: E402
from bench_engine_speed import CONFIGS  # noqa: E402


def profile(device: str, dtype_name: str, size: int, frames: int, repeat: int) -> dict:
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    dtype = getattr(torch, dtype_name)
    pipe = build(CONFIGS, device, dtype)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    controls = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    o = pipe.resolve(guidance=7.5)
    plan = pipe.plan(reference, controls, o)
    scheduler = pipe.scheduler
    scheduler.set_timesteps(25, device=pipe.device)
    latents = pipe.initial_noise(frames, size, size, 1).to(pipe.device, dtype)
    video = pipe.start_video(reference, controls, o)
    t = scheduler.timesteps[0]

    spent: dict[str, float] = {}
    hooks = []
    for name, module in pipe.denoiser.components().items():
        def pre(_m, _a, name=name):
            sync()
            spent.setdefault("_start", {})[name] = time.perf_counter()

        def post(_m, _a, _o, name=name):
            sync()
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - spent["_start"][name]

        hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def step():
        return pipe.predict_noise(latents, t, video, plan.windows, guidance=7.5,
                                  scheduler=scheduler)

    step()  # warm-up
    spent.clear()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeat):
        step()
    sync()
    total = (time.perf_counter() - t0) / repeat
    networks = {k: v / repeat for k, v in spent.items() if k != "_start"}
    for h in hooks:
        h.remove()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        step()
        sync()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    whole = sum(getattr(e, key) for e in events) or 1
    top = [{"op": e.key, "share": round(getattr(e, key) / whole, 3), "calls": e.count}
           for e in events[:15]]
    return {"device": device, "dtype": dtype_name, "size": size, "frames": frames,
            "threads": torch.get_num_threads(), "step_s": round(total, 3),
            "networks_s": {k: round(v, 3) for k, v in networks.items()},
            "engine_s": round(total - sum(networks.values()), 3), "top_ops": top}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--size", type=int, default=64, help="square size in pixels (default 64)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = profile(args.device, args.dtype, args.size, args.frames, args.repeat)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
