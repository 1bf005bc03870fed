"""The bundled kinemate-tiny model: loads offline, animates a held-out synthetic clip on CPU."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import kinemate
from kinemate.pipeline.loading import bundled_model_dir

ASSET = bundled_model_dir("kinemate-tiny")


def test_bundled_model_files_are_small_and_complete():
    index = json.loads((ASSET / "kinemate.json").read_text())
    assert index["name"] == "kinemate-tiny" and index["control_kind"] == "openpose"
    total = sum(p.stat().st_size for p in ASSET.rglob("*") if p.is_file())
    assert total <= 30 * 1024 * 1024, f"bundled model is {total / 2**20:.1f} MB (limit 30 MB)"
    assert (ASSET / "MODEL_CARD.md").is_file()
    for name in ("unet", "appearance_encoder", "controlnet", "vae"):
        assert (ASSET / name / "model.safetensors").is_file()


def test_bundled_model_animates_a_heldout_clip():
    from kinemate.synth import generate_clip

    t0 = time.perf_counter()
    pipe = kinemate.load_pipeline(model="kinemate-tiny")  # the bundled model, offline
    t_load = time.perf_counter() - t0
    assert pipe.name == "kinemate-tiny" and pipe.control_kind == "openpose"
    w, h = pipe.default_size
    clip = generate_clip(1_000_050, num_frames=8, size=(w, h), densepose=False)
    t0 = time.perf_counter()
    out = pipe(clip.frames[0], clip.skeleton, seed=0, progress=False)
    t_run = time.perf_counter() - t0
    print(f"\nkinemate-tiny: load {t_load:.1f} s, 8 frames {w}x{h} in {t_run:.1f} s "
          f"({pipe.options.steps} steps)")
    assert out.shape == (8, h, w, 3) and out.dtype == np.uint8
    # the frames follow the driving poses: they are not all the same picture
    assert float(np.abs(out[0].astype(int) - out[-1].astype(int)).mean()) > 0.5
    # deterministic for a seed
    again = pipe(clip.frames[0], clip.skeleton[:4], seed=0, progress=False, context_frames=4,
                 context_overlap=0)
    twice = pipe(clip.frames[0], clip.skeleton[:4], seed=0, progress=False, context_frames=4,
                 context_overlap=0)
    assert np.array_equal(again, twice)


def test_model_card_states_how_to_reproduce():
    card = (ASSET / "MODEL_CARD.md").read_text()
    assert "kinemate train --config configs/kinemate-tiny.yaml" in card
    assert Path(__file__).resolve().parents[2].joinpath("configs", "kinemate-tiny.yaml").is_file()


def test_every_shipped_training_config_loads():
    """configs/*.yaml parse and validate (a typo there would only show hours into a run)."""
    from kinemate.train.config import load_config

    folder = Path(__file__).resolve().parents[2] / "configs"
    configs = {p.name: load_config(p) for p in sorted(folder.glob("*.yaml"))}
    assert {"kinemate-tiny.yaml", "kinemate-tiny-3h.yaml",
            "kinemate-tiny-2h-highnoise.yaml"} <= set(configs)
    bundled = configs["kinemate-tiny.yaml"]
    assert bundled.export_dir == "kinemate/assets/kinemate-tiny"
    assert [s.id for s in bundled.stages] == ["vae", "stage1", "onestep", "polish", "stage2"]
    assert bundled.stages[1].timestep_range is None  # all timesteps first, then only near 999
    assert all(s.timestep_range == [900, 999] for s in bundled.stages[2:])
    longer = configs["kinemate-tiny-3h.yaml"]
    assert [s.id for s in longer.stages] == ["vae", "stage1", "onestep", "stage2"]
    high = configs["kinemate-tiny-2h-highnoise.yaml"]
    assert [s.id for s in high.stages] == ["vae", "stage1", "polish", "stage2"]
    assert all(s.timestep_range == [900, 999] for s in high.stages if s.kind != "vae")
    # only the bundled recipe writes into the package
    assert all(c.export_dir != bundled.export_dir for n, c in configs.items()
               if n != "kinemate-tiny.yaml")
