"""One GPU check for kinemate: correctness on CUDA, the full-size speed and memory suite, the
fast path's output difference, and window-parallel sampling when several GPUs are there; one
JSON and one Markdown report. Meant for one short run on a fresh GPU machine
(``benchmarks/gpu_check.sh`` installs what is missing first, then calls this).

Parts, each in its own process with its own time limit inside an overall budget (default
450 s, so the whole check ends in under 8 minutes on an H200):

``tests``     the golden cases of MagicAnimate and Animate Anyone on CUDA in float32
              (``KINEMATE_TEST_DEVICE=cuda``) and the two-process window-parallel test (gloo)
``speed``     full-size MagicAnimate (random weights), 512x512, 25 DDIM steps, guidance 7.5,
              float16, every frame decoded: 16 and 64 frames on the plain path, 64 on the fast
              path (``kinemate.pipeline.fast``: channels-last), seconds of sampling and of
              decoding and peak VRAM; 1,024 frames with one step (seconds per step, the 25-step
              time estimated from it, decoding of all 1,024 frames, peak VRAM); host syncs in
              one step (``torch.cuda.set_sync_debug_mode``)
``numerics``  16 frames, 25 steps on the full-size model: plain float16 vs float32 (TF32 off)
              and fast float16 vs plain float16; max and mean |difference| of the final
              latents and of the decoded frames (uint8 levels)
``compile``   (``--compile``) ``torch.compile`` of the networks: first-call and later seconds
              for 16 frames and the difference to the plain float16 path
``multigpu``  (more than one GPU) ``torchrun`` over every GPU: 64 frames split over the
              processes, seconds and the difference to the single-GPU result
``official``  (``--official PATH``) the official MagicAnimate code on the same job; without a
              path it is skipped with a line saying so

``--cpu-smoke`` runs every part on the CPU with tiny sizes and shrunken networks (same code
paths, seconds instead of minutes) to check the script itself; its figures mean nothing.

    python benchmarks/gpu_check.py --out gpu-check            # on a GPU machine
    python benchmarks/gpu_check.py --cpu-smoke --out /tmp/gc  # anywhere, ~1-2 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
SHARED = REPO.parent / "shared" / "reference"
CONFIGS = SHARED / "magicanimate" / "configs"
# (part, its own limit in seconds on a GPU)
PARTS = [("official", 30), ("tests", 110), ("speed", 200), ("numerics", 130), ("multigpu", 150),
         ("compile", 200)]
FULL = dict(size=512, frames=[16, 64], long=1024, steps=25, guidance=7.5, dtype="float16",
            device="cuda", diff_frames=16, context=(16, 4))
SMOKE = dict(size=64, frames=[2, 4], long=8, steps=1, guidance=7.5, dtype="float32",
             device="cpu", diff_frames=2, context=(4, 2))


# -- the model --------------------------------------------------------------------------
def _shrunk(config: dict) -> dict:
    """The same architecture with narrow layers (the --cpu-smoke networks)."""
    config = dict(config)
    if "block_out_channels" in config:
        config["block_out_channels"] = [32, 32, 64, 64][:len(config["block_out_channels"])]
    if "conditioning_embedding_out_channels" in config:
        config["conditioning_embedding_out_channels"] = [16, 32, 32, 32]
    return config


def build(device: str, dtype, smoke: bool):
    """Full-size MagicAnimate networks (SD1.5 video UNet with the temporal modules, appearance
    encoder, DensePose ControlNet, SD's VAE) with seeded random weights."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel

    from bench_engine_speed import random_fill
    from kinemate.models import AppearanceEncoder, VideoUNet
    from kinemate.models.loading import build_on_meta
    from kinemate.models.magicanimate import MagicAnimateDenoiser
    from kinemate.pipeline import AnimationPipeline

    def load(name):
        config = json.loads((CONFIGS / name).read_text())
        return _shrunk(config) if smoke else config

    motion = json.loads((CONFIGS / "magicanimate_inference.json").read_text())[
        "unet_additional_kwargs"]
    torch.manual_seed(0)
    unet = build_on_meta(lambda: VideoUNet.from_2d_config(load("sd15_unet_config.json"), motion))
    appearance = build_on_meta(lambda: AppearanceEncoder.from_unet_config(
        load("appearance_encoder_config.INFERRED.json")))
    controlnet = build_on_meta(lambda: ControlNetModel.from_config(
        load("densepose_controlnet_config.INFERRED.json")))
    for m in (unet, appearance, controlnet):
        random_fill(m, device)
        m.to(dtype)
    torch.manual_seed(1)
    vae = AutoencoderKL.from_config(load("sd_vae_ft_mse_config.json")).to(device, dtype).eval()
    text = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(0))
    denoiser = MagicAnimateDenoiser(unet, appearance, controlnet, text_embeds_uncond=text * 0.5,
                                    text_embeds_cond=text)
    return AnimationPipeline(denoiser, vae, name="magicanimate-random", family="magicanimate")


