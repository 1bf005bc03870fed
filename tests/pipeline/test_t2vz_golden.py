"""Golden tests: Text2Video-Zero as diffusers 0.42.1's own implementation computes it.

Everything (weights, inputs, parameters, shapes, tolerances) comes from ``cases.json`` in
``$KINEMATE_T2VZ_GOLDEN_DIR`` or ``../shared/reference/text2video-zero/golden``. The pipeline
cases run through ``load_pipeline`` (the loader users use) and the engine's sampling loop. When
the oracle (diffusers' deprecated ``pipeline_text_to_video_zero`` module) is importable, the
processor, the warp and the jump are also compared with it live; the stored files are the
oracle that stays when a future diffusers drops that module.

One thread (the README: 1 vs 2 threads moves the chunked case by half its tolerance).
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(os.environ.get("KINEMATE_T2VZ_GOLDEN_DIR",
                             REPO.parent / "shared" / "reference" / "text2video-zero" / "golden"))
ORACLE = "diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero"


def _index() -> dict:
    path = GOLDEN / "cases.json"
    return json.loads(path.read_text()) if path.is_file() else {"cases": []}


INDEX = _index()
CASES = {c["name"]: c for c in INDEX["cases"]}


def _cases(kind: str) -> list[dict]:
    return [c for c in INDEX["cases"] if c["kind"] == kind]


def _oracle():
    try:
        return importlib.import_module(ORACLE)
    except ImportError:
        return None


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(INDEX.get("threads", 1))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def inputs() -> dict:
    if not INDEX["cases"]:
        pytest.skip(f"no Text2Video-Zero golden cases at {GOLDEN}")
    return load_file(str(GOLDEN / INDEX["inputs_file"]))


def _pipe(preset: str = "official"):
    from kinemate.pipeline import load_pipeline

    return load_pipeline(GOLDEN / INDEX.get("weights_dir", "."), model="text2video-zero",
                         preset=preset)


def _scheduler(name: str):
    from kinemate.pipeline.animation import make_scheduler

    return make_scheduler(INDEX["schedulers"][name])


def _check(actual: torch.Tensor, expected: torch.Tensor, spec: dict, what: str) -> None:
    assert tuple(expected.shape) == tuple(spec["shape"]), what
    torch.testing.assert_close(actual.to(expected.dtype).cpu(), expected, atol=spec["atol"],
                               rtol=spec["rtol"], msg=lambda m: f"{what}: {m}")


def _embeds(inputs: dict) -> dict:
    return {"text_embeds_cond": inputs["prompt_embeds"],
            "text_embeds_uncond": inputs["negative_prompt_embeds"]}


def _far_apart(ours: torch.Tensor, plain: torch.Tensor, atol: float) -> None:
    """The negative control: frames >= 1 differ by far more than the tolerance."""
    assert float((ours[1:] - plain[1:]).abs().max()) > 100 * atol


# -- processor --------------------------------------------------------------------------------
@pytest.mark.parametrize("case", _cases("processor"), ids=lambda c: c["name"])
def test_processor_golden(case, inputs):
    from diffusers.models.attention_processor import Attention

    from kinemate.models.text2video_zero.attention import CrossFrameAttention

    data = load_file(str(GOLDEN / case["file"]))
    args = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", case["parameters"]["module"])}
    attn = Attention(**args).eval()
    attn.load_state_dict({k[len("attn."):]: v for k, v in data.items() if k.startswith("attn.")},
                         strict=True)
    x, ctx = data["hidden_states"], data["encoder_hidden_states"]
    frames = case["parameters"]["frames"]
    rows = case["parameters"]["batch"]
    ours = {}
    with torch.no_grad():
        for name, text in case["parameters"]["processors"].items():
            blocks = int(m.group(1)) if (m := re.search(r"batch_size=(\d+)", text)) else None
            # plain attention = cross-frame attention where every frame is its own block
            attn.set_processor(CrossFrameAttention(blocks or rows))
            ours[name] = attn(x, ctx) if "encoder_hidden_states" in text else attn(x)
            _check(ours[name], data[name], case["outputs"][name], name)
    # the call can also say the frames per block instead of the processor
    attn.set_processor(CrossFrameAttention())
    with torch.no_grad():
        said = attn(x, video_length=frames)
    torch.testing.assert_close(said, ours["out_cf_b2"], atol=0, rtol=0)
    a, b = case["negative_control"]["pair"]
    assert float((ours[a] - ours[b]).abs().max()) > 1000 * case["outputs"][a]["atol"]
    oracle = _oracle()
    if oracle is not None:  # the installed oracle, live, on the same module and batch
        attn.set_processor(oracle.CrossFrameAttnProcessor2_0(batch_size=2))
        with torch.no_grad():
            live = attn(x)
        torch.testing.assert_close(ours["out_cf_b2"], live, atol=case["outputs"]["out_cf_b2"]["atol"],
                                   rtol=0)


# -- pose mode ---------------------------------------------------------------------------------
def _controls(inputs: dict, frames: int) -> np.ndarray:
    """The case's control images (float [0, 1], NCHW) as the engine's (H, W, 3) frames."""
    return inputs["pose_maps"][:frames].permute(0, 2, 3, 1).numpy()


def _run_pose(pipe, case, inputs, **extra):
    p = case["parameters"]
    captured = {}
    out = pipe.sample_latents(
        None, _controls(inputs, p["video_length"]), **_embeds(inputs), steps=p["num_inference_steps"],
        guidance=p["guidance_scale"], eta=p["eta"], seed=p["generator_seed"], progress=False,
        callback=lambda i, t, info: captured.update({i: (t, info["latents"][0].transpose(0, 1))}),
        **extra)
    return out[0].transpose(0, 1), captured


@pytest.mark.parametrize("case", _cases("pose_pipeline") + _cases("pose_chunked"),
                         ids=lambda c: c["name"])
def test_pose_golden(case, inputs):
    p = case["parameters"]
    assert p["scheduler"] == "DDIM" and p["controlnet_conditioning_scale"] == 1.0
    data = load_file(str(GOLDEN / case["file"]))
    pipe = _pipe()
    pipe.scheduler = _scheduler(p["scheduler"])
    f = p["video_length"]
    chunk = p.get("chunk_size", f)
    # the engine's initial noise: one seeded draw, the same for every frame
    noise = pipe.initial_noise(f, p["height"], p["width"], p["generator_seed"], tiling=1)
    torch.testing.assert_close(noise[0].transpose(0, 1), data["init_latents"], atol=0, rtol=0)
    if case["kind"] == "pose_chunked":  # the windows are the reference's chunks
        from kinemate.pipeline.options import SamplingOptions

        windows = pipe.denoiser.window_schedule(f, SamplingOptions(context_frames=chunk))
        assert [[0] + w for w in windows] == p["chunk_frame_ids"]
    final, steps = _run_pose(pipe, case, inputs, context_frames=chunk)
    timesteps = torch.stack([steps[i][0] for i in sorted(steps)]).cpu().long()
    torch.testing.assert_close(timesteps, data["timesteps"], atol=0, rtol=0)
    for name, spec in case["outputs"].items():
        if name.startswith("latents_after_step"):
            _check(steps[int(name[-2:])][1], data[name], spec, name)
    _check(final, data["final_latents"], case["outputs"]["final_latents"], "final_latents")
    frames = torch.cat([pipe.decode_frame(final.transpose(0, 1)[None], i) for i in range(f)])
    _check(frames, data["video_frames"], case["outputs"]["video_frames"], "video_frames")
    if "negative_control" in case and "tensors" in case["negative_control"]:
        _far_apart(final, data["final_latents_plain_attention"],
                   case["outputs"]["final_latents"]["atol"])


def test_pose_plain_attention_matches_negative_control(inputs):
    """The ablation (``cross_frame=False``) reproduces the reference's plain-attention run, so
    the cross-frame result differing from it is the processor's doing."""
    case = next(iter(_cases("pose_pipeline")), None)
    if case is None or "tensors" not in case.get("negative_control", {}):
        pytest.skip("no pose negative control in this golden set")
    from kinemate.models.text2video_zero.attention import install

    data = load_file(str(GOLDEN / case["file"]))
    pipe = _pipe()
    pipe.scheduler = _scheduler(case["parameters"]["scheduler"])
    pipe.denoiser.cross_frame = False
    for model in (pipe.unet, pipe.controlnet):
        install(model, cross_frame=False)
    final, _ = _run_pose(pipe, case, inputs, context_frames=case["parameters"]["video_length"])
    name = "final_latents_plain_attention"
    _check(final, data[name], case["negative_control"]["tensors"][name], name)


