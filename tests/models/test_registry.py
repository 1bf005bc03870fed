"""One registry of model families: a family added in its own module is found by
load_pipeline, `kinemate animate --model`, `kinemate weights` and the service's loader
without any change to them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kinemate.errors import UsageError
from kinemate.models import registry
from kinemate.models.magicanimate import MagicAnimateDenoiser


class StillDenoiser(MagicAnimateDenoiser):
    """A toy family step: predicts no noise at all (the sampler keeps its start)."""

    def predict(self, step, features, latents):
        return torch.zeros((step.rows.with_videos(latents.shape[0]).rows, *latents.shape[1:]),
                           dtype=latents.dtype, device=latents.device)


def _assemble(components, uncond=None, cond=None):
    return StillDenoiser(components["unet"], components["appearance_encoder"],
                         components["controlnet"], text_embeds_uncond=uncond,
                         text_embeds_cond=cond)


@pytest.fixture
def toy_family(monkeypatch, golden_release, tmp_path):
    """A family registered from test code, and a model folder of it."""
    from kinemate import load_pipeline
    from kinemate.hub import WeightFile, WeightSet

    ma = registry.get_family("magicanimate")
    family = registry.Family(
        name="toy-still", summary="test family", control_kinds=("densepose",),
        components=ma.components, assemble=_assemble, scheduler=ma.scheduler,
        weight_sets=(WeightSet("toy-still", "test weights", (WeightFile(
            "example/toy", "model.safetensors", "model.safetensors"),)),))
    monkeypatch.setitem(registry._REGISTERED, family.name, family)
    folder = load_pipeline(golden_release).save_pretrained(tmp_path / "toy")
    index = json.loads((folder / "kinemate.json").read_text())
    index.update(family="toy-still", name="toy")
    (folder / "kinemate.json").write_text(json.dumps(index))
    return folder


def test_a_new_family_loads_through_the_registry(toy_family):
    from kinemate import load_pipeline

    pipe = load_pipeline(toy_family, model="toy-still")
    assert pipe.family == "toy-still" and isinstance(pipe.denoiser, StillDenoiser)
    ref = np.zeros((32, 32, 3), np.uint8)
    controls = np.zeros((2, 32, 32, 3), np.uint8)
    latents = pipe.sample_latents(ref, controls, steps=2, seed=0, progress=False)
    start = pipe.initial_noise(2, 32, 32, 0) * pipe.scheduler.init_noise_sigma
    assert latents.shape == start.shape  # the toy step ran, through the shared engine
    with pytest.raises(UsageError, match="toy-still model"):
        load_pipeline(toy_family, model="magicanimate")


def test_front_ends_find_a_new_family(toy_family, demo_inputs, tmp_path, capsys, one_thread):
    from kinemate.cli import main

    out = tmp_path / "out.mp4"
    rc = main(["animate", "--model", "toy-still", "--weights", str(toy_family),
               str(demo_inputs / "demo4.png"), str(demo_inputs / "demo4_densepose.mp4"),
               "-o", str(out), "--size", "32x32", "--max-frames", "2", "--steps", "1",
               "--no-progress"])
    assert rc == 0 and out.is_file()
    assert "toy (toy-still family" in capsys.readouterr().out
    assert main(["weights", "list", "--json"]) == 0
    assert "toy-still" in json.loads(capsys.readouterr().out)


def test_unknown_model_lists_the_families(capsys, tmp_path):
    from kinemate.cli import main

    rc = main(["animate", "--example", "--model", "nope", "-o", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown model 'nope'" in err
    assert all(name in err for name in ("magicanimate", "kinemate-tiny"))


def test_registry_names_need_no_family_import():
    assert {"magicanimate", "kinemate-tiny"} <= set(registry.family_names())
    assert registry.get_family("kinemate-tiny").bundled.is_dir()
    assert registry.get_family("magicanimate").weight_sets[0].name == "magicanimate"


def test_components_belong_to_the_denoiser():
    import kinemate

    pipe = kinemate.load_pipeline(model="kinemate-tiny")
    assert pipe.unet is pipe.denoiser.unet and set(pipe.components) == {
        "unet", "appearance_encoder", "controlnet", "vae"}
    with pytest.raises(AttributeError, match="pipe.denoiser.unet"):
        pipe.unet = None
