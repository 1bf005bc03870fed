"""One set of sampling options: defaults < the model's kinemate.json < the call, checked in
one place, spelled per front end, and no global RNG touched."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from kinemate.errors import UsageError
from kinemate.pipeline.options import (OPTION_NAMES, SamplingOptions, add_cli_arguments,
                                       check_option, options_from_namespace, parse_size)


def test_precedence_defaults_model_call():
    model = SamplingOptions.from_model({"steps": 1, "guidance": 1.0, "context_frames": 8})
    assert (model.steps, model.guidance, model.context_frames) == (1, 1.0, 8)
    assert model.context_overlap == SamplingOptions().context_overlap  # not declared: default
    call = model.merged(steps=3, guidance=None)  # None = not set
    assert (call.steps, call.guidance, call.context_frames) == (3, 1.0, 8)


def test_model_files_with_earlier_names_still_load():
    old = {"num_inference_steps": 2, "guidance_scale": 1.5, "pad_to": None, "noise_tiling": None,
           "reference_bank_dtype": None, "not_an_option": 1}
    o = SamplingOptions.from_model(old)
    assert (o.steps, o.guidance, o.pad_to, o.noise_tiling, o.reference_bank_dtype) == \
        (2, 1.5, 0, 0, "none")


@pytest.mark.parametrize("name, value, words", [
    ("steps", 0, ">= 1"), ("guidance", float("nan"), "finite"), ("init_strength", 0.0, "> 0"),
    ("context_frames", "x", "whole number"), ("reference_bank_dtype", "int8", "one of"),
    ("closed_loop", 2, "true or false")])
def test_bad_values_name_the_option(name, value, words):
    with pytest.raises(UsageError) as err:
        check_option(name, value)
    assert name in str(err.value) and words in str(err.value)
    # each front end spells the option its own way
    from kinemate.cli import _flag

    assert f"--{name.replace('_', '-')}" in err.value.spelled(_flag)


def test_front_ends_spell_options_their_own_way():
    from kinemate.cli import _flag

    err = UsageError("use `control=densepose`, pass `retarget=false` or change `context_frames`")
    assert str(err) == "use control=densepose, pass retarget=false or change context_frames"
    assert err.spelled(_flag) == ("use --control densepose, pass --no-retarget or change "
                                  "--context-frames")


def test_unknown_option_is_refused():
    with pytest.raises(UsageError, match="num_inference_steps"):
        SamplingOptions().merged(num_inference_steps=3)


def test_cli_flags_are_derived_from_the_options():
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args([])
    assert options_from_namespace(args) == {}  # nothing set: the model decides
    flags = {a.dest for a in parser._actions}
    assert set(OPTION_NAMES) <= flags
    args = parser.parse_args(["--steps", "4", "--no-closed-loop", "--pad-to", "16"])
    assert options_from_namespace(args) == {"steps": 4, "closed_loop": False, "pad_to": 16}


def test_sizes_are_parsed_in_one_place():
    assert parse_size("512x768") == (512, 768)
    assert parse_size(" 64 × 32 ") == (64, 32)
    assert parse_size((64, 64)) == (64, 64)
    for empty in (None, "", "auto", "default"):
        assert parse_size(empty) is None
    for bad in ("512", "60x64", "0x0", "axb"):
        with pytest.raises(UsageError, match="size"):
            parse_size(bad)


def test_cli_error_shows_the_flag(capsys, tmp_path):
    from kinemate.cli import main

    rc = main(["animate", "--example", "-o", str(tmp_path / "o.mp4"), "--steps", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--steps must be >= 1" in err
    assert not list(tmp_path.iterdir())


def test_sampling_leaves_the_global_rng_alone():
    """No seed given: the model's seed is used with a generator of its own, so the caller's
    global torch RNG state is unchanged (it used to be re-seeded by torch.seed())."""
    import kinemate

    pipe = kinemate.load_pipeline(model="kinemate-tiny")
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    controls = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    unset = pipe(ref, controls, seed=None, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(unset, pipe(ref, controls, seed=pipe.options.seed, progress=False))
