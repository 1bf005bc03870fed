"""Golden tests: the official DreamPose numbers (johannakarras/DreamPose @ 5bf30b7 run on tiny
random weights), reproduced through the loader users use (``load_pipeline``).

Everything (weights folder, inputs, windows, scales, steps, seeds, shapes, tolerances) comes
from ``cases.json`` in ``$KINEMATE_DREAMPOSE_GOLDEN_DIR`` or
``../shared/reference/dreampose/golden``. The pipeline case runs the engine from the seed (the
official RNG contract reproduced by the family's own generator), not from injected draws.

``test_planted_mistake_*`` plant the mistakes a re-implementation could make (image and pose
scales swapped, the pose window reversed, the VAE embedding fed [0, 1] instead of raw 0-255,
the fixed noise drawn again per frame) and check each moves its output far beyond tolerance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(os.environ.get("KINEMATE_DREAMPOSE_GOLDEN_DIR",
                             REPO.parent / "shared" / "reference" / "dreampose" / "golden"))


def _index() -> dict:
    path = GOLDEN / "cases.json"
    return json.loads(path.read_text()) if path.is_file() else {"cases": []}


INDEX = _index()
CASES = {c["kind"]: c for c in INDEX.get("cases", [])}


def _need(kind: str) -> dict:
    if kind not in CASES:
        pytest.skip(f"no DreamPose {kind} case at {GOLDEN}")
    return CASES[kind]


def _excess(actual, expected, spec) -> float:
    """max |a - e| / (atol + rtol |e|): <= 1 passes (torch.testing.assert_close's rule)."""
    a, e = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    return float(((a - e).abs() / (spec["atol"] + spec["rtol"] * e.abs()).clamp_min(1e-30)).max())


def _close(name: str, actual, expected, spec: dict) -> None:
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert tuple(actual.shape) == tuple(spec["shape"]) == tuple(expected.shape), name
    torch.testing.assert_close(actual.to(expected.dtype) if spec["atol"] == 0 else actual.double(),
                               expected if spec["atol"] == 0 else expected.double(),
                               atol=spec["atol"], rtol=spec["rtol"], msg=lambda m: f"{name}: {m}")


@pytest.fixture(scope="module")
def dp():
    if not CASES:
        pytest.skip(f"no DreamPose golden cases at {GOLDEN}")
    torch.set_num_threads(1)
    from kinemate.pipeline import load_pipeline

    pipe = load_pipeline(GOLDEN / INDEX["weights_dir"], model="dreampose")
    inputs = load_file(str(GOLDEN / INDEX["inputs_file"]))
    return pipe, inputs


def _controls(inputs) -> list[np.ndarray]:
    """pose.full_res: each UV map bilinear to the image size, HWC (the normalisation is the
    denoiser's)."""
    pose = INDEX["pose"]
    uv = inputs[pose["tensor"]]
    assert uv.shape[0] == pose["n_pose_files"] and list(uv.shape[2:]) == pose["native_size_hw"]
    h, w = INDEX["reference_image"]["size_hw"]
    full = F.interpolate(uv.float(), (h, w), mode="bilinear", align_corners=False)
    return [full[i].permute(1, 2, 0).numpy() for i in range(full.shape[0])]


def _reference(inputs) -> np.ndarray:
    spec = INDEX["reference_image"]
    assert spec["layout"] == "HWC" and spec["color_order"] == "RGB"
    return inputs[spec["tensor"]].numpy()


def _scheduler(pipe):
    from kinemate.pipeline.animation import make_scheduler

    assert {k: pipe.scheduler.config[k] for k in INDEX["scheduler"] if k != "_class_name"} == \
        {k: v for k, v in INDEX["scheduler"].items() if k != "_class_name"}
    scheduler = make_scheduler({**dict(pipe.scheduler.config),
                                "_class_name": INDEX["scheduler"]["_class_name"]})
    scheduler.set_timesteps(INDEX["num_inference_steps"])
    return scheduler


def test_pose_windows_follow_the_official_rule():
    from kinemate.models.dreampose.denoiser import pose_window

    n = INDEX.get("pose", {}).get("n_pose_files")
    if not n:
        pytest.skip("no golden set")
    for frame, window in INDEX["pose_windows"].items():
        assert pose_window(int(frame), n) == window


def test_adapter_case(dp):
    from kinemate.models.dreampose import preprocess

    pipe, inputs = dp
    case = _need("adapter")
    out = case["outputs"]
    exp = load_file(str(GOLDEN / case["file"]))
    den, k = pipe.denoiser, case["frame"]
    ref = _reference(inputs)
    # preprocessing: CLIP pixels, CLIP tokens, the VAE samples with the stored draws
    pixels = preprocess.clip_pixels(ref)
    _close("clip_pixel_values_cond", pixels, exp["clip_pixel_values_cond"], out["clip_pixel_values_cond"])
    _close("clip_hidden_cond", den.clip_hidden(pixels), exp["clip_hidden_cond"], out["clip_hidden_cond"])
    _close("clip_hidden_uncond", den.clip_hidden(preprocess.clip_uncond_pixels()),
           exp["clip_hidden_uncond"], out["clip_hidden_uncond"])
    h, w = ref.shape[:2]
    for name, x in (("cond", preprocess.vae_embedding_input(ref)),
                    ("uncond", preprocess.vae_uncond_input(h, w))):
        dist = den.vae_posterior(x)
        eps = inputs[f"rng_vae_eps_{name}_f{k}"]
        _close(f"vae_latent_{name}", (dist.mean + dist.std * eps) * 0.18215,
               exp[f"vae_latent_{name}"], out[f"vae_latent_{name}"])
    # the adapter alone on the stored inputs
    for name in ("cond", "uncond"):
        _close(f"adapter_out_{name}", den.adapt(exp[f"clip_hidden_{name}"], exp[f"vae_latent_{name}"]),
               exp[f"adapter_out_{name}"], out[f"adapter_out_{name}"])


def _step(pipe, inputs, case, *, swap=False, reverse=False):
    """The step case through the denoiser's building blocks; returns the outputs by name."""
    adapter = load_file(str(GOLDEN / CASES["adapter"]["file"]))
    exp = load_file(str(GOLDEN / case["file"]))
    den = pipe.denoiser
    controls = _controls(inputs)
    if reverse:  # planted: the window n+2 .. n-2
        from kinemate.models.dreampose import denoiser as module

        original = module.pose_window
        module.pose_window = lambda n, count, poses=5: original(n, count, poses)[::-1]
    try:
        latents = exp["latents_in"]
        pose = den.pose_latent(controls, case["frame"], tuple(latents.shape[-2:]))
    finally:
        if reverse:
            module.pose_window = original
    scheduler = _scheduler(pipe)
    t = scheduler.timesteps[case["step_index"]]
    rows = den.unet_rows(scheduler.scale_model_input(latents, t), pose, t,
                         adapter["adapter_out_uncond"], adapter["adapter_out_cond"])
    from kinemate.models.dreampose.denoiser import combine

    s1, s2 = INDEX["cfg"]["s1"], INDEX["cfg"]["s2"]
    if swap:
        s1, s2 = s2, s1
    e_u, e_ip, e_i = rows.chunk(3)
    eps = combine(e_u, e_ip, e_i, image_guidance=s1, pose_guidance=s2)
    after = scheduler.step(eps, t, latents).prev_sample
    return exp, {"pose_latent": pose[:, :], "unet_out_3branch": rows, "noise_pred_combined": eps,
                 "latents_after_step": after, "timestep": t.reshape(1)}


def test_step_case(dp):
    pipe, inputs = dp
    case = _need("step")
    exp, got = _step(pipe, inputs, case)
    assert int(got["timestep"]) == case["timestep"]
    for name, spec in case["outputs"].items():
        _close(name, got[name], exp[name], spec)


def _run(pipe, inputs, case, **options):
    """The engine from the seed over every pose file; returns (latents, first-step eps)."""
    seen = {}

    def callback(i, t, info):
        seen.setdefault("timesteps", []).append(int(t))
        if i == 0:
            seen["eps0"] = info["noise_pred"].clone()

    calls = []
    unet = pipe.denoiser.unet
    hook = unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        latents = pipe.sample_latents(_reference(inputs), _controls(inputs), seed=case["seed"],
                                      steps=INDEX["num_inference_steps"],
                                      image_guidance=case["s1"], pose_guidance=case["s2"],
                                      sampler=case["sampler"].lower(), progress=False,
                                      callback=callback, **options)
    finally:
        hook.remove()
    seen["calls_per_frame"] = len(calls) / latents.shape[2]
    return latents, seen


def test_pipeline_case(dp):
    pipe, inputs = dp
    case = _need("pipeline")
    exp = load_file(str(GOLDEN / case["file"]))
    out = case["outputs"]
    frames = case["frames"]
    latents, seen = _run(pipe, inputs, case)
    assert seen["timesteps"] == INDEX["timesteps"] == exp["timesteps"].tolist()
    assert seen["calls_per_frame"] == case["unet_calls_per_frame"]
    _close("noise_pred_step0", seen["eps0"][0, :, frames].permute(1, 0, 2, 3).unsqueeze(1),
           exp["noise_pred_step0"], out["noise_pred_step0"])
    _close("final_latents", latents[0, :, frames].permute(1, 0, 2, 3).unsqueeze(1),
           exp["final_latents"], out["final_latents"])
    # the start: the hook alone, as the sampler made it
    video = pipe.start_video(_reference(inputs), _controls(inputs),
                             pipe.resolve(seed=case["seed"], image_guidance=case["s1"],
                                          pose_guidance=case["s2"]))
    scheduler = _scheduler(pipe)
    start, _ = pipe.denoiser.initial_latents(video, scheduler, scheduler.timesteps,
                                             steps=INDEX["num_inference_steps"],
                                             init_strength=INDEX["strength"])
    _close("init_latents", start[0, :, frames].permute(1, 0, 2, 3).unsqueeze(1),
           exp["init_latents"], out["init_latents"])
    k = frames.index(case["stored_frame"])
    one = latents[:, :, k:k + 1]
    decoded = pipe.decode_frame(one, 0)[0].permute(1, 2, 0)
    for name in (n for n in out if n.startswith("frame_float_rows_")):
        first, stop = (int(v) for v in name.rsplit("_", 2)[1:])
        _close(name, decoded[first:stop], exp[name], out[name])
    plain, = pipe.decode(one)
    stretched, = pipe.decode(one, stretch=True)
    _close("frame_uint8", torch.from_numpy(plain), exp["frame_uint8"], out["frame_uint8"])
    _close("frame_stretched_uint8", torch.from_numpy(stretched), exp["frame_stretched_uint8"],
           out["frame_stretched_uint8"])


# -- planted mistakes: each moves its output far beyond tolerance ----------------------------
FAR = 100.0  # times the tolerance


def test_planted_mistake_scales_swapped(dp):
    pipe, inputs = dp
    case = _need("step")
    exp, got = _step(pipe, inputs, case, swap=True)
    assert _excess(got["noise_pred_combined"], exp["noise_pred_combined"],
                   case["outputs"]["noise_pred_combined"]) > FAR


def test_planted_mistake_pose_order_reversed(dp):
    pipe, inputs = dp
    case = _need("step")
    exp, got = _step(pipe, inputs, case, reverse=True)
    for name in ("pose_latent", "noise_pred_combined"):
        assert _excess(got[name], exp[name], case["outputs"][name]) > FAR, name


def test_planted_mistake_vae_input_range(dp):
    from kinemate.models.dreampose import preprocess

    pipe, inputs = dp
    case = _need("adapter")
    exp = load_file(str(GOLDEN / case["file"]))
    den = pipe.denoiser
    dist = den.vae_posterior(preprocess.vae_embedding_input(_reference(inputs), official_range=False))
    latent = (dist.mean + dist.std * inputs[f"rng_vae_eps_cond_f{case['frame']}"]) * 0.18215
    got = den.adapt(exp["clip_hidden_cond"], latent)
    assert _excess(got, exp["adapter_out_cond"], case["outputs"]["adapter_out_cond"]) > FAR


def test_planted_mistake_noise_per_frame(dp):
    pipe, inputs = dp
    case = _need("pipeline")
    exp = load_file(str(GOLDEN / case["file"]))
    frames = case["frames"]
    video = pipe.start_video(_reference(inputs), _controls(inputs),
                             pipe.resolve(seed=case["seed"], noise_tiling=0))
    scheduler = _scheduler(pipe)
    start, _ = pipe.denoiser.initial_latents(video, scheduler, scheduler.timesteps,
                                             steps=INDEX["num_inference_steps"],
                                             init_strength=INDEX["strength"])
    got = start[0, :, frames].permute(1, 0, 2, 3).unsqueeze(1)
    assert _excess(got[1:], exp["init_latents"][1:], case["outputs"]["init_latents"]) > FAR
