"""The training loop shared by all stages, on ``accelerate``.

``train(cfg)`` runs the configured stages in order. Each stage lives in
``<output_dir>/<name>/`` (the stage's ``name``, else its kind) with ``checkpoints/``,
``log.csv``, ``samples/`` and, when done, ``final/`` (the stage's result, which the next stage
starts from) and ``DONE``. Re-running the same command with ``resume=True`` skips finished
stages and continues the unfinished one from its newest checkpoint: same weights, optimizer,
EMA, RNG states and data position, so the result is the same as an uninterrupted run.

Randomness that shapes a step (which examples, the diffusion noise and timesteps) is drawn from
generators seeded by ``(run seed, stage, step, process)``; that is what makes resume exact.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch

from kinemate.errors import ConfigError
from kinemate.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from kinemate.train.config import STAGE_KINDS, StageConfig, TrainConfig, config_to_dict
from kinemate.train.data import make_loader, make_source, mix_seed
from kinemate.train.ema import EMA
from kinemate.train.logs import LossLog, plot_losses

log = logging.getLogger("kinemate.train")


def lr_factor(stage: StageConfig, step: int) -> float:
    """LR multiplier at optimizer step ``step`` (0-based): linear warm-up over ``warmup_steps``,
    constant, then a linear cool-down to 0 over the last ``cooldown_steps`` of ``steps``."""
    f = 1.0
    if stage.warmup_steps > 0:
        f = min(f, (step + 1) / stage.warmup_steps)
    if stage.cooldown_steps > 0:
        f = min(f, max(0.0, (stage.steps - step) / stage.cooldown_steps))
    return f


def make_optimizer(params: list, stage: StageConfig) -> torch.optim.Optimizer:
    """AdamW over ``params``. On CPU and CUDA it is torch's fused kernel: one pass per tensor
    instead of several small ops, which on 2 CPU cores cut the optimizer step of the tiny
    recipe from about 80 ms to about 12 ms (a seventh of a training step)."""
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay,
                             fused=fused or None)


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    return Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.find_unused_parameters)],
    )


def stage_dir(cfg: TrainConfig, stage: StageConfig) -> Path:
    return Path(cfg.output_dir) / stage.id


def _echo(accelerator, msg: str) -> None:
    if accelerator.is_main_process:
        print(f"[kinemate train] {msg}", file=sys.stderr, flush=True)


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
          stop_after_steps: int | None = None, accelerator=None,
          only: list[str] | None = None) -> Path:
    """Run every stage of ``cfg``; returns the folder of the last stage's result.

    resume: continue from existing checkpoints/finished stages in ``cfg.output_dir`` (without
    it, an output folder that already holds a run is an error). stop_after_steps: stop the
    current stage after this many optimizer steps in *this* call (used by tests and to split
    long runs); the stage is then unfinished and a later ``resume`` continues it. only: run
    just the stages of these names (the others are skipped, but a finished one still serves
    as the starting point of the stage after it).
    """
    out = Path(cfg.output_dir)
    if out.exists() and any(out.iterdir()) and not resume:
        raise ConfigError(
            f"output folder {out} already holds a run; pass --resume to continue it, or choose "
            "another output_dir"
        )
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    accelerator = accelerator or make_accelerator(cfg)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))
    result = None
    for stage in cfg.stages:
        sdir = stage_dir(cfg, stage)
        if only is not None and stage.id not in only:
            continue
        if (sdir / "DONE").is_file():
            _echo(accelerator, f"stage {stage.id}: already finished, skipping")
            result = sdir / "final"
            continue
        finished = run_stage(cfg, stage, accelerator, progress=progress,
                             stop_after_steps=stop_after_steps)
        result = sdir / "final"
        if not finished:
            return sdir
    if (result is not None and cfg.export_dir and accelerator.is_main_process
            and (result / "kinemate.json").is_file()):  # a whole model, not just a VAE
        export(result, Path(cfg.export_dir), fp16=cfg.export_fp16)
        _echo(accelerator, f"exported {result} -> {cfg.export_dir}")
    if accelerator.is_main_process:
        plot_losses({s.id: stage_dir(cfg, s) / "log.csv" for s in cfg.stages}, out / "loss.png")
    return result


def export(src: Path, dst: Path, *, fp16: bool = False) -> None:
    """Copy a finished pipeline folder to ``dst`` (atomically replaced); ``fp16`` stores the
    component weights in half precision (they are cast back to the load dtype when read)."""
    dst = Path(dst)
    tmp = dst.with_name(f".tmp-{dst.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    if fp16:
        from safetensors.torch import load_file, save_file

        for f in tmp.glob("*/model.safetensors"):
            sd = load_file(str(f))
            sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
            save_file(sd, str(f))
    if dst.exists():
        old = dst.with_name(f".old-{dst.name}")
        if old.exists():
            shutil.rmtree(old)
        dst.rename(old)
        tmp.rename(dst)
        shutil.rmtree(old)
    else:
        tmp.rename(dst)


def _data_seed(cfg: TrainConfig, stage: StageConfig) -> int:
    """The data order's seed: ``cfg.seed`` for an unnamed stage (as before names existed); a
    named stage gets its own stream, so a second stage of a kind does not replay the first's."""
    return cfg.seed if stage.name is None else mix_seed(cfg.seed, stage.name)


