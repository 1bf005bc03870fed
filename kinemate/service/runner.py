"""The default job runner: the animation pipeline, loaded once per worker.

``PipelineRunner.load()`` runs once in the worker thread (the model stays on the device for
every job); a worker serving several models (``ServiceConfig.models``, a job's ``model``)
keeps the loaded ones in a :class:`~kinemate.service.modelcache.ModelCache` within its
memory budget. ``PipelineRunner(job, job_dir, report)`` runs one job through
:func:`kinemate.pipeline.animate_file` and writes ``result.mp4`` (provenance-marked by
:func:`kinemate.provenance.make_marker`) and ``grid.mp4`` (reference | control | result) in
the job folder. The job's sampling options are those its owner set; the others take the
model's defaults (``pipe.options``), exactly as ``kinemate animate`` and ``animate_file`` do,
and the result records the options the frames were made with (``result["options"]``).

Progress comes from three hooks the engine offers: ``prepare_callback`` while the controls
are prepared (pose extracted per driving frame, control frames rendered or read; reported at
most every :data:`~kinemate.service.worker.REPORT_INTERVAL_S`), the sampler's per-step
``callback`` (steps) and the io marker protocol, whose ``mark(frame)`` is called on every
frame before it is encoded (frames written). Any of them may raise
:class:`~kinemate.service.worker.JobCancelled`, which stops the pipeline; the video writers
and the control spill folder then remove their temporary files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kinemate.pipeline.options import parse_size
from kinemate.pipeline.resume import SamplerCheckpoint
from kinemate.service.config import ServiceConfig
from kinemate.service.metrics import StepTimer
from kinemate.service.modelcache import ModelCache
from kinemate.service.params import sampling_options
from kinemate.service.store import Job
from kinemate.service.worker import throttled

log = logging.getLogger("kinemate.service")

# the sampler's state while a job runs: a job run again after a restart continues from its
# last saved denoising step (kinemate.pipeline.resume); removed when the result is complete
STATE_FILE = "sampler-state.safetensors"
DENOISE_SHARE = 0.9  # of the progress bar; decoding + encoding is the rest


class _Progress:
    """Turns sampler steps and written frames into progress reports."""

    def __init__(self, report, steps: int, frames: int):
        self.report, self.steps, self.frames = report, steps, frames
        self.step = 0
        self.written = 0
        self._throttled = throttled(report)
        self.timer = StepTimer()  # kinemate_step_seconds (the first from the last prepare)

    def _send(self, stage: str) -> None:
        fraction = DENOISE_SHARE * self.step / max(self.steps, 1)
        fraction += (1 - DENOISE_SHARE) * self.written / max(self.frames, 1)
        self.report({"stage": stage, "step": self.step, "total_steps": self.steps,
                     "frames": self.written, "total_frames": self.frames,
                     "fraction": round(min(fraction, 1.0), 4)})

    def on_prepare(self, stage: str, done: int, total: int | None) -> None:
        """``animate_file``'s prepare_callback: stage "pose" or "controls", frame counts."""
        self.timer.start()
        self._throttled({"stage": "preparing", "part": stage, "frames": done,
                         "total_frames": total if total is not None else self.frames,
                         "step": 0, "total_steps": self.steps, "fraction": 0.0})

    def on_window(self, step: int, window: int) -> None:
        """After each context window: a cancel is seen inside a long step too (throttled)."""
        self._throttled({"stage": "denoising", "step": self.step, "window": window + 1,
                         "total_steps": self.steps, "frames": self.written,
                         "total_frames": self.frames,
                         "fraction": round(DENOISE_SHARE * self.step / max(self.steps, 1), 4)})

    def on_step(self, index: int, _t, info: dict) -> None:  # the sampler's callback
        self.timer.tick()
        self.step = index + 1
        latents = info.get("latents") if isinstance(info, dict) else None
        if latents is not None and getattr(latents, "ndim", 0) == 5:
            self.frames = int(latents.shape[2])  # (B, C, F, H, W)
        self._send("denoising")

    def on_frame(self) -> None:
        self.written += 1
        self._send("writing")


class _ProgressMarker:
    """An io marker that counts frames for the progress report, then delegates to the
    provenance marker (if any)."""

    def __init__(self, inner, progress: _Progress):
        self.inner, self.progress = inner, progress

    def mark(self, frame: np.ndarray) -> np.ndarray:
        self.progress.on_frame()
        return self.inner.mark(frame) if self.inner is not None else frame

    def finalize(self, path: Path) -> None:
        if self.inner is not None:
            self.inner.finalize(path)


DEFAULT_MODEL = ""  # the cache's name of the worker's default model (``--weights``)


