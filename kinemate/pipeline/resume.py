"""Resumable sampling: the sampler's state after a finished denoising step, on disk.

A render interrupted at step k of n (Ctrl-C, SIGKILL, a crash, a service restart) continues
from the last saved step instead of from scratch, and gives the same bytes as a run that was
never interrupted. What is saved (one safetensors file, written atomically):

* the latents after the step, in their own dtype;
* the scheduler's run-time state (timesteps, multistep history, step index: every tensor,
  list of tensors and plain value of the scheduler object; its config is not state);
* the state of the sampler's own random generator (used by stochastic schedulers);
* a fingerprint of the job — the model, device, dtype, every resolved option, the reference
  and every control frame — so a state is only ever resumed by the job that wrote it.

Nothing but tensors and JSON is read back (no pickle): a state file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kinemate.errors import InputError, UsageError
from kinemate.io.atomic import atomic_path, remove_quietly

log = logging.getLogger(__name__)
FORMAT = "kinemate-sampler-state/1"


def job_fingerprint(facts: dict, reference: np.ndarray, controls: Sequence[np.ndarray]) -> str:
    """sha256 of the job's facts (JSON) and of every input pixel."""
    h = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode())
    for frame in (reference, *(controls[i] for i in range(len(controls)))):
        frame = np.ascontiguousarray(frame)
        h.update(str(frame.shape).encode())
        h.update(frame.tobytes())
    return h.hexdigest()


@dataclass
class SavedStep:
    """A state read back: resume after ``step`` (0-based index of the last finished step)."""

    step: int
    latents: torch.Tensor
    scheduler: dict
    generator: torch.Tensor | None


def _scheduler_state(scheduler) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {}
    for name, value in vars(scheduler).items():
        if name in ("_internal_dict", "config"):
            continue
        if torch.is_tensor(value):
            # cloned: a scheduler may keep views of one tensor (DDIM with set_alpha_to_one
            # off: final_alpha_cumprod is alphas_cumprod[0]), which safetensors refuses
            tensors[f"scheduler.{name}"] = value.detach().cpu().clone()
        elif isinstance(value, list) and all(v is None or torch.is_tensor(v) for v in value):
            plain[name] = {"list": [v is not None for v in value]}
            for i, v in enumerate(value):
                if v is not None:
                    tensors[f"scheduler.{name}.{i}"] = v.detach().cpu().clone()
        elif value is None or isinstance(value, (bool, int, float, str)):
            plain[name] = {"value": value}
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":  # PNDM's _timesteps
            plain[name] = {"ndarray": True}
            tensors[f"scheduler.{name}"] = torch.from_numpy(np.array(value))
        else:
            raise UsageError(f"the scheduler {type(scheduler).__name__} keeps state kinemate "
                             f"cannot save ({name}: {type(value).__name__}); run without "
                             "`resume`")
    return tensors, plain


def restore_scheduler(scheduler, saved: SavedStep, device) -> None:
    """Put the saved run-time state back onto a scheduler built from the same config."""
    tensors = saved.scheduler["tensors"]
    for name, spec in saved.scheduler["plain"].items():
        if "list" in spec:
            value = [tensors[f"scheduler.{name}.{i}"].to(device) if present else None
                     for i, present in enumerate(spec["list"])]
        elif "ndarray" in spec:
            value = tensors[f"scheduler.{name}"].numpy().copy()
        else:
            value = spec["value"]
        setattr(scheduler, name, value)
    for key, tensor in tensors.items():
        name = key.split(".")[1]
        if key.count(".") == 1 and "ndarray" not in saved.scheduler["plain"].get(name, {}):
            old = getattr(scheduler, name, None)
            setattr(scheduler, name, tensor.to(old.device if torch.is_tensor(old) else device))


@dataclass
class SamplerCheckpoint:
    """Where a sampling call keeps its state, and how often it writes it.

    ``path``: the state file. ``resume``: continue from a state found there (a state of
    another job is an error; no state means a fresh start). ``every_s``: at most one write
    per this many seconds (0: after every step); the last step is always written, and the
    caller removes the file (:meth:`clear`) once the output is complete, so an interruption
    while decoding or writing resumes without sampling again."""

    path: Path
    resume: bool = True
    every_s: float = 2.0
    fingerprint: str = ""
    resumed_at: int | None = None  # the first step run after loading a saved state (0-based)
    _last: float = field(default=0.0, repr=False)

    def __post_init__(self):
        self.path = Path(self.path)

    def load(self, fingerprint: str) -> SavedStep | None:
        self.fingerprint = fingerprint
        if not self.resume or not self.path.is_file():
            if self.resume:
                log.warning("no saved state at %s: sampling starts from the beginning", self.path)
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # a torn or foreign file
            raise InputError(f"the saved sampler state {self.path} cannot be read ({exc}); "
                             "delete it and run again without `resume`") from None
        if meta.get("format") != FORMAT:
            raise InputError(f"{self.path} is not a kinemate sampler state; delete it and run "
                             "again without `resume`")
        if meta.get("fingerprint") != fingerprint:
            raise UsageError(f"the saved state {self.path} belongs to another job (other inputs, "
                             "model, device, dtype or options); run the same job to resume it, "
                             "or run without `resume` to start over")
        self.resumed_at = int(meta["step"]) + 1
        log.info("resuming from the state after step %d (%s)", self.resumed_at, self.path)
        return SavedStep(int(meta["step"]), tensors.pop("latents"),
                         {"plain": json.loads(meta["scheduler"]),
                          "tensors": {k: v for k, v in tensors.items()
                                      if k.startswith("scheduler.")}},
                         tensors.get("generator"))

    def save(self, step: int, latents: torch.Tensor, scheduler,
             generator: torch.Generator | None, *, force: bool = False) -> bool:
        """Write the state after ``step`` if ``every_s`` has passed (or ``force``)."""
        now = time.monotonic()
        if not force and self._last and now - self._last < self.every_s:
            return False
        from safetensors.torch import save_file

        tensors, plain = _scheduler_state(scheduler)
        tensors["latents"] = latents.detach().cpu().contiguous()
        if generator is not None:
            tensors["generator"] = generator.get_state()
        meta = {"format": FORMAT, "fingerprint": self.fingerprint, "step": str(step),
                "scheduler": json.dumps(plain)}
        with atomic_path(self.path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        self._last = time.monotonic()
        return True

    def clear(self) -> None:
        remove_quietly(self.path)
