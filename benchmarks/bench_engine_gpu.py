"""The full MagicAnimate-size engine on a GPU: seconds and peak GPU memory of whole animations.

SD1.5-shaped video UNet (with the temporal modules), appearance encoder, DensePose ControlNet
and SD's VAE, built from the configs in ``--configs`` with random weights (no download; speed
and memory do not depend on the weight values). Each run samples a 512x512 (``--size``)
animation with the official settings (25 DDIM steps, guidance 7.5, 16-frame windows, the
model's default overlap) and decodes every frame, on CUDA in ``--dtype``. Reported per run:
sampling seconds, decoding seconds, seconds per output frame and ``torch.cuda`` peak memory
(allocated and reserved). Runs are independent; one that fails is reported and the rest go on.

    python benchmarks/bench_engine_gpu.py --frames 16 64 --json results.json

Needs a CUDA device; on a CPU-only machine it exits with a message.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine_speed import CONFIGS, random_fill  # noqa: E402


def build(configs: Path, device: str, dtype):
    import torch
    from diffusers import AutoencoderKL, ControlNetModel

    from kinemate.models import AppearanceEncoder, VideoUNet
    from kinemate.models.loading import build_on_meta
    from kinemate.models.magicanimate import MagicAnimateDenoiser
    from kinemate.pipeline import AnimationPipeline

    load = lambda name: json.loads((configs / name).read_text())  # noqa: E731
    sd15 = load("sd15_unet_config.json")
    motion = load("magicanimate_inference.json")["unet_additional_kwargs"]
    torch.manual_seed(0)
    unet = build_on_meta(lambda: VideoUNet.from_2d_config(sd15, motion))
    appearance = build_on_meta(lambda: AppearanceEncoder.from_unet_config(
        load("appearance_encoder_config.INFERRED.json")))
    controlnet = build_on_meta(lambda: ControlNetModel.from_config(
        load("densepose_controlnet_config.INFERRED.json")))
    for m in (unet, appearance, controlnet):
        random_fill(m, device)
        m.to(dtype)
    vae = AutoencoderKL.from_config(load("sd_vae_ft_mse_config.json")).to(device, dtype).eval()
    text = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(0))
    denoiser = MagicAnimateDenoiser(unet, appearance, controlnet, text_embeds_uncond=text * 0.5,
                                    text_embeds_cond=text)
    return AnimationPipeline(denoiser, vae, name="magicanimate-random", family="magicanimate")


def run_one(pipe, size: int, frames: int, steps: int, lean: bool, window_batch: int) -> dict:
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    controls = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    latents = pipe.sample_latents(reference, controls, steps=steps,
                                  guidance=7.5, lean=lean, window_batch=window_batch,
                                  progress=False)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    decoded = sum(1 for _ in pipe.decode(latents))
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    return {"frames": frames, "size": size, "steps": steps, "path": "lean" if lean else "official",
            "window_batch": window_batch, "sample_s": round(t1 - t0, 2),
            "decode_s": round(t2 - t1, 2), "s_per_frame": round((t2 - t0) / decoded, 3),
            "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=Path, default=CONFIGS,
                    help="folder with the SD1.5 / MagicAnimate config JSONs (default: the shared "
                         "reference folder beside the repo)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--window-batch", type=int, nargs="+", default=[1],
                    help="windows per UNet call to try (default 1)")
    ap.add_argument("--official", action="store_true",
                    help="also time the official-equivalent attention path at the first length")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("bench_engine_gpu: no CUDA device; run this on a machine with an NVIDIA GPU",
              file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    pipe = build(args.configs, "cuda", dtype)
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "dtype": args.dtype, "build_s": round(time.perf_counter() - t0, 1),
            "weights_gib": round(torch.cuda.memory_allocated() / 2**30, 2), "runs": []}
    print(json.dumps({k: v for k, v in info.items() if k != "runs"}), flush=True)
    run_one(pipe, args.size, 16, 2, True, 1)  # warm-up: kernels, allocator, cuDNN choices
    plan = [(f, True, wb) for f in args.frames for wb in args.window_batch]
    if args.official:
        plan.insert(1, (args.frames[0], False, 1))
    for frames, lean, wb in plan:
        try:
            r = run_one(pipe, args.size, frames, args.steps, lean, wb)
        except Exception as exc:  # report and go on: one out-of-memory must not lose the rest
            r = {"frames": frames, "path": "lean" if lean else "official", "window_batch": wb,
                 "error": f"{type(exc).__name__}: {exc}"[:300]}
            torch.cuda.empty_cache()
        info["runs"].append(r)
        print(json.dumps(r), flush=True)
        if args.json:
            args.json.write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