def _previous_result(cfg: TrainConfig, stage: StageConfig) -> Path | None:
    """The result a stage starts from: the nearest finished stage before it in the config;
    failing that (a config that runs only later stages), the nearest finished stage folder of
    an earlier kind (vae, stage1, stage2 order) in the output folder."""
    before = list(itertools.takewhile(lambda s: s.id != stage.id, cfg.stages))
    for s in reversed(before):
        final = stage_dir(cfg, s) / "final"
        if (final.parent / "DONE").is_file():
            return final
    i = STAGE_KINDS.index(stage.kind)
    for kind in reversed(STAGE_KINDS[:i]):
        final = Path(cfg.output_dir) / kind / "final"
        if (final / "DONE").is_file() or (final.parent / "DONE").is_file():
            return final
    return None


def build_task(cfg: TrainConfig, stage: StageConfig, device: torch.device):
    if stage.kind in ("vae", "vae_decoder"):
        from kinemate.train.tasks import VAETask

        return VAETask(cfg, stage, device, previous=_previous_result(cfg, stage))
    from kinemate.train.tasks import DiffusionTask

    return DiffusionTask(cfg, stage, device, previous=_previous_result(cfg, stage))


def run_stage(cfg: TrainConfig, stage: StageConfig, accelerator, *, progress: bool = True,
              stop_after_steps: int | None = None) -> bool:
    """Train one stage to ``stage.steps`` (or until ``stop_after_steps`` in this call).
    Returns True when the stage finished and wrote ``final/``."""
    from tqdm.auto import tqdm

    sdir = stage_dir(cfg, stage)
    if accelerator.is_main_process:
        sdir.mkdir(parents=True, exist_ok=True)
    device = accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # each stage reports its own peak
    task = build_task(cfg, stage, device)
    if getattr(task, "closed_form", False):
        return _fit_closed_form(cfg, stage, task, accelerator)
    module = task.module
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"stage {stage.id} has nothing to train")
    optimizer = make_optimizer(params, stage)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(stage, s))
    ema = EMA(module, stage.ema_decay, stage.ema_warmup) if stage.ema_decay > 0 else None

    step, micro_step, elapsed0 = 0, 0, 0.0
    ckpt = latest_checkpoint(sdir)
    if ckpt is not None:
        st = load_checkpoint(ckpt, module=module, optimizer=optimizer, scheduler=scheduler,
                             ema=ema, accelerator=accelerator)
        step, micro_step, elapsed0 = st["step"], st["micro_step"], st["elapsed_s"]
        _echo(accelerator, f"stage {stage.id}: resumed from {ckpt.name} (step {step})")
    if cfg.gradient_checkpointing:
        task.enable_gradient_checkpointing()
    n_train = sum(p.numel() for p in params)
    _echo(accelerator, f"stage {stage.id}: {n_train / 1e6:.2f} M trainable parameters, "
          f"{stage.steps} steps, batch {stage.batch_size} x {cfg.gradient_accumulation_steps} "
          f"accum x {accelerator.num_processes} processes")

    wrapped, optimizer, scheduler = accelerator.prepare(module, optimizer, scheduler)
    if ema is not None:
        ema.shadow = {k: v.to(device) for k, v in ema.shadow.items()}
    source = make_source(cfg.data)
    loader = make_loader(
        source, "stage2" if stage.kind == "stage2" else stage.kind, seed=_data_seed(cfg, stage),
        clip_frames=cfg.data.clip_frames, batch_size=stage.batch_size, step=micro_step,
        rank=accelerator.process_index, world=accelerator.num_processes,
        num_workers=cfg.num_workers,
    )
    logger = LossLog(sdir, step) if accelerator.is_main_process else None
    batches = iter(loader)
    t_start = time.time()
    t_ckpt = time.time()
    steps_this_call = 0
    loss_acc, n_acc = 0.0, 0
    t_log, step_log = time.time(), step
    bar = tqdm(total=stage.steps, initial=step, desc=stage.id, disable=not (
        progress and accelerator.is_main_process), file=sys.stderr, dynamic_ncols=True)

    def do_checkpoint() -> None:
        save_checkpoint(sdir, step=step, micro_step=micro_step,
                        elapsed_s=elapsed0 + time.time() - t_start,
                        module=accelerator.unwrap_model(wrapped), optimizer=optimizer,
                        scheduler=scheduler, ema=ema, accelerator=accelerator,
                        keep=cfg.keep_checkpoints, extra={"stage": stage.id})

    end = stage.steps
    while step < end:
        if (sdir / "FINISH_NOW").is_file() and step > 0:
            # an operator asked to end the stage here (e.g. out of time): without a cool-down
            # the result equals a run configured with steps=<this step> (the LR schedule then
            # does not depend on steps)
            end = step
            _echo(accelerator, f"stage {stage.id}: FINISH_NOW found, ending at step {step}")
            break
        batch = next(batches)
        gen = torch.Generator().manual_seed(
            mix_seed(cfg.seed, stage.id, "noise", micro_step, accelerator.process_index))
        inputs = task.prepare(batch, gen)
        with accelerator.accumulate(wrapped):
            with accelerator.autocast():
                loss = wrapped(**inputs)
            accelerator.backward(loss)
            if accelerator.sync_gradients and stage.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, stage.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        micro_step += 1
        loss_acc += float(loss.detach())
        n_acc += 1
        if not accelerator.sync_gradients:
            continue
        step += 1
        steps_this_call += 1
        if ema is not None:
            ema.update(accelerator.unwrap_model(wrapped))
        bar.update(1)
        if step % cfg.log_every == 0 or step == end:
            mean_loss = loss_acc / max(n_acc, 1)
            mean_loss = float(accelerator.reduce(torch.tensor(mean_loss, device=device), "mean"))
            sps = (step - step_log) / max(time.time() - t_log, 1e-9)
            if logger is not None:
                sm = logger.append(step, mean_loss, scheduler.get_last_lr()[0],
                                   elapsed0 + time.time() - t_start, sps)
                bar.set_postfix(loss=f"{sm:.4f}", sps=f"{sps:.2f}")
            loss_acc, n_acc, t_log, step_log = 0.0, 0, time.time(), step
        stop_now = stop_after_steps is not None and steps_this_call >= stop_after_steps
        due = (step % cfg.checkpoint_every == 0
               or (time.time() - t_ckpt) > 60 * cfg.checkpoint_every_minutes)
        if step < end and (due or stop_now):
            do_checkpoint()
            t_ckpt = time.time()
            if accelerator.is_main_process:
                plot_losses({stage.id: sdir / "log.csv"}, sdir / "loss.png")
        if cfg.sample_every and step % cfg.sample_every == 0 and step < end:
            if accelerator.is_main_process:
                _sample(task, accelerator.unwrap_model(wrapped), ema, sdir / "samples" / f"step_{step:07d}.mp4")
            accelerator.wait_for_everyone()
        if stop_now and step < end:
            bar.close()
            _echo(accelerator, f"stage {stage.id}: stopped at step {step} (checkpoint written)")
            accelerator.free_memory()
            return False
    bar.close()
    do_checkpoint()
    elapsed = elapsed0 + time.time() - t_start
    if accelerator.is_main_process:
        final_module = accelerator.unwrap_model(wrapped)
        if ema is not None:
            ema.copy_to(final_module)  # the result is the EMA weights
        final = _write_result(sdir, task, final_module, {
            "stage": stage.id, "steps": step, "batch_size": stage.batch_size,
            "world_size": accelerator.num_processes, "wall_time_s": round(elapsed, 1),
            "final_loss_ema": logger.smoothed if logger else None,
            **_gpu_peak(device)})
        plot_losses({stage.id: sdir / "log.csv"}, sdir / "loss.png")
        _sample(task, final_module, None, sdir / "samples" / "final.mp4")
        peak = _gpu_peak(device)
        on_gpu = f", peak GPU memory {peak['peak_gpu_memory_gib']} GiB" if peak else ""
        _echo(accelerator, f"stage {stage.id}: done in {elapsed / 60:.1f} min{on_gpu} -> {final}")
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    return True


