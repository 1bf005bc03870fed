"""Training leaves the caller's global RNG alone: model init is seeded by the run's seed on a
forked generator, and every draw of a step comes from generators of its own."""

from __future__ import annotations

import random

import numpy as np
import torch
from trainfixtures import tiny_config

from kinemate.train.config import config_from_dict
from kinemate.train.trainer import build_task, train

STAGES = [{"kind": "vae", "steps": 1, "batch_size": 2, "lr": 1e-3, "ema_decay": 0},
          {"kind": "stage1", "steps": 2, "batch_size": 2, "lr": 1e-3},
          {"kind": "stage2", "steps": 2, "batch_size": 1, "lr": 1e-3}]


def _global_states() -> tuple:
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def _assert_unchanged(before: tuple) -> None:
    torch_state, np_state, py_state = _global_states()
    assert torch.equal(torch_state, before[0]), "torch's global RNG state changed"
    assert np.array_equal(np_state, before[1]), "numpy's global RNG state changed"
    assert py_state == before[2], "python's global RNG state changed"


def test_tasks_and_a_stage_step_leave_the_global_rng_alone(tmp_path):
    cfg = config_from_dict(tiny_config(tmp_path, STAGES))
    torch.manual_seed(1234)
    before = _global_states()
    # the vae stage runs to its end (result + sample); stage1 builds its task, takes one
    # optimizer step and writes a checkpoint
    assert train(cfg, progress=False, stop_after_steps=1) == tmp_path / "run" / "stage1"
    _assert_unchanged(before)
    for stage in cfg.stages:  # every kind of task
        build_task(cfg, stage, torch.device("cpu"))
        _assert_unchanged(before)


def test_task_init_is_a_function_of_the_run_seed_only(tmp_path):
    cfg = config_from_dict(tiny_config(tmp_path, STAGES))
    train(cfg, progress=False, stop_after_steps=1)  # the vae the diffusion stages start from
    states = []
    for caller_seed in (0, 99):
        torch.manual_seed(caller_seed)
        states.append([build_task(cfg, s, torch.device("cpu")).module.state_dict()
                       for s in cfg.stages])
    for first, second in zip(*states):
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first)
