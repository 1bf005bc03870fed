"""The default job runner: the animation pipeline, loaded once per worker.

``PipelineRunner.load()`` runs once in the worker thread (the model stays on the device for
every job); ``PipelineRunner(job, job_dir, report)`` runs one job through
:func:`kinemate.pipeline.animate_file` and writes ``result.mp4`` and ``grid.mp4`` in the
job folder, with a provenance mark when :mod:`kinemate.provenance` provides one.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

from kinemate.service.config import ServiceConfig
from kinemate.service.store import Job

log = logging.getLogger("kinemate.service")


class PipelineRunner:
    def __init__(self, config: ServiceConfig):
        self.config = config
        self.pipe = None

    def load(self) -> dict:
        import torch

        from kinemate.pipeline import load_pipeline

        dtype = getattr(torch, self.config.dtype)
        weights = str(self.config.weights) if self.config.weights else None
        self.pipe = load_pipeline(weights, device=self.config.device, dtype=dtype)
        return {"model": getattr(self.pipe, "name", "kinemate"),
                "control_kind": getattr(self.pipe, "control_kind", "densepose"),
                "default_size": list(getattr(self.pipe, "default_size", (512, 512))),
                "device": self.config.device}

    def __call__(self, job: Job, job_dir: Path, report) -> dict:
        from kinemate.pipeline import animate_file

        if self.pipe is None:
            self.load()
        params = job.params
        size = tuple(int(x) for x in params["size"].split("x")) if params.get("size") else None
        settings = {"steps": params["steps"], "guidance": params["guidance"],
                    "seed": params["seed"], "control": params["control"], "fit": params["fit"],
                    "size": params.get("size"), "job": job.id}
        marker = _marker(getattr(self.pipe, "name", "kinemate"), settings, params["watermark"])
        result = job_dir / "result.mp4"
        grid = job_dir / "grid.mp4"
        kwargs = dict(pipe=self.pipe, control=params["control"], size=size, fit=params["fit"],
                      marker=marker, grid_path=grid, num_inference_steps=params["steps"],
                      guidance_scale=params["guidance"], seed=params["seed"])
        accepted = inspect.signature(animate_file).parameters
        callback_name = next((n for n in ("callback", "progress_callback", "on_progress")
                              if n in accepted), None)
        if callback_name:
            kwargs[callback_name] = _progress_adapter(report)
        if "progress" in accepted:
            kwargs["progress"] = False
        kwargs = {k: v for k, v in kwargs.items() if k in accepted or _has_var_kw(accepted)}
        driving = job_dir / job.inputs["driving"]["file"]
        out = animate_file(job_dir / job.inputs["reference"]["file"], driving, result, **kwargs)
        report({"stage": "done", "fraction": 1.0})
        record = {"file": result.name, "marked": marker is not None}
        if grid.is_file():
            record["grid"] = grid.name
        frames = getattr(out, "num_frames", None) or (out.get("frames") if isinstance(out, dict)
                                                      else None)
        if frames:
            record["frames"] = int(frames)
        return record


def _has_var_kw(params) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _progress_adapter(report):
    def callback(*args, **info):
        if args and isinstance(args[0], dict):
            info = {**args[0], **info}
        report({k: v for k, v in info.items() if isinstance(v, (int, float, str, type(None)))})
    return callback


def _marker(model_name: str, settings: dict, watermark: bool):
    try:
        from kinemate.provenance import make_marker
    except ImportError:
        log.info("kinemate.provenance.make_marker is not available; results are not marked")
        return None
    return make_marker(model_name, settings, watermark=watermark)
