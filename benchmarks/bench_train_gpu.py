"""kinemate's trainer on a GPU: every stage under each mixed-precision mode, and SD1.5 size.

Part 1 (``--precision no bf16 fp16``): the kinemate-tiny recipe (configs/kinemate-tiny.yaml:
64 px, the same architecture and stages) shortened to ``--steps`` steps per stage, trained on
CUDA once per mixed-precision mode. Per stage: steps per second, the mean loss of the first and
of the last 20 % of the logged steps, and the peak GPU memory. Then the resume check: the
``bf16`` run's stage 1 is trained again in two calls (killed half-way, resumed) and its final
weights are compared with the one-call run.

Part 2 (``--full-size PX``): the SD1.5 architecture (UNet, temporal modules, appearance encoder,
ControlNet, SD's VAE; configs from ``--configs``) from random initialisation at PX x PX:
stage 1 (one frame pair, gradient checkpointing) and stage 2 (one 16-frame clip) for
``--full-size-steps`` optimizer steps each, bf16 autocast, AdamW. Seconds per step (the first
includes warm-up) and peak GPU memory. No checkpoints are written at this size.

    python benchmarks/bench_train_gpu.py --steps 200 --full-size 512 --json train_gpu.json
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine_speed import CONFIGS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def stage_report(run: Path, name: str) -> dict:
    done = json.loads((run / name / "DONE").read_text())
    rows = list(csv.DictReader((run / name / "log.csv").open()))
    losses = [float(r["loss"]) for r in rows]
    k = max(1, len(losses) // 5)
    sps = [float(r["steps_per_s"]) for r in rows[1:]] or [float(rows[0]["steps_per_s"])]
    return {"steps": done["steps"], "wall_s": done["wall_time_s"],
            "steps_per_s": round(sorted(sps)[len(sps) // 2], 2),
            "loss_first": round(sum(losses[:k]) / k, 5), "loss_last": round(sum(losses[-k:]) / k, 5),
            "peak_gpu_memory_gib": done.get("peak_gpu_memory_gib")}


def tiny_overrides(out: Path, precision: str, steps: int, fit_frames: int = 512) -> dict:
    return {
        "output_dir": str(out), "mixed_precision": precision, "export_dir": None,
        "sample_every": 0, "sample_steps": 2, "log_every": 10, "checkpoint_every": 10 ** 9,
        "checkpoint_every_minutes": 10 ** 6, "torch_threads": 0,
        "stages": [
            {"kind": "vae", "steps": 1, "batch_size": 32, "fit_frames": fit_frames},
            {"kind": "stage1", "steps": steps, "batch_size": 8, "lr": 5e-4, "warmup_steps": 20,
             "snr_gamma": 0.0, "reference_dropout": 0.0, "ema_decay": 0.995},
            {"kind": "stage2", "timestep_range": [900, 999], "temporal_loss_weight": 4.0,
             "steps": max(10, steps // 4), "batch_size": 2, "lr": 5e-4, "warmup_steps": 5,
             "snr_gamma": 0.0, "reference_dropout": 0.0, "ema_decay": 0.99},
        ],
    }


def part_precision(args, work: Path) -> dict:
    """One child process per mode (accelerate fixes the mixed precision once per process)."""
    import subprocess

    out = {}
    for precision in args.precision:
        report = work / f"tiny-{precision}.json"
        cmd = [sys.executable, __file__, "--one-precision", precision, "--steps", str(args.steps),
               "--fit-frames", str(args.fit_frames), "--work", str(work),
               "--json", str(report)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0 and report.is_file():
            out[precision] = json.loads(report.read_text())
        else:
            out[precision] = {"error": proc.stderr.strip()[-600:]}
        print(precision, json.dumps(out[precision]), flush=True)
    return out


def one_precision(args, work: Path) -> dict:
    """The shortened kinemate-tiny recipe in one mixed-precision mode; for bf16 also the
    resume check (stage 1 again, stopped half-way and resumed, against the one-call run)."""
    import torch
    from safetensors.torch import load_file

    from kinemate.train.config import load_config
    from kinemate.train.trainer import train

    precision = args.one_precision
    run = work / f"tiny-{precision}"
    cfg = load_config(REPO / "configs/kinemate-tiny.yaml",
                      tiny_overrides(run, precision, args.steps, args.fit_frames))
    t0 = time.perf_counter()
    train(cfg, progress=False)
    out = {s: stage_report(run, s) for s in ("stage1", "stage2")}
    out["total_s"] = round(time.perf_counter() - t0, 1)
    if precision == "bf16":
        again = work / "tiny-bf16-resumed"
        shutil.copytree(run / "vae", again / "vae")
        over = tiny_overrides(again, precision, args.steps, args.fit_frames)
        over["stages"] = over["stages"][:2]
        cfg = load_config(REPO / "configs/kinemate-tiny.yaml", over)
        train(cfg, resume=True, progress=False, stop_after_steps=args.steps // 2)
        train(cfg, resume=True, progress=False)
        a = load_file(str(run / "stage1/final/unet/model.safetensors"))
        b = load_file(str(again / "stage1/final/unet/model.safetensors"))
        out["resume"] = {
            "max_abs_weight_diff": max(float((a[k].float() - b[k].float()).abs().max()) for k in a),
            "max_abs_weight": max(float(a[k].float().abs().max()) for k in a),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    return out


def full_size_config(configs: Path, out: Path, size: int, steps: int) -> dict:
    unet_keys = ("block_out_channels", "layers_per_block", "attention_head_dim",
                 "cross_attention_dim", "norm_num_groups", "down_block_types", "up_block_types",
                 "in_channels", "out_channels")
    sd = json.loads((configs / "sd15_unet_config.json").read_text())
    vae = json.loads((configs / "sd_vae_ft_mse_config.json").read_text())
    vae_keys = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups",
                "down_block_types", "up_block_types", "in_channels", "out_channels")
    motion = json.loads((configs / "magicanimate_inference.json").read_text())["unet_additional_kwargs"]
    common = {"lr": 1e-5, "warmup_steps": 0, "snr_gamma": 0.0, "reference_dropout": 0.1,
              "ema_decay": 0.0}
    return {
        "output_dir": str(out), "mixed_precision": "bf16", "gradient_checkpointing": True,
        "export_dir": None, "sample_every": 0, "sample_steps": 1, "log_every": 1,
        "checkpoint_every": 10 ** 9, "checkpoint_every_minutes": 10 ** 6, "torch_threads": 0,
        "data": {"size": size, "synth_frames": 16, "clip_frames": 16, "control": "openpose",
                 "num_seeds": 64, "cache_clips": 0},
        "model": {"name": "sd15-size-random", "arch": {
            "unet": {**{k: sd[k] for k in unet_keys}, "sample_size": size // 8},
            "motion": {k: motion[k] for k in ("use_motion_module", "motion_module_resolutions",
                                              "motion_module_mid_block",
                                              "motion_module_decoder_only", "motion_module_type",
                                              "motion_module_kwargs")},
            "controlnet": {"conditioning_embedding_out_channels": [16, 32, 96, 256]},
            "vae": {"type": "kl", **{k: vae[k] for k in vae_keys}, "sample_size": size},
            "text_tokens": 77}},
        "stages": [
            {"kind": "vae", "steps": 2, "batch_size": 1, **common},
            {"kind": "stage1", "steps": steps, "batch_size": 1, **common},
            {"kind": "stage2", "steps": steps, "batch_size": 1, **common},
        ],
    }


def part_full_size(args, work: Path) -> dict:
    """The trainer's own task objects and data loader at SD1.5 size, stepped by a short loop
    without checkpoints (a stage-1 checkpoint at this size is ~30 GB of weights and Adam
    state): the VAE stage through ``train``, then each diffusion stage built from scratch."""
    import torch
    from accelerate import Accelerator

    from kinemate.train.config import config_from_dict
    from kinemate.train.data import make_loader, make_source
    from kinemate.train.trainer import build_task, train

    run = work / "full-size"
    cfg = config_from_dict(full_size_config(args.configs, run, args.full_size,
                                            args.full_size_steps))
    out = {"size": args.full_size}
    train(cfg, progress=False, only=["vae"])
    for stage in cfg.stages[1:]:
        try:
            accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            task = build_task(cfg, stage, accelerator.device)
            task.enable_gradient_checkpointing()
            params = [p for p in task.module.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=stage.lr)
            module, optimizer = accelerator.prepare(task.module, optimizer)
            build_s = time.perf_counter() - t0
            loader = iter(make_loader(make_source(cfg.data), stage.kind, seed=0,
                                      clip_frames=cfg.data.clip_frames,
                                      batch_size=stage.batch_size, step=0, rank=0, world=1,
                                      num_workers=0))
            times, losses = [], []
            for i in range(stage.steps):
                inputs = task.prepare(next(loader), torch.Generator().manual_seed(i))
                torch.cuda.synchronize()
                t = time.perf_counter()
                with accelerator.autocast():
                    loss = module(**inputs)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
                losses.append(float(loss.detach()))
            out[stage.id] = {
                "trainable_m": round(sum(p.numel() for p in params) / 1e6, 1),
                "batch": stage.batch_size,
                "frames_per_sample": 2 if stage.kind == "stage1" else cfg.data.clip_frames,
                "build_s": round(build_s, 1), "s_per_step": [round(x, 3) for x in times],
                "losses": [round(x, 4) for x in losses],
                "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
            del task, module, optimizer, params
            accelerator.free_memory()
        except Exception as exc:
            out[stage.id] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
        print("full-size", stage.id, json.dumps(out[stage.id]), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", nargs="*", default=["no", "bf16", "fp16"])
    ap.add_argument("--steps", type=int, default=200, help="stage-1 steps of part 1")
    ap.add_argument("--fit-frames", type=int, default=512, help="frames of part 1's VAE fit")
    ap.add_argument("--one-precision", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--full-size", type=int, default=0, help="part 2 at this size (0: skip)")
    ap.add_argument("--full-size-steps", type=int, default=6)
    ap.add_argument("--configs", type=Path, default=CONFIGS)
    ap.add_argument("--work", type=Path,
                    default=Path(tempfile.gettempdir()) / "kinemate-bench-train-gpu",
                    help="scratch folder (emptied first)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("bench_train_gpu: no CUDA device; run this on a machine with an NVIDIA GPU",
              file=sys.stderr)
        return 2
    if args.one_precision:  # a child of part 1
        result = one_precision(args, args.work)
        args.json.write_text(json.dumps(result, indent=1))
        return 0
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if args.precision:
        result["precision"] = part_precision(args, args.work)
    if args.full_size:
        result["full_size"] = part_full_size(args, args.work)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