# -- text mode ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", _cases("text_pipeline"), ids=lambda c: c["name"])
def test_text_golden(case, inputs, monkeypatch):
    from kinemate.models.text2video_zero import denoiser as module
    from kinemate.models.text2video_zero.motion import jump_alpha, jump_schedule, warp_latents

    p, out = case["parameters"], case["outputs"]
    data = load_file(str(GOLDEN / case["file"]))
    pipe = _pipe()
    pipe.scheduler = _scheduler(p["scheduler"])
    # the RNG contract: one generator, the initial latent first, then the jump noise
    g = torch.Generator("cpu").manual_seed(p["generator_seed"])
    torch.testing.assert_close(torch.randn(data["x_T"].shape, generator=g), data["x_T"],
                               atol=0, rtol=0)
    torch.testing.assert_close(torch.randn(data["jump_noise"].shape, generator=g),
                               data["jump_noise"], atol=0, rtol=0)
    seen = {}

    def recording_warp(latents, frame_ids, dx, dy):
        seen["x1_T0"], seen["ids"] = latents[:1].clone(), list(frame_ids)
        seen["warped_T0"] = warp_latents(latents, frame_ids, dx, dy)
        return seen["warped_T0"]

    monkeypatch.setattr(module, "warp_latents", recording_warp)
    start = pipe.denoiser.initial_latents

    def recording_start(*args, **kwargs):
        latents, rest = start(*args, **kwargs)
        seen["x_T1_all"], seen["rest"] = latents[0].transpose(0, 1).clone(), rest
        return latents, rest

    pipe.denoiser.initial_latents = recording_start
    final = pipe.sample_latents(
        None, None, num_frames=p["video_length"], size=(p["width"], p["height"]),
        **_embeds(inputs), steps=p["num_inference_steps"], guidance=p["guidance_scale"],
        eta=p["eta"], seed=p["generator_seed"], progress=False,
        inputs={"t0": p["t0"], "t1": p["t1"],
                "motion_field": (p["motion_field_strength_x"], p["motion_field_strength_y"])})
    # timestep bookkeeping: exact
    sched = _scheduler(p["scheduler"])
    sched.set_timesteps(p["num_inference_steps"])
    torch.testing.assert_close(sched.timesteps.long(), data["timesteps"], atol=0, rtol=0)
    cut = jump_schedule(sched.timesteps, p["t0"], p["t1"])
    assert (cut.T1, cut.T0) == (p["T1"], p["T0"])
    assert torch.equal(seen["rest"].cpu(), sched.timesteps[-p["t1"] - 1:])
    torch.testing.assert_close(jump_alpha(sched.alphas, cut.T0, cut.T1).reshape(1),
                               data["alpha_prod_T0_T1"], atol=0, rtol=0)
    assert seen["ids"] == p["frame_ids"][1:]
    _check(seen["x_T1_all"][:1], data["x1_T1"], out["x1_T1"], "x1_T1")
    _check(seen["x1_T0"], data["x1_T0"], out["x1_T0"], "x1_T0")
    _check(seen["warped_T0"], data["warped_T0"], out["warped_T0"], "warped_T0")
    _check(seen["x_T1_all"], data["x_T1_all"], out["x_T1_all"], "x_T1_all")
    final = final[0].transpose(0, 1)
    _check(final, data["final_latents"], out["final_latents"], "final_latents")
    frames = torch.cat([pipe.decode_frame(final.transpose(0, 1)[None], i)
                        for i in range(p["video_length"])]).permute(0, 2, 3, 1)
    _check(frames, data["video_frames"], out["video_frames"], "video_frames")
    _far_apart(final, data["final_latents_plain_attention"], out["final_latents"]["atol"])
    # the warp alone is bitwise: on the stored latent at T0, as the oracle computes it
    stored = warp_latents(data["x1_T0"].repeat(len(p["frame_ids"]) - 1, 1, 1, 1),
                          p["frame_ids"][1:], p["motion_field_strength_x"],
                          p["motion_field_strength_y"])
    assert torch.equal(stored, data["warped_T0"])


