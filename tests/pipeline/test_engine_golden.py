"""Golden tests: the official MagicAnimate numbers, reproduced from the tiny release-layout
weights loaded through the same loader users use.

Everything (shapes, cases, frame counts, sizes, tolerances) comes from ``cases.json`` in
``$KINEMATE_GOLDEN_DIR`` or ``../shared/reference/magicanimate/golden``.

``KINEMATE_TEST_DEVICE=cuda`` runs the same cases on a GPU (TF32 off, so that float32 means
float32 there too; see docs/engine.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(os.environ.get("KINEMATE_GOLDEN_DIR",
                             REPO.parent / "shared" / "reference" / "magicanimate" / "golden"))
DEVICE = os.environ.get("KINEMATE_TEST_DEVICE", "cpu")


def _index() -> dict:
    path = GOLDEN / "cases.json"
    return json.loads(path.read_text()) if path.is_file() else {"cases": [], "variant_cases": []}


INDEX = _index()
CASES = INDEX.get("cases", []) + INDEX.get("variant_cases", [])
STEP = [c for c in CASES if c["kind"] == "step"]
PIPE = [c for c in CASES if c["kind"] == "pipeline"]


@pytest.fixture(scope="module")
def golden_pipe():
    if not CASES:
        pytest.skip(f"no golden cases at {GOLDEN}")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if DEVICE.startswith("cuda"):
        if not torch.cuda.is_available():
            pytest.skip(f"KINEMATE_TEST_DEVICE={DEVICE} but torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    from kinemate.pipeline import load_pipeline, make_scheduler

    # one intra-op thread: on a shared 2-core machine this is several times faster for these
    # tiny tensors (1 vs 2 threads differ by < 3e-5, far inside the tolerances)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    torch.manual_seed(0)
    weights = GOLDEN / INDEX["weights_dir"]
    pipe = load_pipeline(weights, device=DEVICE,
                         dtype=getattr(torch, INDEX.get("compute_dtype", "float32")))
    if INDEX["weights"].get("inference_config"):  # found in the folder by the loader itself
        motion = json.loads((weights / INDEX["weights"]["inference_config"]).read_text())
        mm = motion["unet_additional_kwargs"]["motion_module_kwargs"]
        assert pipe.unet.config.motion_module_kwargs == mm
    pipe.scheduler = make_scheduler(INDEX["scheduler"])
    pipe.vae_scaling_factor = float(INDEX["vae_scaling_factor"])
    pipe.controlnet_conditioning_scale = float(INDEX["controlnet_conditioning_scale"])
    assert INDEX.get("fusion_blocks", "midup") == "midup"
    yield pipe
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


_files: dict[str, dict] = {}


def tensors(name: str) -> dict[str, torch.Tensor]:
    if name not in _files:
        _files[name] = load_file(str(GOLDEN / name))
    return _files[name]


def control_frames(case: dict) -> np.ndarray:
    spec = INDEX["control"]
    low = tensors(INDEX["inputs_file"])[spec["tensor"]].numpy()
    up = spec["upsample"]
    assert up["method"] == "nearest_repeat"
    full = np.repeat(np.repeat(low, up["factor_h"], axis=1), up["factor_w"], axis=2)
    frames = [full[i][:, ::-1] if flip else full[i] for i, flip in case["control_frame_map"]]
    return np.ascontiguousarray(np.stack(frames))


def case_latents(case: dict) -> torch.Tensor:
    spec = case["latents"]
    x = tensors(spec["file"])[spec["tensor"]]
    if spec.get("frames"):
        x = x[:, :, spec["frames"][0]:spec["frames"][1]]
    assert list(x.shape) == spec["shape"]
    return x


def text(case: dict) -> tuple[torch.Tensor | None, torch.Tensor]:
    spec = case["text_embeddings"]
    t = tensors(spec["file"])
    return (t[spec["uncond"]] if spec.get("uncond") else None), t[spec["cond"]]


def bank_dtype_name(case: dict) -> str:
    """The sampling option ``reference_bank_dtype`` of a case ("none": features kept as
    computed, which the goldens write as float32)."""
    name = case.get("reference_bank_dtype", INDEX.get("reference_bank_dtype", "float16"))
    return "none" if name == "float32" else name


def check(case: dict, name: str, actual: torch.Tensor, expected: dict[str, torch.Tensor]) -> None:
    spec = case["outputs"][name]
    want = expected[name]
    assert list(want.shape) == spec["shape"], name
    torch.testing.assert_close(actual.detach().cpu().to(want.dtype).reshape(want.shape), want,
                               atol=spec["atol"], rtol=spec["rtol"],
                               msg=lambda m: f"{case['name']}:{name}: {m}")


def check_common(case):
    from kinemate.pipeline.context import context_windows

    controls = control_frames(case)
    assert controls.shape[1:3] == (case["height"], case["width"])
    assert len(controls) == case["video_length"]

    assert case.get("context_batch_size", 1) == 1
    assert case.get("context_schedule", "uniform") == "uniform"
    windows = context_windows(case["video_length"], case["context_frames"], case["context_overlap"],
                              closed_loop=case["context_closed_loop"],
                              context_stride=case["context_stride"])
    assert windows == case["windows"]
    return windows


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "official"])
@pytest.mark.parametrize("case", STEP, ids=[c["name"] for c in STEP])
def test_golden_step(golden_pipe, case, lean):
    from kinemate.pipeline import make_scheduler

    pipe = golden_pipe
    expected = tensors(case["file"])
    windows = check_common(case)
    controls = control_frames(case)
    latents = case_latents(case).to(pipe.device)
    uncond, cond = text(case)
    t = torch.tensor(case["timestep"])
    scale = case["guidance_scale"] if case["cfg"] else 1.0
    source = tensors(INDEX["inputs_file"])[INDEX["source_image"]["tensor"]].numpy()
    options = pipe.resolve(lean=lean, reference_bank_dtype=bank_dtype_name(case))
    ref_latents = pipe.encode_reference(source)
    video = pipe.start_video(source, controls, options, ref_latents, text_embeds_uncond=uncond,
                             text_embeds_cond=cond)
    calls = []
    guided, raw = pipe.predict_noise(latents, t, video, windows, guidance=scale,
                                     on_window=lambda i, w: calls.append(w))
    assert len(calls) == case["expected_unet_calls"]
    bank, denoiser = video.bank, pipe.denoiser
    down, mid = denoiser.controlnet_residuals(latents[:, :, :1], t,
                                              denoiser.control_tensor(controls, [0]), video.cond)
    for name in case["outputs"]:
        if name == "timestep":
            assert int(expected[name].reshape(-1)[0]) == case["timestep"]
        elif name == "ref_latents":
            check(case, name, ref_latents, expected)
        elif name.startswith("appearance_bank_"):
            check(case, name, bank.features[int(name.rsplit("_", 1)[1])][-1:], expected)
        elif name.startswith("controlnet_"):
            res = mid if name == "controlnet_mid_res" else down[int(name.rsplit("_", 1)[1])]
            check(case, name, res[:, :, None], expected)
        elif name in ("unet_out_uncond_cond", "unet_out_cond_only"):
            check(case, name, raw, expected)
        elif name == "noise_pred_guided":
            check(case, name, guided, expected)
        elif name == "latents_after_step":
            scheduler = make_scheduler(INDEX["scheduler"])
            scheduler.set_timesteps(case["num_inference_steps"])
            assert int(scheduler.timesteps[scheduler.timesteps.tolist().index(case["timestep"]) + 1]) \
                == case["prev_timestep"]
            out = scheduler.step(guided, t.to(latents.device), latents, eta=INDEX["eta"]).prev_sample
            check(case, name, out, expected)
        else:
            pytest.fail(f"unknown golden output {name!r} in {case['name']}")


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "official"])
@pytest.mark.parametrize("case", PIPE, ids=[c["name"] for c in PIPE])
def test_golden_pipeline(golden_pipe, case, lean):
    pipe = golden_pipe
    expected = tensors(case["file"])
    check_common(case)
    controls = control_frames(case)
    init = case_latents(case)
    noise = case.get("init_noise")
    if noise and "Generator(\"cpu\")" in noise.get("generator", ""):
        # our default CPU noise reproduces the official draw (with the official tiling)
        drawn = pipe.initial_noise(case["video_length"], case["height"], case["width"],
                                   case["seed"], tiling=noise["draw_shape"][2])
        torch.testing.assert_close(drawn, init, atol=0, rtol=0)  # drawn on the CPU everywhere
    uncond, cond = text(case)
    source = tensors(INDEX["inputs_file"])[INDEX["source_image"]["tensor"]].numpy()
    steps: dict[int, dict] = {}
    timesteps = []
    calls = []
    hook = pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        final = pipe.sample_latents(
            source, controls, steps=case["num_inference_steps"],
            guidance=case["guidance_scale"] if case["cfg"] else 1.0,
            context_frames=case["context_frames"], context_overlap=case["context_overlap"],
            closed_loop=case["context_closed_loop"], latents=init, eta=INDEX["eta"], lean=lean,
            reference_bank_dtype=bank_dtype_name(case),
            text_embeds_uncond=uncond, text_embeds_cond=cond, progress=False,
            callback=lambda i, t, info: (timesteps.append(int(t)), steps.__setitem__(i, info)))
    finally:
        hook.remove()
    assert len(calls) == case["expected_unet_calls"]
    for name, spec in case["outputs"].items():
        if name == "timesteps":
            assert timesteps == expected[name].tolist() == case["timesteps"]
        elif name == "ref_latents":
            check(case, name, steps[0]["ref_latents"], expected)
        elif name.startswith("noise_pred_step"):
            check(case, name, steps[int(name[len("noise_pred_step"):])]["noise_pred"], expected)
        elif name == "final_latents":
            check(case, name, final, expected)
        elif name.startswith("video_frame"):
            frames = spec["video_frames"]
            decoded = torch.stack([pipe.decode_frame(final, i) for i in frames], dim=2)
            check(case, name, decoded, expected)
        else:
            pytest.fail(f"unknown golden output {name!r} in {case['name']}")
