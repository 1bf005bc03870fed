"""Checkpoints with exact resume.

A checkpoint is a folder ``<stage dir>/checkpoints/step_NNNNNNN/`` holding everything a run
needs to continue as if it had never stopped:

* ``model.safetensors`` – the stage's module (trainable and frozen parts) as trained;
* ``ema.pt`` – the EMA shadow weights; ``optimizer.pt``, ``scheduler.pt``;
* ``rng_<rank>.pt`` – Python, NumPy and torch (CPU and CUDA) generator states of each process;
* ``state.json`` – step, micro step (= data position), elapsed wall time of the stage.

It is written into a temporary folder and renamed when complete, so a killed run never leaves a
half-written checkpoint behind; the newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from safetensors.torch import load_file, save_file

from kinemate.io.atomic import atomic_folder

PREFIX = "step_"


def list_checkpoints(stage_dir: Path) -> list[Path]:
    root = Path(stage_dir) / "checkpoints"
    if not root.is_dir():
        return []
    out = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
           and (p / "state.json").is_file()]
    return sorted(out, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(stage_dir: Path) -> Path | None:
    cps = list_checkpoints(stage_dir)
    return cps[-1] if cps else None


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _contiguous_state(module: torch.nn.Module) -> dict:
    # safetensors refuses shared storage; clone tied/viewed tensors
    out, seen = {}, set()
    for k, v in module.state_dict().items():
        v = v.detach().cpu()
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        out[k] = v.clone().contiguous() if ptr in seen or not v.is_contiguous() else v
        seen.add(ptr)
    return out


def save_checkpoint(stage_dir: Path, *, step: int, micro_step: int, elapsed_s: float,
                    module: torch.nn.Module, optimizer, scheduler, ema, accelerator,
                    keep: int = 2, extra: dict | None = None) -> Path:
    """Write a checkpoint of ``step`` (all processes call this; rank 0 writes shared files)."""
    root = Path(stage_dir) / "checkpoints"
    final = root / f"{PREFIX}{step:07d}"
    main = accelerator.is_main_process
    with (atomic_folder(final) if main else contextlib.nullcontext()) as tmp:
        # every process writes its RNG states into the folder the main process is building
        tmp = Path(broadcast_object_list([str(tmp) if main else None])[0])
        torch.save(rng_state(), tmp / f"rng_{accelerator.process_index}.pt")
        if main:
            save_file(_contiguous_state(module), str(tmp / "model.safetensors"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            if ema is not None:
                torch.save(ema.state_dict(), tmp / "ema.pt")
            state = {"step": step, "micro_step": micro_step, "elapsed_s": elapsed_s,
                     "world_size": accelerator.num_processes, "time": time.time(), **(extra or {})}
            (tmp / "state.json").write_text(json.dumps(state, indent=2))
        accelerator.wait_for_everyone()
    if main:
        for old in list_checkpoints(stage_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: Path, *, module, optimizer, scheduler, ema, accelerator) -> dict:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns its ``state.json``."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    sd = load_file(str(path / "model.safetensors"))
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if unexpected or [k for k in missing if not k.endswith("pos_encoder.pe")]:
        raise RuntimeError(
            f"checkpoint {path} does not match the model: {len(missing)} missing, "
            f"{len(unexpected)} unexpected keys (e.g. {(list(missing) + list(unexpected))[:3]})"
        )
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=False))
    if ema is not None and (path / "ema.pt").is_file():
        ema.load_state_dict(torch.load(path / "ema.pt", map_location="cpu", weights_only=False))
    rng_file = path / f"rng_{accelerator.process_index}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    return state