class PipelineRunner:
    state_file = STATE_FILE

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.catalog: dict[str, str | None] = {name: path for name, path in config.models}
        self.model_names = list(self.catalog)
        self.cache = ModelCache(self._load_model, config.model_cache_bytes)
        self._injected = None

    @property
    def pipe(self):
        """The default model (loaded by :meth:`load`), or one set from outside (tests)."""
        if self._injected is not None:
            return self._injected
        return self.cache.get(DEFAULT_MODEL) if DEFAULT_MODEL in self.cache.loaded() else None

    @pipe.setter
    def pipe(self, value) -> None:
        self._injected = value

    def _load_model(self, name: str):
        import torch

        from kinemate.pipeline import load_pipeline

        dtype = getattr(torch, self.config.dtype)
        if name == DEFAULT_MODEL:
            weights = self.config.weights
            if weights is None and self.catalog:
                weights = next(iter(self.catalog.values()))
        else:
            weights = self.catalog[name]
        log.info("loading model %s from %s on %s", name or "(default)",
                 weights or "the bundled model", self.config.device)
        return load_pipeline(str(weights) if weights else None, device=self.config.device,
                             dtype=dtype, preset=self.config.preset)

    def _pipe_for(self, model: str | None):
        if not model:
            return self.pipe if self.pipe is not None else self.cache.get(DEFAULT_MODEL)
        if model not in self.catalog:
            from kinemate.errors import UsageError

            raise UsageError(f"this worker does not serve the model {model!r} (it serves "
                             f"{', '.join(self.catalog) or 'only its default model'})")
        return self.cache.get(model)

    @staticmethod
    def discard(job_dir: Path) -> None:
        """Remove the sampler state of a job that will not run again (cancelled, failed)."""
        SamplerCheckpoint(job_dir / STATE_FILE).clear()

    def load(self) -> dict:
        """Load the default model once (in the worker thread); returns facts for
        /api/v1/health and /api/v1/limits (the model's own sampling defaults)."""
        pipe = self.pipe if self.pipe is not None else self.cache.get(DEFAULT_MODEL)
        return {"model": pipe.name, "control_kind": pipe.control_kind,
                "default_size": list(pipe.default_size), "device": self.config.device,
                "options": pipe.options.to_dict(),
                "uses_reference": pipe.uses_reference,
                "pose_render": dict(getattr(pipe.denoiser, "pose_render", None) or {}),
                **({"preset": pipe.index["preset"]} if "preset" in pipe.index else {})}

    def __call__(self, job: Job, job_dir: Path, report) -> dict:
        """Run one job; the sampling options it did not set take the model's defaults."""
        from kinemate.pipeline import animate_file

        pipe = self._pipe_for(job.model)
        params = job.params
        options = sampling_options(params)
        effective = pipe.options.merged(options)
        progress = _Progress(report, effective.steps, job.inputs["driving"].get("frames", 0))
        report({"stage": "preparing", "step": 0, "total_steps": effective.steps,
                "frames": 0, "total_frames": progress.frames, "fraction": 0.0})
        settings = {**effective.to_dict(), "control": params["control"], "fit": params["fit"],
                    "size": params.get("size"), "retarget": params.get("retarget", True),
                    "job": job.id}
        text = {k: params[k] for k in ("prompt", "negative_prompt") if params.get(k) is not None}
        if text:  # a text-conditioned model (text2video-zero): its prompt and preset
            settings.update(text, preset=pipe.index.get("preset"))
        ref = job.inputs.get("reference")
        marker = _ProgressMarker(_provenance_marker(pipe.name, settings,
                                                    params["watermark"]), progress)
        result = job_dir / "result.mp4"
        grid = job_dir / "grid.mp4"
        checkpoint = SamplerCheckpoint(job_dir / STATE_FILE, resume=True)
        out = animate_file(
            job_dir / ref["file"] if ref else None, job_dir / job.inputs["driving"]["file"],
            result, pipe=pipe, control=params["control"], size=parse_size(params.get("size")),
            fit=params["fit"], marker=marker, grid_path=grid, progress=False,
            retarget=params.get("retarget", True), callback=progress.on_step,
            prepare_callback=progress.on_prepare, window_callback=progress.on_window,
            checkpoint=checkpoint, **text, **options)
        report({"stage": "done", "step": progress.step, "total_steps": effective.steps,
                "frames": out.num_frames, "total_frames": out.num_frames, "fraction": 1.0})
        return {"file": result.name, "grid": grid.name if grid.is_file() else None,
                "frames": out.num_frames, "fps": out.fps, "size": list(out.size),
                "control": out.control, "model": pipe.name,
                "provenance": marker.inner is not None, "options": effective.to_dict(),
                "resumed_at_step": checkpoint.resumed_at}


def _provenance_marker(model_name: str, settings: dict, watermark: bool):
    try:
        from kinemate.provenance import make_marker
    except ImportError:  # pragma: no cover - provenance is part of the package
        log.warning("kinemate.provenance is not available; results are not marked")
        return None
    return make_marker(model_name, settings, watermark=watermark)