def inputs(frames: int, size: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8))


class Clock:
    def __init__(self, device: str):
        import torch

        self.torch, self.cuda = torch, device.startswith("cuda")

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset(self):
        if self.cuda:
            self.sync()
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self):
        return round(self.torch.cuda.max_memory_allocated() / 2**30, 3) if self.cuda else None


def animate(pipe, clock: Clock, frames: int, cfg: dict, *, steps=None, decode=True,
            parallel=None) -> dict:
    """Sample (and decode) one job; seconds, peak VRAM, the final latents."""
    reference, controls = inputs(frames, cfg["size"])
    clock.reset()
    t0 = time.perf_counter()
    latents = pipe.sample_latents(reference, controls, steps=steps or cfg["steps"],
                                  guidance=cfg["guidance"], seed=1, progress=False,
                                  context_frames=cfg["context"][0],
                                  context_overlap=cfg["context"][1], parallel=parallel)
    clock.sync()
    t1 = time.perf_counter()
    images = []
    if decode:
        for i in range(latents.shape[2]):
            images.append(pipe.decode_frame(latents, i).float().cpu())
        clock.sync()
    t2 = time.perf_counter()
    return {"frames": frames, "steps": steps or cfg["steps"], "sample_s": round(t1 - t0, 3),
            "decode_s": round(t2 - t1, 3) if decode else None,
            "total_s": round(t2 - t0, 3) if decode else None, "peak_vram_gib": clock.peak_gib(),
            "_latents": latents.float().cpu(), "_images": images}


def public(run: dict) -> dict:
    return {k: v for k, v in run.items() if not k.startswith("_")}


def difference(a, b) -> dict:
    """max / mean |a - b| of latents, and of decoded frames in uint8 levels."""
    import torch

    out = {"latents_max_abs": float((a["_latents"] - b["_latents"]).abs().max()),
           "latents_mean_abs": float((a["_latents"] - b["_latents"]).abs().mean()),
           "latents_max_value": float(b["_latents"].abs().max())}
    if a["_images"] and b["_images"]:
        x = (torch.cat(a["_images"]) * 255).round()
        y = (torch.cat(b["_images"]) * 255).round()
        out.update(frames_max_levels=float((x - y).abs().max()),
                   frames_mean_levels=round(float((x - y).abs().mean()), 4))
    return out


