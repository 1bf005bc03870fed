"""Lean exact path vs official-equivalent path: one denoising step on full-size SD1.5-shaped
random-weight models, CPU.

One step = appearance encoder on the reference latent + ControlNet on every frame + the video
UNet on one 16-frame window with CFG (batch 2 x 16 frames). The *official* path runs the
appearance encoder at batch 2 ([uncond; cond] text) and, in every reference-attention block,
attends every row (also the unconditional half) to [own tokens; reference tokens] with the
reference projected per frame, then recomputes the unconditional rows without reference — what
MagicAnimate does. The *lean* path (kinemate's default, same result within 1e-4 on the golden
cases) runs the appearance encoder at batch 1, attends only the conditional rows to the
reference, and projects the reference keys/values once. Each path runs in its own process;
seconds are the best of ``--repeat`` timed runs after one warm-up; peak RSS is the process
peak (weights included: ~10 GB of fp32 weights).

    .venv/bin/python benchmarks/bench_engine_speed.py --size 64      # 64x64 px = 8x8 latents
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO.parent / "shared/reference/magicanimate/configs"


def random_fill(model, device="cpu") -> None:
    """Materialise a meta-built model with cheap random weights (N(0, 0.02); norms at 1)."""
    import torch

    from kinemate.models.motion import sinusoidal_table

    model.to_empty(device=device)
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("pos_encoder.pe"):
                p.copy_(sinusoidal_table(p.shape[1], p.shape[2]))
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    model.eval().requires_grad_(False)


def child(path: str, size: int, frames: int, repeat: int, threads: int | None) -> dict:
    import torch
    from diffusers import ControlNetModel

    from kinemate.models import AppearanceEncoder, VideoUNet
    from kinemate.models.loading import build_on_meta
    from kinemate.models.magicanimate import MagicAnimateDenoiser
    from kinemate.pipeline import AnimationPipeline

    if threads:
        torch.set_num_threads(threads)
    load = lambda name: json.loads((CONFIGS / name).read_text())  # noqa: E731
    sd15 = load("sd15_unet_config.json")
    motion = load("magicanimate_inference.json")["unet_additional_kwargs"]
    t0 = time.perf_counter()
    unet = build_on_meta(lambda: VideoUNet.from_2d_config(sd15, motion))
    appearance = build_on_meta(lambda: AppearanceEncoder.from_unet_config(
        load("appearance_encoder_config.INFERRED.json")))
    controlnet = build_on_meta(lambda: ControlNetModel.from_config(
        load("densepose_controlnet_config.INFERRED.json")))
    torch.manual_seed(0)  # the same random weights in both processes
    for m in (unet, appearance, controlnet):
        random_fill(m)
    build_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 77, 768, generator=g)
    pipe = AnimationPipeline(MagicAnimateDenoiser(unet, appearance, controlnet,
                                                  text_embeds_uncond=text * 0.5,
                                                  text_embeds_cond=text), vae=None)
    h = w = size // 8
    latents = torch.randn(1, 4, frames, h, w, generator=g)
    ref_latents = torch.randn(1, 4, h, w, generator=g)
    controls = torch.randint(0, 256, (frames, size, size, 3), generator=g, dtype=torch.uint8).numpy()
    windows = [list(range(frames))]
    lean = path == "lean"

    video = pipe.denoiser.start_video(ref_latents, controls, reference_bank_dtype="float16",
                                      lean=lean)

    def step():
        return pipe.predict_noise(latents, torch.tensor(961), video, windows, guidance=7.5)[0]

    out = step()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - t)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.save(out, f"/tmp/kinemate_bench_speed_{path}.pt")
    return {"path": path, "seconds": min(times), "all_seconds": times, "peak_rss_gb": peak_kb / 2**20,
            "build_seconds": build_s, "threads": torch.get_num_threads(), "size": size,
            "frames": frames}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="square image size in pixels (default 64)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--paths", nargs="+", default=["official", "lean"])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.size, args.frames, args.repeat, args.threads)))
        return
    results = {}
    for path in args.paths:
        cmd = [sys.executable, __file__, "--child", path, "--size", str(args.size), "--frames",
               str(args.frames), "--repeat", str(args.repeat)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = results[path] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{path:8s}: {r['seconds']:7.2f} s/step (runs {', '.join(f'{s:.2f}' for s in r['all_seconds'])})"
              f"  peak RSS {r['peak_rss_gb']:.2f} GB  [{args.size}x{args.size} px, {args.frames} frames, "
              f"{r['threads']} threads, build {r['build_seconds']:.0f} s]", flush=True)
    if {"official", "lean"} <= set(results):
        import torch

        a = torch.load("/tmp/kinemate_bench_speed_official.pt")
        b = torch.load("/tmp/kinemate_bench_speed_lean.pt")
        print(f"speed-up {results['official']['seconds'] / results['lean']['seconds']:.2f}x; "
              f"max |lean - official| on the guided prediction: {(a - b).abs().max().item():.2e} "
              f"(max |official| {a.abs().max().item():.2f})")


if __name__ == "__main__":
    main()
