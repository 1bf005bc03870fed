"""Text2Video-Zero: speed against diffusers' reference, and memory versus video length (CPU).

``speed``: one pose-mode denoising step on **full-size** Stable Diffusion 1.5 UNet + ControlNet
(random weights, seeded; SD1.5's configs) at 256x256 (32x32 latents), guidance on (batch 2 x
frames), kinemate's ``AnimationPipeline.sample_latents`` against diffusers'
``StableDiffusionControlNetPipeline`` with ``CrossFrameAttnProcessor2_0(batch_size=2)`` on the
UNet and the ControlNet (the reference recipe), side by side in one process on the **same
modules and inputs** (same initial latent for every frame, same pose maps, same text
embeddings; no VAE, no CLIP: ``prompt_embeds`` are given, the reference returns latents),
alternating who goes first, best of ``--repeat`` in wall time and in CPU time (the process's;
with one thread it is less disturbed by other jobs on a shared machine than wall time); the
latents after the step are compared.

``memory``: the tiny golden model (``$KINEMATE_T2VZ_GOLDEN_DIR`` or
../shared/reference/text2video-zero/golden) through ``load_pipeline``, pose mode with the
official preset's chunks (frame 0 + 7 new frames per call) and text mode; each frame count in a
fresh process; pose maps come from a lazy sequence, decoded frames are dropped as they stream
out; reported: RSS after loading and a warm-up run, and the peak RSS while sampling + decoding.

    nice .venv/bin/python benchmarks/bench_t2vz.py speed --frames 8 --repeat 2
    .venv/bin/python benchmarks/bench_t2vz.py memory --frames 16 64 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("KINEMATE_T2VZ_GOLDEN_DIR",
                             REPO.parent / "shared/reference/text2video-zero/golden"))
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, cross_attention_dim=768,
                 attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280),
                 layers_per_block=2)


class LazyPoses:
    """``n`` random uint8 pose maps, made when asked (nothing held)."""

    def __init__(self, n: int, h: int, w: int):
        self.n, self.h, self.w = n, h, w

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import numpy as np

        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.random.default_rng(i).integers(0, 256, (self.h, self.w, 3), dtype=np.uint8)


# -- speed ---------------------------------------------------------------------------------
def speed(frames: int, size: int, repeat: int, threads: int) -> None:
    import numpy as np
    import torch
    from diffusers import (AutoencoderKL, ControlNetModel, StableDiffusionControlNetPipeline,
                           UNet2DConditionModel)
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import \
        CrossFrameAttnProcessor2_0

    from kinemate.models.text2video_zero import DDIM_SD15
    from kinemate.models.text2video_zero.denoiser import T2VZDenoiser
    from kinemate.models.text2video_zero.attention import install
    from kinemate.pipeline import AnimationPipeline
    from kinemate.pipeline.animation import make_scheduler

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t = time.perf_counter()
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    controlnet = ControlNetModel(**{k: v for k, v in SD15_UNET.items()
                                    if k not in ("sample_size", "out_channels")}).eval()
    with torch.no_grad():  # zero convolutions get weights, so the ControlNet does something
        for p in controlnet.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2).eval()
    print(f"built full-size random UNet ({sum(p.numel() for p in unet.parameters()) / 1e6:.1f} M) "
          f"+ ControlNet ({sum(p.numel() for p in controlnet.parameters()) / 1e6:.1f} M) in "
          f"{time.perf_counter() - t:.0f} s; {frames} frames at {size}x{size}, 1 step, "
          f"guidance 9, {threads} thread(s)", flush=True)
    g = torch.Generator().manual_seed(42)
    cond = torch.randn(1, 77, 768, generator=g)
    uncond = torch.randn(1, 77, 768, generator=g)
    poses = np.stack([LazyPoses(frames, size, size)[i] for i in range(frames)])
    latent = torch.randn((1, 4, size // 8, size // 8), generator=torch.Generator().manual_seed(42))

    denoiser = T2VZDenoiser(unet, controlnet, None, None)
    kin = AnimationPipeline(denoiser, vae, make_scheduler(DDIM_SD15), name="text2video-zero",
                            family="text2video-zero", control_kind="openpose")
    ref = StableDiffusionControlNetPipeline(vae=vae, text_encoder=None, tokenizer=None,
                                            unet=unet, controlnet=controlnet,
                                            scheduler=make_scheduler(DDIM_SD15),
                                            safety_checker=None, feature_extractor=None,
                                            requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    image = torch.from_numpy(poses).permute(0, 3, 1, 2).float() / 255

    def run_kinemate():
        for model in (unet, controlnet):
            install(model)
        return kin.sample_latents(None, poses, text_embeds_cond=cond, text_embeds_uncond=uncond,
                                  steps=1, guidance=9.0, seed=42, noise_tiling=1,
                                  context_frames=frames, progress=False)[0].transpose(0, 1)

    def run_reference():
        for model in (unet, controlnet):
            model.set_attn_processor(CrossFrameAttnProcessor2_0(batch_size=2))
        return ref(prompt_embeds=cond.expand(frames, -1, -1),
                   negative_prompt_embeds=uncond.expand(frames, -1, -1), image=image,
                   latents=latent.repeat(frames, 1, 1, 1), height=size, width=size,
                   num_inference_steps=1, guidance_scale=9.0, eta=0.0,
                   output_type="latent").images

    times = {"kinemate": [], "diffusers": []}
    cpu = {"kinemate": [], "diffusers": []}
    outs = {}
    sides = [("diffusers", run_reference), ("kinemate", run_kinemate)]
    for r in range(repeat):
        for name, fn in (sides if r % 2 == 0 else sides[::-1]):  # alternate who goes first
            t, c = time.perf_counter(), time.process_time()
            with torch.no_grad():
                outs[name] = fn()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            print(f"  {name}: {times[name][-1]:.2f} s wall, {cpu[name][-1]:.2f} s CPU",
                  flush=True)
    best = {k: min(v) for k, v in times.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}
    diff = float((outs["kinemate"] - outs["diffusers"]).abs().max())
    print(json.dumps({"frames": frames, "size": size, "threads": threads, "repeat": repeat,
                      "best_wall_s": best, "best_cpu_s": best_cpu,
                      "ratio_wall_kinemate_over_diffusers": best["kinemate"] / best["diffusers"],
                      "ratio_cpu_kinemate_over_diffusers":
                      best_cpu["kinemate"] / best_cpu["diffusers"],
                      "max_abs_diff_latents": diff,
                      "latents_max_abs": float(outs["diffusers"].abs().max())}))


# -- memory --------------------------------------------------------------------------------
def child(frames: int, mode: str, steps: int, size: int) -> dict:
    import psutil
    import torch

    from kinemate.pipeline import load_pipeline

    torch.set_num_threads(1)
    proc = psutil.Process()
    pipe = load_pipeline(GOLDEN, model="text2video-zero")  # official preset: chunks of 8
    kw = dict(prompt="a cat dancing", steps=steps, progress=False)

    def run(n):
        if mode == "pose":
            return pipe.stream(None, LazyPoses(n, size, size), **kw)
        return pipe.stream(None, None, num_frames=n, size=(size, size), **kw)

    for _ in run(8):  # warm-up
        pass
    baseline = proc.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    count = sum(1 for _ in run(frames))
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    assert count == frames
    return {"frames": frames, "mode": mode, "baseline_rss_mb": baseline / 2**20,
            "peak_rss_mb": peak[0] / 2**20, "growth_mb": (peak[0] - baseline) / 2**20,
            "seconds": seconds}


def memory(frame_counts: list[int], modes: list[str], steps: int, size: int) -> None:
    for mode in modes:
        rows = []
        for n in frame_counts:
            out = subprocess.run([sys.executable, __file__, "child", "--frames", str(n),
                                  "--mode", mode, "--steps", str(steps), "--size", str(size)],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{mode} {n} frames failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{mode:4s} {r['frames']:4d} frames: baseline {r['baseline_rss_mb']:7.1f} MB  "
                  f"peak {r['peak_rss_mb']:7.1f} MB  growth {r['growth_mb']:6.1f} MB  "
                  f"({r['seconds']:.1f} s, {steps} step(s), {size}x{size})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["speed", "memory", "child"])
    ap.add_argument("--frames", type=int, nargs="+", default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--mode", nargs="+", default=["pose", "text"])
    args = ap.parse_args()
    if args.what == "speed":
        speed((args.frames or [8])[0], args.size or 256, args.repeat, args.threads)
    elif args.what == "memory":
        memory(args.frames or [16, 64, 256], args.mode, args.steps, args.size or 32)
    else:
        print(json.dumps(child(args.frames[0], args.mode[0], args.steps, args.size or 32)))


if __name__ == "__main__":
    main()