def test_warp_matches_oracle_bitwise():
    """Non-square latents, frame ids beyond 0, default and large motion fields."""
    oracle = _oracle()
    if oracle is None:
        pytest.skip(f"{ORACLE} is not importable in this diffusers")
    from kinemate.models.text2video_zero.motion import warp_latents

    g = torch.Generator().manual_seed(3)
    for shape, ids, (dx, dy) in [((3, 4, 8, 12), [1, 2, 3], (12, 12)),
                                 ((2, 4, 16, 10), [5, 9], (48, -32)),
                                 ((4, 4, 64, 64), [0, 7, 20, 40], (12, 12))]:
        latents = torch.randn(shape, generator=g)
        expected = oracle.create_motion_field_and_warp_latents(dx, dy, ids, latents)
        assert torch.equal(warp_latents(latents, ids, dx, dy), expected)


def test_jump_bookkeeping_exact():
    """T1/T0, the three slices and the jump's alpha product for 10, 20 and 50 DDIM steps on
    SD1.5's schedule (the paper's 881/941 at 50 steps with t0=44, t1=47)."""
    from kinemate.errors import UsageError
    from kinemate.models.text2video_zero.motion import jump_alpha, jump_schedule

    sched = _scheduler("DDIM") if INDEX.get("schedulers") else None
    if sched is None:
        pytest.skip("no scheduler configs in this golden set")
    for steps, t0, t1 in [(10, 6, 8), (20, 14, 17), (50, 44, 47)]:
        sched.set_timesteps(steps)
        ts = sched.timesteps
        cut = jump_schedule(ts, t0, t1)
        assert (cut.T1, cut.T0) == (int(ts[-t1 - 1]), int(ts[-t0 - 1]))
        assert torch.equal(torch.cat([cut.first, cut.second]), ts[:-t0 - 1])
        assert torch.equal(cut.rest, ts[-t1 - 1:])
        assert torch.equal(jump_alpha(sched.alphas, cut.T0, cut.T1),
                           torch.prod(sched.alphas[cut.T0:cut.T1]))
    assert (cut.T1, cut.T0) == (941, 881)
    for bad in [(47, 44), (5, 5), (-1, 3), (3, 50)]:
        with pytest.raises(UsageError, match="t0"):
            jump_schedule(ts, *bad)
