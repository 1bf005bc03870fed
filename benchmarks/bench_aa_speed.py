"""Animate Anyone: kinemate against the official Moore-AnimateAnyone code, one guided step of a
24-frame window on the CPU, full-size random weights, in the same run.

The official code is not part of kinemate: pass a checkout of MooreThreads/Moore-AnimateAnyone
(``--official``, commit a914ef3, see ../shared/reference/animate-anyone/README.md) and the Python
of an environment where it runs (``--official-python``: torch 2.13 CPU, diffusers 0.24.0,
transformers 4.30.2, accelerate 0.21.0, einops, omegaconf; no torchvision needed). The script
then:

1. builds the SD1.5-shaped networks with kinemate's classes on the meta device, fills them with
   seeded random weights (N(0, 0.02), norms 1, biases 0, positional tables as computed) and
   saves them in the official ``pretrained_weights/`` layout (float16 files, as the golden set;
   ``stable-diffusion-v1-5/unet/diffusion_pytorch_model.bin`` is a link to
   ``denoising_unet.pth``: the official loader reads it and then overwrites every tensor) to
   ``--work-dir`` (kept and reused on the next run);
2. runs each side in its own process on those files: the official side loads them as
   ``scripts/pose2vid.py`` does and runs one iteration of ``Pose2VideoPipeline.__call__``'s loop
   line by line (writer/reader hooks, pose guider on every frame, reference UNet at t = 0,
   denoising UNet on the window with CFG, guidance, DDIM step); kinemate loads them with its
   strict loaders and runs ``AnimationPipeline.predict_noise`` + the DDIM step (``lean``: the
   default path; ``faithful``: ``lean=False``, the official-equivalent attention);
3. compares the outputs of the first step (guided prediction, latents after the step).

CLIP is skipped on both sides: the same random image embedding (1 token) is the conditional
context. The reference latent, the initial latents, the pose frames (uint8, 128x128 by default)
are the same seeded random tensors on both sides. Timings: the *first* step (which also runs the
reference UNet once per video and, official, the pose guider on all frames) once, then
``--repeat`` *later* steps (bank already written), best of them. Peak RSS: the process's
(``ru_maxrss``, loading included) and the peak while stepping (sampled every 5 ms).

    .venv/bin/python benchmarks/bench_aa_speed.py --official /tmp/aa-official \\
        --official-python /tmp/aa-venv/bin/python
    # a quick check of the harness on the tiny golden weights (seconds):
    .venv/bin/python benchmarks/bench_aa_speed.py --official /tmp/aa-official \\
        --official-python /tmp/aa-venv/bin/python \\
        --weights ../shared/reference/animate-anyone/golden/weights --frames 16 --size 128x208
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared/reference/animate-anyone"
GUIDANCE = 3.5
STEPS = 30  # the official default; the step timed is the schedule's first (t = 999)
SEED = 0
FILES = ("denoising_unet.pth", "reference_unet.pth", "motion_module.pth", "pose_guider.pth")
BASE = "stable-diffusion-v1-5/unet"


# -- shared by both sides (must run under either Python: torch only) ----------------------
def inputs(cross_dim: int, frames: int, width: int, height: int):
    """The seeded inputs both sides get: image embedding, reference latent, initial latents,
    pose frames (uint8, N x H x W x 3)."""
    import torch

    g = torch.Generator().manual_seed(1234)
    embeds = torch.randn(1, 1, cross_dim, generator=g)
    ref_latents = torch.randn(1, 4, height // 8, width // 8, generator=g)
    latents = torch.randn(1, 4, frames, height // 8, width // 8, generator=g)
    poses = torch.randint(0, 256, (frames, height, width, 3), generator=g, dtype=torch.uint8)
    return embeds, ref_latents, latents, poses


class PeakRSS:
    """Peak resident-set size of this process while a block runs (sampled every 5 ms)."""

    def __enter__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def timed_steps(first, later, repeat: int) -> dict:
    """Run ``first()`` once and ``later()`` ``repeat`` times; seconds and RSS."""
    import psutil

    loaded_rss = psutil.Process().memory_info().rss
    with PeakRSS() as peak:
        t = time.perf_counter()
        out = first()
        first_s = time.perf_counter() - t
        later_s = []
        for _ in range(repeat):
            t = time.perf_counter()
            later()
            later_s.append(time.perf_counter() - t)
    return out, {"first_step_s": first_s, "later_step_s": min(later_s) if later_s else None,
                 "all_later_s": later_s, "loaded_rss_gb": loaded_rss / 2**30,
                 "stepping_peak_rss_gb": peak.peak / 2**30,
                 "process_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


# -- the official side (runs under --official-python) -------------------------------------
def child_official(official: Path, weights: Path, frames: int, width: int, height: int,
                   repeat: int, out: Path) -> dict:
    import torch

    sys.path.insert(0, str(official))
    os.chdir(official)
    from diffusers import DDIMScheduler
    from omegaconf import OmegaConf
    from src.models.mutual_self_attention import ReferenceAttentionControl
    from src.models.pose_guider import PoseGuider
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d import UNet3DConditionModel

    t0 = time.perf_counter()
    # loaded as scripts/pose2vid.py does (float32, CPU)
    base = weights / "stable-diffusion-v1-5"
    reference_unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    infer_config = OmegaConf.load(official / "configs/inference/inference_v2.yaml")
    denoising_unet = UNet3DConditionModel.from_pretrained_2d(
        base, weights / "motion_module.pth", subfolder="unet",
        unet_additional_kwargs=infer_config.unet_additional_kwargs)
    # pose2vid.py hard-codes 320 = SD1.5's block_out_channels[0]; the tiny golden UNet has 32
    pose_guider = PoseGuider(denoising_unet.config.block_out_channels[0],
                             block_out_channels=(16, 32, 96, 256))
    denoising_unet.load_state_dict(torch.load(weights / "denoising_unet.pth", map_location="cpu"),
                                   strict=False)
    reference_unet.load_state_dict(torch.load(weights / "reference_unet.pth", map_location="cpu"))
    pose_guider.load_state_dict(torch.load(weights / "pose_guider.pth", map_location="cpu"))
    for m in (reference_unet, denoising_unet, pose_guider):
        m.eval().requires_grad_(False)
    scheduler = DDIMScheduler(**OmegaConf.to_container(infer_config.noise_scheduler_kwargs))
    load_s = time.perf_counter() - t0

    embeds, ref_latents, latents0, poses = inputs(denoising_unet.config.cross_attention_dim,
                                                  frames, width, height)
    # Pose2VideoPipeline.__call__, one iteration of its loop, line by line (CLIP skipped)
    scheduler.set_timesteps(STEPS)
    t = scheduler.timesteps[0]
    encoder_hidden_states = torch.cat([torch.zeros_like(embeds), embeds], dim=0)
    state = {}

    def first():
        writer = ReferenceAttentionControl(reference_unet, do_classifier_free_guidance=True,
                                           mode="write", batch_size=1, fusion_blocks="full")
        reader = ReferenceAttentionControl(denoising_unet, do_classifier_free_guidance=True,
                                           mode="read", batch_size=1, fusion_blocks="full")
        state.update(writer=writer, reader=reader)
        # cond_image_processor: do_normalize=False -> [0, 1]; (1, 3, F, H, W)
        pose = (poses.float() / 255.0).permute(3, 0, 1, 2).unsqueeze(0)
        state["pose_fea"] = pose_guider(pose)
        reference_unet(ref_latents.repeat(2, 1, 1, 1), torch.zeros_like(t),
                       encoder_hidden_states=encoder_hidden_states, return_dict=False)
        reader.update(writer)
        return step()

    def step():
        latents = latents0
        noise_pred = torch.zeros((2, *latents.shape[1:]), dtype=latents.dtype)
        counter = torch.zeros((1, 1, latents.shape[2], 1, 1), dtype=latents.dtype)
        context = [list(range(frames))]  # one window: frames <= context_frames (24)
        latent_model_input = torch.cat([latents[:, :, c] for c in context]).repeat(2, 1, 1, 1, 1)
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        b = latent_model_input.shape[0]
        latent_pose_input = torch.cat([state["pose_fea"][:, :, c] for c in context]).repeat(
            2, 1, 1, 1, 1)
        pred = denoising_unet(latent_model_input, t, encoder_hidden_states=encoder_hidden_states[:b],
                              pose_cond_fea=latent_pose_input, return_dict=False)[0]
        for c in context:
            noise_pred[:, :, c] = noise_pred[:, :, c] + pred
            counter[:, :, c] = counter[:, :, c] + 1
        noise_pred_uncond, noise_pred_text = (noise_pred / counter).chunk(2)
        guided = noise_pred_uncond + GUIDANCE * (noise_pred_text - noise_pred_uncond)
        after = scheduler.step(guided, t, latents, eta=0.0).prev_sample
        return {"guided": guided, "latents_after": after}

    with torch.no_grad():
        result, info = timed_steps(first, step, repeat)
    state["reader"].clear()
    state["writer"].clear()
    torch.save(result, out)
    return {"path": "official", "load_s": load_s, "threads": torch.get_num_threads(),
            "torch": torch.__version__, **info}


# -- the kinemate side ----------------------------------------------------------------------
def child_kinemate(path: str, weights: Path, frames: int, width: int, height: int, repeat: int,
                   out: Path) -> dict:
    import copy

    import torch

    from kinemate.models.animate_anyone import AnimateAnyoneDenoiser
    from kinemate.models.animate_anyone.checkpoint import (BASE_UNET_CONFIG, load_denoising_unet,
                                                           load_pose_guider, load_reference_unet)
    from kinemate.models.loading import read_config
    from kinemate.pipeline import AnimationPipeline

    t0 = time.perf_counter()
    config = read_config(weights / BASE_UNET_CONFIG)
    unet = load_denoising_unet(weights, config)
    reference = load_reference_unet(weights, config)
    guider = load_pose_guider(weights, config)
    for m in (unet, reference, guider):
        m.eval().requires_grad_(False)
    denoiser = AnimateAnyoneDenoiser(unet, reference, guider, image_encoder=None)
    pipe = AnimationPipeline(denoiser, vae=None, name="animate-anyone-random",
                             family="animate-anyone", control_kind="openpose")
    load_s = time.perf_counter() - t0

    embeds, ref_latents, latents0, poses = inputs(int(config["cross_attention_dim"]), frames,
                                                  width, height)
    controls = poses.numpy()
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(STEPS)
    t = scheduler.timesteps[0]
    windows = [list(range(frames))]
    video = denoiser.start_video(ref_latents, controls, image_embeds=embeds,
                                 reference_bank_dtype="float16", lean=path == "lean")

    def step():  # the first call also writes the bank (the reference UNet, at t = 0)
        guided, _ = pipe.predict_noise(latents0, t, video, windows, guidance=GUIDANCE,
                                       scheduler=scheduler)
        after = scheduler.step(guided, t, latents0, eta=0.0).prev_sample
        return {"guided": guided, "latents_after": after}

    with torch.no_grad():
        result, info = timed_steps(step, step, repeat)
    denoiser.end_video(video)
    torch.save(result, out)
    return {"path": path, "load_s": load_s, "threads": torch.get_num_threads(),
            "torch": torch.__version__, **info}


# -- the random full-size weights, in the official layout --------------------------------
def make_weights(folder: Path, seed: int) -> None:
    """SD1.5-shaped networks with seeded random weights, saved as the release's files."""
    import shutil

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_engine_speed import random_fill

    from kinemate.models.animate_anyone import networks
    from kinemate.models.loading import build_on_meta

    config = json.loads((REFERENCE / "configs/sd15_unet_config.json").read_text())
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / BASE).mkdir(parents=True)
    (tmp / BASE / "config.json").write_text(json.dumps(config, indent=1))
    torch.manual_seed(seed)

    def half(sd: dict, keep_fp32=lambda k: False) -> dict:
        return {k: v if keep_fp32(k) else v.half() for k, v in sd.items()}

    unet = build_on_meta(lambda: networks.denoising_unet(config))
    random_fill(unet)
    sd = unet.state_dict()
    torch.save(half({k: v for k, v in sd.items() if ".motion_modules." not in k}),
               tmp / "denoising_unet.pth")
    torch.save(half({k: v for k, v in sd.items() if ".motion_modules." in k},
                    lambda k: k.endswith("pos_encoder.pe")), tmp / "motion_module.pth")
    del unet, sd
    reference = build_on_meta(lambda: networks.reference_unet(config))
    random_fill(reference)
    torch.save(half(reference.state_dict()), tmp / "reference_unet.pth")
    del reference
    guider = build_on_meta(lambda: networks.pose_guider(config))
    random_fill(guider)
    torch.save(half(guider.state_dict()), tmp / "pose_guider.pth")
    # the official loaders read the SD1.5 UNet weights and overwrite every tensor: a link to
    # the denoising UNet (same keys) saves writing 1.7 GB
    os.symlink("../../denoising_unet.pth", tmp / BASE / "diffusion_pytorch_model.bin")
    (tmp / "bench_seed.json").write_text(json.dumps({"seed": seed}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def ensure_weights(work: Path, seed: int) -> Path:
    folder = work / f"weights-sd15-seed{seed}"
    if not (folder / "bench_seed.json").is_file():
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--make-weights", str(folder), "--seed",
                        str(seed)], check=True)
        print(f"random full-size weights written to {folder} in {time.perf_counter() - t:.0f} s",
              flush=True)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, help="checkout of MooreThreads/Moore-AnimateAnyone")
    ap.add_argument("--official-python", default=None,
                    help="the Python of the environment where the official code runs")
    ap.add_argument("--weights", type=Path, default=None,
                    help="an official-layout weights folder to use instead of the random "
                         "full-size ones (e.g. the tiny golden set)")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/kinemate-bench-aa"),
                    help="where the random weights and the outputs go (default %(default)s)")
    ap.add_argument("--size", default="128x128", help="W x H in pixels (default %(default)s)")
    ap.add_argument("--frames", type=int, default=24, help="frames in the window (<= 24)")
    ap.add_argument("--repeat", type=int, default=2, help="later steps timed (best is reported)")
    ap.add_argument("--seed", type=int, default=SEED, help="seed of the random weights")
    ap.add_argument("--paths", nargs="+", default=["official", "lean"],
                    choices=["official", "lean", "faithful"])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--make-weights", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    if args.make_weights:
        make_weights(args.make_weights, args.seed)
        return
    if args.child == "official":
        print(json.dumps(child_official(args.official.resolve(), args.weights.resolve(),
                                        args.frames, width, height, args.repeat, args.out)))
        return
    if args.child:
        print(json.dumps(child_kinemate(args.child, args.weights, args.frames, width, height,
                                        args.repeat, args.out)))
        return

    if "official" in args.paths and not (args.official and args.official_python):
        ap.error("the official side needs --official (a checkout of Moore-AnimateAnyone) and "
                 "--official-python (its environment's python); or leave it out of --paths")
    if args.frames > 24:
        ap.error("--frames: one window of at most 24 frames (the official context_frames)")
    weights = (args.weights or ensure_weights(args.work_dir, args.seed)).resolve()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    results, outputs = {}, {}
    for path in args.paths:
        out = (args.work_dir / f"out_{path}.pt").resolve()
        python = args.official_python if path == "official" else sys.executable
        cmd = [python, str(Path(__file__).resolve()), "--child", path, "--weights", str(weights),
               "--size", args.size, "--frames", str(args.frames), "--repeat", str(args.repeat),
               "--out", str(out)]
        if path == "official":
            cmd += ["--official", str(args.official.resolve())]
        env = {**os.environ, "PYTHONPATH": ""} if path == "official" else None
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            sys.exit(f"{path} side failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        r = results[path] = json.loads(proc.stdout.strip().splitlines()[-1])
        outputs[path] = out
        print(f"{path:9s}: later step {r['later_step_s']:7.2f} s (runs "
              f"{', '.join(f'{s:.2f}' for s in r['all_later_s'])}), first step "
              f"{r['first_step_s']:.2f} s; RSS loaded {r['loaded_rss_gb']:.2f} GiB, peak while "
              f"stepping {r['stepping_peak_rss_gb']:.2f} GiB, process peak "
              f"{r['process_peak_rss_gb']:.2f} GiB  [{args.size} px, {args.frames} frames, "
              f"{r['threads']} threads, load {r['load_s']:.0f} s]", flush=True)
    import torch

    if "official" in outputs:
        ref = torch.load(outputs["official"])
        for path in outputs:
            if path == "official":
                continue
            got = torch.load(outputs[path])
            diffs = ", ".join(f"{k} {(got[k] - ref[k]).abs().max().item():.2e} (max |official| "
                              f"{ref[k].abs().max().item():.2f})" for k in ref)
            speed = results["official"]["later_step_s"] / results[path]["later_step_s"]
            print(f"{path} vs official: later step {speed:.2f}x; max |difference|: {diffs}")


if __name__ == "__main__":
    main()