# -- parts (each runs in its own process) -------------------------------------------------
def part_tests(cfg: dict, smoke: bool, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    files = ["tests/pipeline/test_engine_golden.py", "tests/pipeline/test_aa_golden.py",
             "tests/pipeline/test_parallel.py"]
    if not smoke:
        env["KINEMATE_TEST_DEVICE"] = "cuda"
    extra = ["-k", "step_cfg_f16 or parallel or share"] if smoke else []
    xml = out / "tests.xml"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"--junitxml={xml}", *files, *extra], cwd=REPO, env=env,
                         capture_output=True, text=True)
    result = {"command": " ".join(["pytest", *files, *extra]) +
              ("" if smoke else "  (KINEMATE_TEST_DEVICE=cuda)"), "exit_code": run.returncode,
              "summary": (run.stdout.strip().splitlines() or [""])[-1]}
    if xml.is_file():
        import xml.etree.ElementTree as ET

        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        result.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
        result["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                            if c.find("failure") is not None or c.find("error") is not None]
    if run.returncode:
        result["output_tail"] = (run.stdout + run.stderr)[-2000:]
    return result


def part_speed(cfg: dict, smoke: bool, out: Path) -> dict:
    import torch

    from kinemate.pipeline.fast import optimize

    dtype = getattr(torch, cfg["dtype"])
    clock = Clock(cfg["device"])
    t0 = time.perf_counter()
    pipe = build(cfg["device"], dtype, smoke)
    result = {"build_s": round(time.perf_counter() - t0, 1), "steps": cfg["steps"], "runs": []}
    if clock.cuda:
        result["weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    animate(pipe, clock, cfg["frames"][0], cfg, steps=2)  # warm-up: kernels, allocator

    def record(label, run):
        entry = {"label": label, **public(run)}
        result["runs"].append(entry)
        print(json.dumps(entry), flush=True)
        (out / "part-speed.partial.json").write_text(json.dumps(result, indent=1))
        return run

    for frames in cfg["frames"]:
        run = record("plain", animate(pipe, clock, frames, cfg))
        if frames == cfg["frames"][-1]:
            torch.save(run["_latents"], out / f"latents-{frames}.pt")
    # host syncs in one step of the plain path (0 is the goal; the step's own end has one)
    if clock.cuda:
        import warnings

        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            animate(pipe, clock, cfg["frames"][-1], cfg, steps=1, decode=False)
        torch.cuda.set_sync_debug_mode("default")
        syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
        result["host_syncs_one_step"] = {"count": len(syncs), "first": syncs[:5]}
    # the long video: one step (25-step time estimated), every frame decoded
    run = animate(pipe, clock, cfg["long"], cfg, steps=1)
    run["estimated_all_steps_s"] = round(run["sample_s"] * cfg["steps"] + run["decode_s"], 1)
    record("plain, 1 step", run)
    optimize(pipe, channels_last=True)
    animate(pipe, clock, cfg["frames"][0], cfg, steps=2)  # warm-up of the new layout
    record("fast (channels-last)", animate(pipe, clock, cfg["frames"][-1], cfg))
    peaks = {r["frames"]: r["peak_vram_gib"] for r in result["runs"] if r["label"] != "fast (channels-last)"}
    if clock.cuda and cfg["frames"][0] in peaks and cfg["long"] in peaks:
        result["vram_growth_gib"] = round(peaks[cfg["long"]] - peaks[cfg["frames"][0]], 3)
    return result


def part_numerics(cfg: dict, smoke: bool, out: Path) -> dict:
    import torch

    from kinemate.pipeline.fast import optimize

    clock = Clock(cfg["device"])
    if clock.cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    frames = cfg["diff_frames"]
    half = getattr(torch, cfg["dtype"] if not smoke else "bfloat16")
    runs = {}
    for name, dtype in (("float32", torch.float32), ("half", half)):
        pipe = build(cfg["device"], dtype, smoke)
        runs[name] = animate(pipe, clock, frames, cfg)
        if name == "half":
            optimize(pipe, channels_last=True)
            runs["half_fast"] = animate(pipe, clock, frames, cfg)
        del pipe
        if clock.cuda:
            torch.cuda.empty_cache()
    return {"frames": frames, "steps": cfg["steps"], "half_dtype": str(half).split(".")[-1],
            "plain_half_vs_float32": difference(runs["half"], runs["float32"]),
            "fast_half_vs_plain_half": difference(runs["half_fast"], runs["half"]),
            "seconds": {k: v["sample_s"] for k, v in runs.items()}}


def part_compile(cfg: dict, smoke: bool, out: Path) -> dict:
    import torch

    from kinemate.pipeline.fast import optimize

    clock = Clock(cfg["device"])
    pipe = build(cfg["device"], getattr(torch, cfg["dtype"]), smoke)
    frames = cfg["frames"][0]
    plain = animate(pipe, clock, frames, cfg)
    parts = ("unet", "controlnet", "appearance_encoder")
    optimize(pipe, channels_last=not smoke, compile=True, parts=parts,
             backend="eager" if smoke else "inductor")
    first = animate(pipe, clock, frames, cfg)
    again = animate(pipe, clock, frames, cfg)
    return {"frames": frames, "compiled": list(parts), "plain_s": plain["total_s"],
            "first_call_s": first["total_s"], "compiled_s": again["total_s"],
            "compiled_vs_plain": difference(again, plain)}


def part_multigpu(cfg: dict, smoke: bool, out: Path) -> dict:
    import torch

    gpus = torch.cuda.device_count() if not smoke else 2
    if gpus < 2:
        return {"skipped": f"{gpus} GPU on this machine; the window-parallel test needs 2 or more "
                           "(its CPU version ran under tests)"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(gpus),
           "--master-addr", "127.0.0.1", "--master-port", "29517", __file__, "--rank-job",
           "--out", str(out)] + (["--cpu-smoke"] if smoke else [])
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    result = {"processes": gpus, "exit_code": run.returncode}
    path = out / "multigpu-rank0.json"
    if path.is_file():
        result.update(json.loads(path.read_text()))
    if run.returncode:
        result["output_tail"] = (run.stdout + run.stderr)[-2000:]
    return result


def rank_job(cfg: dict, smoke: bool, out: Path) -> None:
    """One process of the multigpu part (under torchrun)."""
    import torch

    from kinemate.pipeline.parallel import close, init_from_env

    parallel, device = init_from_env(cfg["device"])
    pipe = build(device, getattr(torch, cfg["dtype"]), smoke)
    clock = Clock(device)
    frames = cfg["frames"][-1]
    animate(pipe, clock, cfg["frames"][0], cfg, steps=2, decode=False, parallel=parallel)
    run = animate(pipe, clock, frames, cfg, decode=False, parallel=parallel)
    if parallel.is_main:
        result = {k: v for k, v in public(run).items() if v is not None}
        single = out / f"latents-{frames}.pt"
        if single.is_file():
            ref = torch.load(single, weights_only=True)
            result["vs_single_gpu_max_abs"] = float((run["_latents"] - ref).abs().max())
        (out / "multigpu-rank0.json").write_text(json.dumps(result))
    close()


def part_official(cfg: dict, smoke: bool, out: Path, official: str | None) -> dict:
    if not official:
        return {"skipped": "no official MagicAnimate checkout given (--official PATH); the "
                           "official-code comparison did not run"}
    if not Path(official).is_dir():
        return {"skipped": f"--official {official}: no such folder"}
    return {"skipped": "kinemate has no driver for the official MagicAnimate code yet (a scratch "
                       "environment with its pins and a script that runs its pipeline on these "
                       "random weights); the comparison stays open"}


# -- the report ---------------------------------------------------------------------------
def environment(smoke: bool) -> dict:
    import importlib.metadata as md

    import torch

    info = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "mode": "cpu-smoke" if smoke else "gpu",
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                     capture_output=True, text=True).stdout.strip() or None
    except OSError:
        info["git"] = None
    packages = {}
    for name in ("diffusers", "transformers", "accelerate", "safetensors", "huggingface-hub",
                 "numpy", "einops"):
        try:
            packages[name] = md.version(name)
        except md.PackageNotFoundError:
            packages[name] = None
    info["packages"] = packages
    return info


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# kinemate GPU check ({env['mode']}, {env['date_utc']} UTC)", "",
             f"Machine: {', '.join(env['gpus']) or 'no GPU'}; torch {env['torch']} (CUDA "
             f"{env['cuda']}), Python {env['python']}, commit {env.get('git')}; packages "
             + ", ".join(f"{k} {v}" for k, v in env["packages"].items()) + ".", ""]
    if env["mode"] == "cpu-smoke":
        lines += ["**CPU smoke run: shrunken networks, tiny sizes; the figures check the script "
                  "and mean nothing.**", ""]
    for name, part in report["parts"].items():
        status = part.get("status")
        lines.append(f"## {name} — {status} ({part.get('seconds')} s)")
        body = part.get("result") or {}
        if isinstance(body.get("skipped"), str):
            lines.append(f"skipped: {body['skipped']}")
        elif name == "speed" and "runs" in body:
            lines += ["", "| path | frames | steps | sampling s | decoding s | total s | peak VRAM GiB |",
                      "|---|---|---|---|---|---|---|"]
            for r in body["runs"]:
                lines.append(f"| {r['label']} | {r['frames']} | {r['steps']} | {r['sample_s']} | "
                             f"{r['decode_s']} | {r['total_s']} | {r['peak_vram_gib']} |")
            for key in ("build_s", "weights_gib", "vram_growth_gib", "host_syncs_one_step"):
                if key in body:
                    lines.append(f"- {key}: {body[key]}")
            for r in body["runs"]:
                if "estimated_all_steps_s" in r:
                    lines.append(f"- {r['frames']} frames, all {body.get('steps')} steps "
                                 f"estimated from one: {r['estimated_all_steps_s']} s")
        else:
            lines += ["```json", json.dumps(body, indent=1)[:4000], "```"]
        if part.get("error"):
            lines += ["```", part["error"][-1500:], "```"]
        lines.append("")
    return "\n".join(lines)


