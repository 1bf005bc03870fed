"""The full-size engine on a GPU: seconds and peak GPU memory of whole animations.

``--family magicanimate`` (default): SD1.5-shaped video UNet (with the temporal modules),
appearance encoder, DensePose ControlNet and SD's VAE, built from the configs in ``--configs``
with random weights (no download; speed and memory do not depend on the weight values). Each
run samples a 512x512 (``--size``) animation with the official settings (25 DDIM steps,
guidance 7.5, 16-frame windows, the model's default overlap) and decodes every frame, on CUDA
in ``--dtype``.

``--family animate-anyone``: Moore-AnimateAnyone's networks at full size with random weights
(denoising UNet with the AnimateDiff-v2 motion modules, reference UNet, pose guider, CLIP
ViT-L/14 image encoder, sd-vae-ft-mse; configs from ../shared/reference/animate-anyone/configs)
and its official settings: 72 frames at 512x768 (portrait), 30 DDIM steps, guidance 3.5,
closed-loop windows of 24 overlapping by 4.

Reported per run: sampling seconds, decoding seconds, seconds per output frame and
``torch.cuda`` peak memory (allocated and reserved). Runs are independent; one that fails is
reported and the rest go on.

    python benchmarks/bench_engine_gpu.py --frames 16 64 --json results.json
    python benchmarks/bench_engine_gpu.py --family animate-anyone --json aa.json  # 72 x 512x768
    python benchmarks/bench_engine_gpu.py --family animate-anyone --smoke  # CPU, tiny size

Needs a CUDA device; on a CPU-only machine it exits with a message. ``--smoke`` runs the same
code on the CPU in float32 at a tiny size (2 frames of 64x64/64x96, 1 step; the networks are
still full size: ~10 GB of memory) to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine_speed import CONFIGS, random_fill  # noqa: E402

AA_CONFIGS = CONFIGS.parents[1] / "animate-anyone/configs"
# per family: configs folder, size (W, H), frames, steps, guidance (the official settings)
FAMILY_DEFAULTS = {
    "magicanimate": (CONFIGS, (512, 512), [16, 64], 25, 7.5),
    "animate-anyone": (AA_CONFIGS, (512, 768), [72], 30, 3.5),
}


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


def build_animate_anyone(configs: Path, device: str, dtype):
    """Moore-AnimateAnyone's networks at full size, random weights, with the family's
    official sampling defaults (windows 24/4, closed loop)."""
    import torch
    from diffusers import AutoencoderKL

    from kinemate.models.animate_anyone import DEFAULT_OPTIONS, AnimateAnyoneDenoiser, networks
    from kinemate.models.loading import build_on_meta
    from kinemate.pipeline import AnimationPipeline
    from kinemate.pipeline.options import SamplingOptions

    load = lambda name: json.loads((configs / name).read_text())  # noqa: E731
    sd15 = load("sd15_unet_config.json")
    torch.manual_seed(0)
    unet = build_on_meta(lambda: networks.denoising_unet(sd15))
    reference = build_on_meta(lambda: networks.reference_unet(sd15))
    guider = build_on_meta(lambda: networks.pose_guider(sd15))
    for m in (unet, reference, guider):
        random_fill(m, device)
        m.to(dtype)
    with torch.device(device):  # CLIP: its own init (random_fill would touch position_ids)
        clip = networks.image_encoder(load("image_encoder_config.INFERRED.json"))
    clip = clip.to(device, dtype).eval().requires_grad_(False)
    vae = AutoencoderKL.from_config(load("sd_vae_ft_mse_config.json")).to(device, dtype).eval()
    denoiser = AnimateAnyoneDenoiser(unet, reference, guider, clip)
    return AnimationPipeline(denoiser, vae, name="animate-anyone-random", family="animate-anyone",
                             control_kind="openpose", default_size=(512, 768),
                             options=SamplingOptions.from_model(DEFAULT_OPTIONS))


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_one(pipe, size: tuple[int, int], frames: int, steps: int, lean: bool, window_batch: int,
            guidance: float = 7.5, device: str = "cuda") -> dict:
    import numpy as np
    import torch

    width, height = size
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    controls = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    latents = pipe.sample_latents(reference, controls, steps=steps,
                                  guidance=guidance, lean=lean, window_batch=window_batch,
                                  progress=False)
    _sync(device)
    t1 = time.perf_counter()
    decoded = sum(1 for _ in pipe.decode(latents))
    _sync(device)
    t2 = time.perf_counter()
    return {"frames": frames, "size": f"{width}x{height}", "steps": steps,
            "path": "lean" if lean else "official",
            "window_batch": window_batch, "sample_s": round(t1 - t0, 2),
            "decode_s": round(t2 - t1, 2), "s_per_frame": round((t2 - t0) / decoded, 3),
            "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "peak_reserved_gib": (round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda
                                  else None)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="magicanimate", choices=sorted(FAMILY_DEFAULTS),
                    help="which model family's full-size networks (default %(default)s)")
    ap.add_argument("--configs", type=Path, default=None,
                    help="folder with the family's config JSONs (default: the shared "
                         "reference folder beside the repo)")
    ap.add_argument("--size", default=None,
                    help="WxH (or one number for a square; default: the family's, 512x512 / "
                         "512x768)")
    ap.add_argument("--frames", type=int, nargs="+", default=None,
                    help="frame counts (default: 16 64 / 72)")
    ap.add_argument("--steps", type=int, default=None, help="default: the family's (25 / 30)")
    ap.add_argument("--smoke", action="store_true",
                    help="check the script on the CPU: float32, 2 frames at 64 px wide, 1 step")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--window-batch", type=int, nargs="+", default=[1],
                    help="windows per UNet call to try (default 1)")
    ap.add_argument("--official", action="store_true",
                    help="also time the official-equivalent attention path at the first length")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = ap.parse_args(argv)

    import torch

    from kinemate.io.framing import parse_size

    configs, (width, height), frames_default, steps_default, guidance = FAMILY_DEFAULTS[args.family]
    configs = args.configs or configs
    if args.size:
        size = args.size if "x" in args.size.lower() else f"{args.size}x{args.size}"
        width, height = parse_size(size)
    frames_list = args.frames or frames_default
    steps = args.steps or steps_default
    device, dtype_name = "cuda", args.dtype
    if args.smoke:
        device, dtype_name = "cpu", "float32"
        width, height = 64, 64 * height // width
        frames_list, steps = [2], 1
    elif not torch.cuda.is_available():
        print("bench_engine_gpu: no CUDA device; run this on a machine with an NVIDIA GPU "
              "(or pass --smoke to check the script on the CPU)", file=sys.stderr)
        return 2
    dtype = getattr(torch, dtype_name)
    t0 = time.perf_counter()
    if args.family == "animate-anyone":
        pipe = build_animate_anyone(configs, device, dtype)
    else:
        pipe = build(configs, device, dtype)
    cuda = device == "cuda"
    info = {"family": args.family, "device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__, "dtype": dtype_name,
            "build_s": round(time.perf_counter() - t0, 1),
            "weights_gib": round(torch.cuda.memory_allocated() / 2**30, 2) if cuda else None,
            "runs": []}
    print(json.dumps({k: v for k, v in info.items() if k != "runs"}), flush=True)
    # warm-up: kernels, allocator, cuDNN choices
    run_one(pipe, (width, height), 2 if args.smoke else 16, 1 if args.smoke else 2, True, 1,
            guidance, device)
    plan = [(f, True, wb) for f in frames_list for wb in args.window_batch]
    if args.official:
        plan.insert(1, (frames_list[0], False, 1))
    for frames, lean, wb in plan:
        try:
            r = run_one(pipe, (width, height), frames, steps, lean, wb, guidance, device)
        except Exception as exc:  # report and go on: one out-of-memory must not lose the rest
            r = {"frames": frames, "path": "lean" if lean else "official", "window_batch": wb,
                 "error": f"{type(exc).__name__}: {exc}"[:300]}
            if cuda:
                torch.cuda.empty_cache()
        info["runs"].append(r)
        print(json.dumps(r), flush=True)
        if args.json:
            args.json.write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