def _gpu_peak(device: torch.device) -> dict:
    """``{"peak_gpu_memory_gib": ...}`` (torch.cuda's peak allocation of this process) on a
    CUDA device, else ``{}``."""
    if device.type != "cuda":
        return {}
    return {"peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}


def _write_result(sdir: Path, task, module, info: dict) -> Path:
    """Save the stage's result to ``sdir/final`` (written under a temporary name, then renamed)
    and mark the stage done with ``info``; returns the ``final`` folder."""
    final, tmp = sdir / "final", sdir / ".tmp-final"
    if tmp.exists():
        shutil.rmtree(tmp)
    task.save_result(module, tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    (sdir / "DONE").write_text(json.dumps(info, indent=2))
    return final


def _fit_closed_form(cfg: TrainConfig, stage: StageConfig, task, accelerator) -> bool:
    """A stage whose model is fitted in one pass (the PCA patch autoencoder): gather
    ``stage.fit_frames`` training frames, fit, write ``final/`` and ``DONE``."""
    sdir = stage_dir(cfg, stage)
    t0 = time.time()
    loader = make_loader(make_source(cfg.data), stage.kind, seed=_data_seed(cfg, stage),
                         clip_frames=cfg.data.clip_frames, batch_size=stage.batch_size, step=0,
                         rank=0, world=1, num_workers=cfg.num_workers)
    frames, n = [], 0
    for batch in loader:
        frames.append(batch["image"])
        n += len(batch["image"])
        if n >= stage.fit_frames:
            break
    images = torch.cat(frames)[: stage.fit_frames]
    _echo(accelerator, f"stage {stage.id}: fitting {type(task.module.vae).__name__} on "
          f"{len(images)} frames")
    task.fit_closed_form(images)
    if accelerator.is_main_process:
        elapsed = time.time() - t0
        final = _write_result(sdir, task, task.module, {
            "stage": stage.id, "steps": 0, "fit_frames": len(images),
            "world_size": accelerator.num_processes, "wall_time_s": round(elapsed, 1),
            "final_loss_ema": None})
        _sample(task, task.module, None, sdir / "samples" / "final.png")
        _echo(accelerator, f"stage {stage.id}: fitted in {elapsed:.1f} s -> {final}")
    accelerator.wait_for_everyone()
    return True


def _sample(task, module, ema, path: Path) -> None:
    """Write a sample video with the current (EMA if given) weights; never fails the run."""
    try:
        if ema is not None:
            backup = {k: p.detach().clone() for k, p in module.named_parameters() if k in ema.shadow}
            ema.copy_to(module)
        try:
            task.sample(module, path)
        finally:
            if ema is not None:
                with torch.no_grad():
                    for k, p in module.named_parameters():
                        if k in backup:
                            p.copy_(backup[k])
    except Exception as exc:  # noqa: BLE001 - samples are a convenience
        log.warning("could not write sample %s: %s", path, exc)
        print(f"[kinemate train] sample {path.name} failed: {exc}", file=sys.stderr)


def stage_summary(cfg: TrainConfig) -> dict:
    out = {}
    for s in cfg.stages:
        done = stage_dir(cfg, s) / "DONE"
        out[s.id] = json.loads(done.read_text()) if done.is_file() else None
    return out


__all__ = ["train", "run_stage", "make_accelerator", "stage_summary", "export"]