def run_part(name: str, args, deadline: float, limit: int) -> dict:
    left = deadline - time.monotonic()
    budget = int(min(limit * (6 if args.cpu_smoke else 1), left))
    if budget < 15:
        return {"status": "not run", "error": f"the overall budget ({args.budget_s} s) was spent"}
    cmd = [sys.executable, __file__, "--part", name, "--out", str(args.out)]
    cmd += ["--cpu-smoke"] if args.cpu_smoke else []
    cmd += ["--official", args.official] if args.official else []
    t0 = time.monotonic()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired as exc:
        out = args.out / f"part-{name}.partial.json"
        return {"status": "timeout", "seconds": budget,
                "result": json.loads(out.read_text()) if out.is_file() else None,
                "error": f"stopped after {budget} s\n" + str(exc.stdout or "")[-1000:]}
    seconds = round(time.monotonic() - t0, 1)
    path = args.out / f"part-{name}.json"
    if run.returncode or not path.is_file():
        return {"status": "failed", "seconds": seconds,
                "error": (run.stdout + run.stderr)[-3000:]}
    result = json.loads(path.read_text())
    status = "ok"
    if name == "tests" and (result.get("exit_code") or result.get("failures") or result.get("errors")):
        status = "failed"
    if isinstance(result.get("skipped"), str):
        status = "skipped"
    return {"status": status, "seconds": seconds, "result": result}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu-check"), help="report folder")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="every part on the CPU at tiny sizes (checks the script)")
    ap.add_argument("--official", default=None, metavar="PATH",
                    help="a checkout of the official MagicAnimate code (optional)")
    ap.add_argument("--compile", action="store_true", help="also run the torch.compile part")
    ap.add_argument("--budget-s", type=int, default=None,
                    help="overall limit (default 450 s; 1800 s with --cpu-smoke)")
    ap.add_argument("--parts", nargs="+", default=None, help="run only these parts")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rank-job", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.budget_s = args.budget_s or (1800 if args.cpu_smoke else 450)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = SMOKE if args.cpu_smoke else FULL
    if args.rank_job:
        rank_job(cfg, args.cpu_smoke, args.out)
        return 0
    if args.part:
        import torch

        torch.set_num_threads(min(torch.get_num_threads(), 8))
        funcs = {"tests": part_tests, "speed": part_speed, "numerics": part_numerics,
                 "compile": part_compile, "multigpu": part_multigpu}
        if args.part == "official":
            result = part_official(cfg, args.cpu_smoke, args.out, args.official)
        else:
            result = funcs[args.part](cfg, args.cpu_smoke, args.out)
        (args.out / f"part-{args.part}.json").write_text(json.dumps(result, indent=1))
        return 0

    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine, or --cpu-smoke to check "
              "the script on the CPU", file=sys.stderr)
        return 2
    if not CONFIGS.is_dir():
        print(f"gpu_check: the shared reference data is not at {SHARED} (configs and golden "
              "cases); put it there (benchmarks/gpu_check.sh links ./shared)", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.budget_s
    report = {"environment": environment(args.cpu_smoke), "budget_s": args.budget_s, "parts": {}}
    wanted = args.parts or [p for p, _ in PARTS if p != "compile" or args.compile]
    for name, limit in PARTS:
        if name not in wanted:
            continue
        print(f"gpu_check: {name} ...", flush=True)
        try:
            report["parts"][name] = run_part(name, args, deadline, limit)
        except Exception:  # the report must be written whatever happens
            report["parts"][name] = {"status": "failed", "error": traceback.format_exc()}
        part = report["parts"][name]
        print(f"gpu_check: {name}: {part['status']} ({part.get('seconds')} s)", flush=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
        (args.out / "gpu_check.md").write_text(markdown(report))
    print(f"gpu_check: report in {args.out / 'gpu_check.md'} and gpu_check.json")
    return 0 if all(p["status"] in ("ok", "skipped") for p in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
