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
from kinemate.io.atomic import atomic_folder
from kinemate.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from kinemate.train.config import (STAGE_KINDS, StageConfig, TrainConfig, config_to_dict,
                                   stage_data)
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
    with atomic_folder(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        if fp16:
            from safetensors.torch import load_file, save_file

            for f in tmp.glob("*/model.safetensors"):
                sd = load_file(str(f))
                sd = {k: (v.half() if v.is_floating_point() else v).contiguous()
                      for k, v in sd.items()}
                save_file(sd, str(f))


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
    """The stage's task: the autoencoder's, or the diffusion task of ``model.family``."""
    if stage.kind in ("vae", "vae_decoder"):
        from kinemate.train.tasks import VAETask

        return VAETask(cfg, stage, device, previous=_previous_result(cfg, stage))
    from kinemate.train.tasks import diffusion_task_class

    task_class = diffusion_task_class(cfg.model.family)
    return task_class(cfg, stage, device, previous=_previous_result(cfg, stage))


def run_stage(cfg: TrainConfig, stage: StageConfig, accelerator, *, progress: bool = True,
              stop_after_steps: int | None = None) -> bool:
    """Train one stage to ``stage.steps`` (or until ``stop_after_steps`` in this call).
    Returns True when the stage finished and wrote ``final/``."""
    # 1. the stage's folder and task; a closed-form model is fitted in one pass instead
    sdir = _open_stage_dir(cfg, stage, accelerator)
    task = build_task(cfg, stage, accelerator.device)
    if getattr(task, "closed_form", False):
        return _fit_closed_form(cfg, stage, task, accelerator)
    # 2. the optimizer, LR schedule and EMA of the trainable parameters
    run = _StageRun(cfg, stage, task, accelerator, sdir)
    # 3. continue from the newest checkpoint, if any
    run.resume()
    # 4. memory savers, and a line on what is trained
    if cfg.gradient_checkpointing:
        task.enable_gradient_checkpointing()
    run.announce()
    # 5. the parts handed to accelerate, the data from the resumed position
    run.prepare()
    # 6. optimizer steps to the end of the stage, or to a stop asked for in this call
    if not run.train(progress=progress, stop_after_steps=stop_after_steps):
        return False
    # 7. the last checkpoint, the result in final/ with DONE, and a sample
    run.finish()
    return True


def _open_stage_dir(cfg: TrainConfig, stage: StageConfig, accelerator) -> Path:
    """The stage's folder (created by the main process); each stage reports its own GPU peak."""
    sdir = stage_dir(cfg, stage)
    if accelerator.is_main_process:
        sdir.mkdir(parents=True, exist_ok=True)
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)
    return sdir


