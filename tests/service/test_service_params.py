"""The job fields (derived from SamplingOptions) and how the runner hands them to the
pipeline: a field the client leaves out takes the model's default, as in the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import HTTPException

from kinemate.pipeline.options import OPTION_FIELDS, SamplingOptions
from kinemate.service import runner as runner_module
from kinemate.service.config import Limits, ServiceConfig
from kinemate.service.params import (SAMPLING_FIELDS, JobParams, form_properties, parse_params,
                                     sampling_bounds, sampling_options)
from kinemate.service.store import Job


def test_sampling_fields_are_the_service_options_with_their_bounds():
    assert set(SAMPLING_FIELDS) == {n for n, f in OPTION_FIELDS.items() if f.metadata["service"]}
    assert {"steps", "guidance", "seed", "init_strength"} <= set(SAMPLING_FIELDS)
    props = form_properties()
    for name in SAMPLING_FIELDS:
        assert JobParams.model_fields[name].default is None, name  # None: the model's default
        meta = OPTION_FIELDS[name].metadata
        for bound, key in (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum")):
            assert props[name].get(key) == meta[bound], (name, bound)


def test_only_what_the_client_set_is_stored():
    config = ServiceConfig()
    params = parse_params({"size": "64 x 64"}, config)
    assert params == {"control": "auto", "size": "64x64", "fit": "crop", "watermark": True,
                      "retarget": True}
    params = parse_params({"steps": "3", "closed_loop": "false", "seed": "0"}, config)
    assert sampling_options(params) == {"steps": 3, "closed_loop": False, "seed": 0}
    assert parse_params({"size": "auto"}, config)["size"] is None


@pytest.mark.parametrize("fields,words", [
    ({"steps": "101"}, "steps: at most 100"),  # the operator's cap below the option's bound
    ({"guidance": "31"}, "guidance: at most 30"),
    ({"steps": "0"}, "steps"),
    ({"init_strength": "0"}, "init_strength"),
    ({"context_overlap": "64"}, "context_overlap"),
    ({"guidance": "nan"}, "guidance"),
    ({"size": "100x100"}, "multiples of 8"),
    ({"size": "2048x2048"}, "outside 32..1024"),
    ({"num_inference_steps": "2"}, "unknown field"),
])
def test_bad_values_are_refused_naming_the_field(fields, words):
    with pytest.raises(HTTPException) as info:
        parse_params(fields, ServiceConfig())
    assert info.value.status_code == 422 and words in info.value.detail


def test_limits_show_the_capped_bounds_and_the_models_defaults():
    limits = dataclasses.replace(Limits(), max_steps=50, max_guidance=12.0)
    bounds = sampling_bounds(limits, {"steps": 1, "guidance": 1.0})
    assert bounds["steps"] | {"help": None} == {"type": "integer", "ge": 1, "le": 50, "gt": None,
                                                 "default": 1, "help": None}
    assert bounds["guidance"]["le"] == 12.0 and bounds["guidance"]["default"] == 1.0
    assert bounds["init_strength"]["gt"] == 0.0 and bounds["seed"]["default"] is None


class _FakePipe:
    name = "fake"
    options = SamplingOptions.from_model({"steps": 3, "guidance": 1.0, "context_frames": 8})


def _run(monkeypatch, tmp_path: Path, params: dict) -> tuple[dict, dict, list[dict]]:
    """Run one job through PipelineRunner with animate_file replaced by a recorder."""
    calls = {}

    def animate_file(reference, driving, output, **kwargs):
        calls.update(kwargs)
        kwargs["callback"](0, None, {})
        return SimpleNamespace(num_frames=4, fps=25.0, size=(64, 64), control="densepose")

    import kinemate.pipeline

    monkeypatch.setattr(kinemate.pipeline, "animate_file", animate_file)
    monkeypatch.setattr(runner_module, "_provenance_marker", lambda *a: None)
    runner = runner_module.PipelineRunner(ServiceConfig(data_dir=tmp_path))
    runner.pipe = _FakePipe()
    job = Job(id="0" * 32, owner="k", state="running",
              params=parse_params(params, ServiceConfig()),
              inputs={"reference": {"file": "reference.png"},
                      "driving": {"file": "driving.mp4", "frames": 4}},
              created_at=0.0, updated_at=0.0)
    reports: list[dict] = []
    result = runner(job, tmp_path, reports.append)
    return calls, result, reports


def test_runner_leaves_unset_options_to_the_model(monkeypatch, tmp_path):
    calls, result, reports = _run(monkeypatch, tmp_path, {"size": "64x64"})
    assert not set(calls) & set(OPTION_FIELDS)  # nothing set: the pipeline's model defaults
    assert calls["size"] == (64, 64)
    assert result["options"] == _FakePipe.options.to_dict()
    assert result["options"]["steps"] == 3 and result["options"]["seed"] == 1
    assert {r["total_steps"] for r in reports} == {3}


def test_runner_passes_the_set_options_and_records_the_effective_ones(monkeypatch, tmp_path):
    calls, result, reports = _run(monkeypatch, tmp_path, {"steps": "5", "seed": "9",
                                                          "closed_loop": "false"})
    assert {k: calls[k] for k in set(calls) & set(OPTION_FIELDS)} == {
        "steps": 5, "seed": 9, "closed_loop": False}
    assert calls["size"] is None
    assert result["options"] == _FakePipe.options.merged(steps=5, seed=9,
                                                         closed_loop=False).to_dict()
    assert result["options"]["context_frames"] == 8  # the model's, not the official 16
    assert {r["total_steps"] for r in reports} == {5}