class _StageRun:
    """The training loop of one trainable stage in one call: its parts, where it stands
    (optimizer step, micro step = data position, wall time of earlier calls) and its loss log."""

    def __init__(self, cfg: TrainConfig, stage: StageConfig, task, accelerator, sdir: Path):
        self.cfg, self.stage, self.task, self.accelerator, self.sdir = (
            cfg, stage, task, accelerator, sdir)
        self.device = accelerator.device
        self.params = [p for p in task.module.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError(f"stage {stage.id} has nothing to train")
        self.optimizer = make_optimizer(self.params, stage)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(stage, s))
        self.ema = (EMA(task.module, stage.ema_decay, stage.ema_warmup)
                    if stage.ema_decay > 0 else None)
        self.wrapped = task.module
        self.step, self.micro_step, self.elapsed0 = 0, 0, 0.0
        self.end = stage.steps

    def resume(self) -> None:
        """Restore the newest checkpoint: weights, optimizer, EMA, RNG states, data position."""
        ckpt = latest_checkpoint(self.sdir)
        if ckpt is None:
            return
        st = load_checkpoint(ckpt, module=self.task.module, optimizer=self.optimizer,
                             scheduler=self.scheduler, ema=self.ema, accelerator=self.accelerator)
        self.step, self.micro_step, self.elapsed0 = st["step"], st["micro_step"], st["elapsed_s"]
        _echo(self.accelerator,
              f"stage {self.stage.id}: resumed from {ckpt.name} (step {self.step})")

    def announce(self) -> None:
        """One line: trainable parameters, steps, batch x accumulation x processes."""
        stage, acc = self.stage, self.accelerator
        n_train = sum(p.numel() for p in self.params)
        _echo(acc, f"stage {stage.id}: {n_train / 1e6:.2f} M trainable parameters, "
              f"{stage.steps} steps, batch {stage.batch_size} x "
              f"{self.cfg.gradient_accumulation_steps} accum x {acc.num_processes} processes")

    def prepare(self) -> None:
        """Hand the module, optimizer and schedule to accelerate (the EMA follows to the
        device); start the data loader and the loss log at the resumed position."""
        cfg, stage, acc = self.cfg, self.stage, self.accelerator
        self.wrapped, self.optimizer, self.scheduler = acc.prepare(
            self.task.module, self.optimizer, self.scheduler)
        if self.ema is not None:
            self.ema.shadow = {k: v.to(self.device) for k, v in self.ema.shadow.items()}
        loader = make_loader(
            make_source(stage_data(cfg, stage)), "stage2" if stage.kind == "stage2" else stage.kind,
            seed=_data_seed(cfg, stage), clip_frames=cfg.data.clip_frames,
            batch_size=stage.batch_size, step=self.micro_step, rank=acc.process_index,
            world=acc.num_processes, num_workers=cfg.num_workers, pair_margin=cfg.data.pair_margin,
        )
        self.batches = iter(loader)
        self.logger = LossLog(self.sdir, self.step) if acc.is_main_process else None

    def train(self, *, progress: bool, stop_after_steps: int | None) -> bool:
        """Optimizer steps until the stage's end; False when ``stop_after_steps`` ended this
        call first (a checkpoint is then written)."""
        from tqdm.auto import tqdm

        acc = self.accelerator
        self.t_start = self.t_ckpt = self.t_log = time.time()
        self.step_log, self.loss_acc, self.n_acc = self.step, 0.0, 0
        steps_this_call = 0
        bar = tqdm(total=self.stage.steps, initial=self.step, desc=self.stage.id, disable=not (
            progress and acc.is_main_process), file=sys.stderr, dynamic_ncols=True)
        while self.step < self.end:
            if self._finish_now_asked():
                break
            self._micro_step(next(self.batches))
            if not acc.sync_gradients:
                continue
            self.step += 1
            steps_this_call += 1
            if self.ema is not None:
                self.ema.update(acc.unwrap_model(self.wrapped))
            bar.update(1)
            self._log(bar)
            stop_now = stop_after_steps is not None and steps_this_call >= stop_after_steps
            self._checkpoint_and_sample_when_due(stop_now)
            if stop_now and self.step < self.end:
                bar.close()
                _echo(acc, f"stage {self.stage.id}: stopped at step {self.step} "
                      "(checkpoint written)")
                acc.free_memory()
                return False
        bar.close()
        return True

    def _finish_now_asked(self) -> bool:
        """An operator's ``FINISH_NOW`` file ends the stage at this step (e.g. out of time):
        without a cool-down the result equals a run configured with steps=<this step> (the LR
        schedule then does not depend on steps)."""
        if not ((self.sdir / "FINISH_NOW").is_file() and self.step > 0):
            return False
        self.end = self.step
        _echo(self.accelerator,
              f"stage {self.stage.id}: FINISH_NOW found, ending at step {self.step}")
        return True

    def _micro_step(self, batch: dict) -> None:
        """Forward and backward of one batch (the optimizer steps when gradients sync); its
        noise comes from a generator seeded by (run seed, stage, micro step, process)."""
        acc, stage = self.accelerator, self.stage
        gen = torch.Generator().manual_seed(
            mix_seed(self.cfg.seed, stage.id, "noise", self.micro_step, acc.process_index))
        inputs = self.task.prepare(batch, gen)
        with acc.accumulate(self.wrapped):
            with acc.autocast():
                loss = self.wrapped(**inputs)
            acc.backward(loss)
            if acc.sync_gradients and stage.max_grad_norm > 0:
                acc.clip_grad_norm_(self.params, stage.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.micro_step += 1
        self.loss_acc += float(loss.detach())
        self.n_acc += 1

    def _log(self, bar) -> None:
        """Every ``log_every`` steps and at the end: the mean loss over processes to log.csv."""
        if not (self.step % self.cfg.log_every == 0 or self.step == self.end):
            return
        mean_loss = self.loss_acc / max(self.n_acc, 1)
        mean_loss = float(self.accelerator.reduce(torch.tensor(mean_loss, device=self.device),
                                                  "mean"))
        sps = (self.step - self.step_log) / max(time.time() - self.t_log, 1e-9)
        if self.logger is not None:
            sm = self.logger.append(self.step, mean_loss, self.scheduler.get_last_lr()[0],
                                    self.elapsed0 + time.time() - self.t_start, sps)
            bar.set_postfix(loss=f"{sm:.4f}", sps=f"{sps:.2f}")
        self.loss_acc, self.n_acc, self.t_log, self.step_log = 0.0, 0, time.time(), self.step

    def _checkpoint_and_sample_when_due(self, stop_now: bool) -> None:
        """A checkpoint (and loss plot) every ``checkpoint_every`` steps or minutes and before a
        stop; a sample every ``sample_every`` steps (the end writes its own)."""
        cfg, acc, step = self.cfg, self.accelerator, self.step
        due = (step % cfg.checkpoint_every == 0
               or (time.time() - self.t_ckpt) > 60 * cfg.checkpoint_every_minutes)
        if step < self.end and (due or stop_now):
            self._checkpoint()
            self.t_ckpt = time.time()
            if acc.is_main_process:
                plot_losses({self.stage.id: self.sdir / "log.csv"}, self.sdir / "loss.png")
        if cfg.sample_every and step % cfg.sample_every == 0 and step < self.end:
            if acc.is_main_process:
                _sample(self.task, acc.unwrap_model(self.wrapped), self.ema,
                        self.sdir / "samples" / f"step_{step:07d}.mp4")
            acc.wait_for_everyone()

    def _checkpoint(self) -> None:
        """Everything needed to continue exactly from this step (see :mod:`.checkpoint`)."""
        acc = self.accelerator
        save_checkpoint(self.sdir, step=self.step, micro_step=self.micro_step,
                        elapsed_s=self.elapsed0 + time.time() - self.t_start,
                        module=acc.unwrap_model(self.wrapped), optimizer=self.optimizer,
                        scheduler=self.scheduler, ema=self.ema, accelerator=acc,
                        keep=self.cfg.keep_checkpoints, extra={"stage": self.stage.id})

    def finish(self) -> None:
        """The last checkpoint; on the main process the result (the EMA weights, if any) in
        ``final/`` with ``DONE``, the loss plot and a sample."""
        acc, stage, sdir = self.accelerator, self.stage, self.sdir
        self._checkpoint()
        elapsed = self.elapsed0 + time.time() - self.t_start
        if acc.is_main_process:
            final_module = acc.unwrap_model(self.wrapped)
            if self.ema is not None:
                self.ema.copy_to(final_module)  # the result is the EMA weights
            final = _write_result(sdir, self.task, final_module, {
                "stage": stage.id, "steps": self.step, "batch_size": stage.batch_size,
                "world_size": acc.num_processes, "wall_time_s": round(elapsed, 1),
                "final_loss_ema": self.logger.smoothed if self.logger else None,
                **_gpu_peak(self.device)})
            plot_losses({stage.id: sdir / "log.csv"}, sdir / "loss.png")
            _sample(self.task, final_module, None, sdir / "samples" / "final.mp4")
            peak = _gpu_peak(self.device)
            on_gpu = f", peak GPU memory {peak['peak_gpu_memory_gib']} GiB" if peak else ""
            _echo(acc, f"stage {stage.id}: done in {elapsed / 60:.1f} min{on_gpu} -> {final}")
        acc.wait_for_everyone()
        acc.free_memory()


def _gpu_peak(device: torch.device) -> dict:
    """``{"peak_gpu_memory_gib": ...}`` (torch.cuda's peak allocation of this process) on a
    CUDA device, else ``{}``."""
    if device.type != "cuda":
        return {}
    return {"peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}


def _write_result(sdir: Path, task, module, info: dict) -> Path:
    """Save the stage's result to ``sdir/final`` (written under a temporary name, then renamed)
    and mark the stage done with ``info``; returns the ``final`` folder."""
    final = sdir / "final"
    with atomic_folder(final) as tmp:
        task.save_result(module, tmp)
    (sdir / "DONE").write_text(json.dumps(info, indent=2))
    return final


def _fit_closed_form(cfg: TrainConfig, stage: StageConfig, task, accelerator) -> bool:
    """A stage whose model is fitted in one pass (the PCA patch autoencoder): gather
    ``stage.fit_frames`` training frames, fit, write ``final/`` and ``DONE``."""
    sdir = stage_dir(cfg, stage)
    t0 = time.time()
    loader = make_loader(make_source(stage_data(cfg, stage)), stage.kind, seed=_data_seed(cfg, stage),
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
