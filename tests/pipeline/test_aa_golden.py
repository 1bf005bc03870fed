"""Golden tests: the official Moore-AnimateAnyone numbers, reproduced from tiny weights in the
release layout loaded through the loader users use (``load_pipeline``).

Everything (cases, shapes, frame maps, sizes, windows, tolerances) comes from ``cases.json``
in ``$KINEMATE_AA_GOLDEN_DIR`` or ``../shared/reference/animate-anyone/golden``. Every case
runs on the lean and on the official-equivalent path (``lean=False``).

One deliberate difference: without guidance, the official pipeline *sums* the predictions of
overlapping windows (SPEC §8.5); kinemate averages. In the case that pins the sum
(``quirk``), ``noise_pred_step0`` is compared as kinemate's average times each frame's window
count, and the later outputs, which follow from the sum, are not compared.

``test_planted_mistake_fails_golden`` plants the mistakes the issue names into the real code
(reference read by the unconditional half, CLIP of a black image as uncond, epsilon instead of
v, betas without the zero-SNR rescale or scaled-linear, motion modules off, pose features added
after the first resnet instead of after ``conv_in``) and checks each makes the golden
comparison fail.

``KINEMATE_TEST_DEVICE=cuda`` runs the cases on a GPU (TF32 off).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(os.environ.get("KINEMATE_AA_GOLDEN_DIR",
                             REPO.parent / "shared" / "reference" / "animate-anyone" / "golden"))
DEVICE = os.environ.get("KINEMATE_TEST_DEVICE", "cpu")


def _index() -> dict:
    path = GOLDEN / "cases.json"
    return json.loads(path.read_text()) if path.is_file() else {"cases": [], "variant_cases": []}


INDEX = _index()
CASES = INDEX.get("cases", []) + INDEX.get("variant_cases", [])
STEP = [c for c in CASES if c["kind"] == "step"]
PIPE = [c for c in CASES if c["kind"] == "pipeline"]
PATHS = {"lean": True, "official": False}


@pytest.fixture(scope="module")
def aa_pipe():
    if not CASES:
        pytest.skip(f"no Animate Anyone golden cases at {GOLDEN}")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if DEVICE.startswith("cuda"):
        if not torch.cuda.is_available():
            pytest.skip(f"KINEMATE_TEST_DEVICE={DEVICE} but torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    from kinemate.pipeline import load_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster on a shared machine
    pipe = load_pipeline(GOLDEN / INDEX["weights_dir"], device=DEVICE,
                         dtype=getattr(torch, INDEX.get("compute_dtype", "float32")))
    pipe.vae_scaling_factor = float(INDEX["vae_scaling_factor"])
    yield pipe
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


_files: dict[str, dict] = {}


def tensors(name: str) -> dict[str, torch.Tensor]:
    if name not in _files:
        _files[name] = load_file(str(GOLDEN / name))
    return _files[name]


def native_reference() -> np.ndarray:
    return tensors(INDEX["inputs_file"])[INDEX["reference_image"]["tensor"]].numpy()


def pose_frames(case: dict) -> np.ndarray:
    """The pose frames the official pipeline was given, at the case's size (resized the
    official way when the native size differs)."""
    from kinemate.models.animate_anyone.preprocess import official_resize

    spec = INDEX["pose"]
    low = tensors(INDEX["inputs_file"])[spec["tensor"]].numpy()
    up = spec["upsample"]
    assert up["method"] == "nearest_repeat"
    full = np.repeat(np.repeat(low, up["factor_h"], axis=1), up["factor_w"], axis=2)
    frames = [full[i][:, ::-1] if flip else full[i] for i, flip in case["pose_frame_map"]]
    return np.stack([official_resize(np.ascontiguousarray(f), case["width"], case["height"])
                     for f in frames])


def case_latents(case: dict) -> torch.Tensor:
    spec = case["latents"]
    x = tensors(spec["file"])[spec["tensor"]]
    if spec.get("frames"):
        x = x[:, :, spec["frames"][0]:spec["frames"][1]]
    assert list(x.shape) == spec["shape"]
    return x


def bank_dtype_name(case: dict) -> str:
    """The ``reference_bank_dtype`` option of a case ("none" keeps the features as computed,
    which the goldens call float32)."""
    name = case.get("reference_bank_dtype", INDEX.get("reference_bank_dtype", "float16"))
    return "none" if name == "float32" else name


def guidance(case: dict) -> float:
    return case["guidance_scale"] if case["cfg"] else 1.0


class Comparison:
    """Collects the outputs of one case that differ from the official ones."""

    def __init__(self, case: dict):
        self.case, self.expected = case, tensors(case["file"])
        self.failures: list[str] = []
        self.compared: list[str] = []

    def check(self, name: str, actual: torch.Tensor) -> None:
        spec = self.case["outputs"][name]
        want = self.expected[name]
        assert list(want.shape) == spec["shape"], name
        self.compared.append(name)
        try:
            torch.testing.assert_close(actual.detach().cpu().to(want.dtype).reshape(want.shape),
                                       want, atol=spec["atol"], rtol=spec["rtol"])
        except AssertionError as exc:
            self.failures.append(f"{self.case['name']}:{name}: {' '.join(str(exc).split())[:300]}")

    def fail(self, message: str) -> None:
        self.failures.append(f"{self.case['name']}: {message}")


def count_calls(module: torch.nn.Module, calls: list) -> object:
    return module.register_forward_hook(lambda *_: calls.append(1))


def run_step(pipe, case: dict, lean: bool) -> Comparison:
    """One denoising step of a single window, intermediates included."""
    from kinemate.models.animate_anyone.preprocess import clip_pixels, official_resize
    from kinemate.pipeline.context import context_windows

    out = Comparison(case)
    denoiser = pipe.denoiser
    native = native_reference()
    ref = official_resize(native, case["width"], case["height"])
    controls = pose_frames(case)
    windows = context_windows(case["video_length"], case["context_frames"],
                              case["context_overlap"], closed_loop=case["context_closed_loop"],
                              context_stride=case["context_stride"])
    assert windows == case["windows"]
    latents = case_latents(case).to(pipe.device)
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(case["num_inference_steps"])
    t = scheduler.timesteps[case["step_index"]]
    embeds = denoiser.image_embeds(native)
    ref_latents = pipe.encode_reference(ref)
    options = pipe.resolve(lean=lean, reference_bank_dtype=bank_dtype_name(case))
    unet_calls, ref_calls = [], []
    hooks = [count_calls(pipe.unet, unet_calls), count_calls(pipe.reference_unet, ref_calls)]
    try:
        video = pipe.start_video(ref, controls, options, ref_latents, image_embeds=embeds)
        guided, raw = pipe.predict_noise(latents, t, video, windows, guidance=guidance(case))
    finally:
        for hook in hooks:
            hook.remove()
    if len(unet_calls) != case["expected_unet_calls"]:
        out.fail(f"{len(unet_calls)} denoising-UNet calls, expected {case['expected_unet_calls']}")
    if len(ref_calls) != case["expected_reference_unet_calls"]:
        out.fail(f"{len(ref_calls)} reference-UNet calls, expected "
                 f"{case['expected_reference_unet_calls']}")
    for name, spec in case["outputs"].items():
        if name == "timestep":
            if not int(t) == case["timestep"] == int(out.expected[name].reshape(-1)[0]):
                out.fail(f"timestep {int(t)}, expected {case['timestep']}")
            out.compared.append(name)
        elif name == "clip_pixel_values":
            out.check(name, clip_pixels(native, int(denoiser.image_encoder.config.image_size)))
        elif name == "clip_image_embeds":
            out.check(name, embeds)
        elif name == "ref_image_tensor":  # what encode_reference feeds the VAE
            out.check(name, torch.from_numpy(ref).permute(2, 0, 1)[None].float() / 127.5 - 1)
        elif name == "ref_latents":
            out.check(name, ref_latents)
        elif name == "pose_fea":
            feats = denoiser.pose_features(controls, spec["frames"])
            out.check(name, feats.permute(1, 0, 2, 3)[None])
        elif name.startswith("reference_bank_"):
            path = INDEX["reference_bank_pairs"][int(name.rsplit("_", 1)[1])]
            slot = pipe.reference_unet.get_submodule(path).attn1.processor.slot
            reader = pipe.unet.get_submodule(path).attn1.processor.slot
            if reader != slot:
                out.fail(f"{path}: writer slot {slot} is read by slot {reader}")
            out.check(name, video.bank.features[slot][-1:])
        elif name in ("unet_out_uncond_cond", "unet_out_cond_only"):
            out.check(name, raw)
        elif name == "noise_pred_guided":
            out.check(name, guided)
        elif name == "latents_after_step":
            prev = int(t) - scheduler.config.num_train_timesteps // case["num_inference_steps"]
            if prev != case["prev_timestep"]:
                out.fail(f"DDIM steps {int(t)} -> {prev}, expected -> {case['prev_timestep']}")
            step = scheduler.step(guided, t.to(latents.device), latents, eta=INDEX["eta"])
            out.check(name, step.prev_sample)
        else:
            out.fail(f"unknown golden output {name!r}")
    pipe.denoiser.end_video(video)
    return out


def run_pipeline(pipe, case: dict, lean: bool) -> Comparison:
    """The whole sampling loop from the seed (the noise itself is checked first)."""
    from kinemate.errors import NumericsError
    from kinemate.models.animate_anyone.preprocess import official_resize

    out = Comparison(case)
    native = native_reference()
    ref = official_resize(native, case["width"], case["height"])
    controls = pose_frames(case)
    init = case_latents(case)
    kwargs = {"latents": init}
    if "Generator(\"cpu\")" in (case.get("init_noise") or {}).get("generator", ""):
        drawn = pipe.initial_noise(case["video_length"], case["height"], case["width"],
                                   case["seed"])
        if torch.equal(drawn, init):
            kwargs = {"seed": case["seed"]}  # the engine draws the official noise itself
        else:
            out.fail(f"the noise drawn from seed {case['seed']} differs from init_latents")
    steps: dict[int, dict] = {}
    timesteps: list[int] = []
    unet_calls, ref_calls = [], []
    hooks = [count_calls(pipe.unet, unet_calls), count_calls(pipe.reference_unet, ref_calls)]
    try:
        final = pipe.sample_latents(
            ref, controls, steps=case["num_inference_steps"], guidance=guidance(case),
            context_frames=case["context_frames"], context_overlap=case["context_overlap"],
            closed_loop=case["context_closed_loop"], context_stride=case["context_stride"],
            eta=INDEX["eta"], lean=lean, reference_bank_dtype=bank_dtype_name(case),
            image_embeds=pipe.denoiser.image_embeds(native), progress=False,
            callback=lambda i, t, info: (timesteps.append(int(t)), steps.__setitem__(i, info)),
            **kwargs)
    except NumericsError as exc:
        out.fail(f"sampling stopped: {exc}")
        return out
    finally:
        for hook in hooks:
            hook.remove()
    if len(unet_calls) != case["expected_unet_calls"]:
        out.fail(f"{len(unet_calls)} denoising-UNet calls, expected {case['expected_unet_calls']}")
    if len(ref_calls) != case["expected_reference_unet_calls"]:
        out.fail(f"{len(ref_calls)} reference-UNet calls, expected "
                 f"{case['expected_reference_unet_calls']}")
    if steps and steps[0]["windows"] != case["windows"]:
        out.fail(f"windows {steps[0]['windows']}, expected {case['windows']}")
    summed = bool(case.get("quirk")) and not case["cfg"]
    counts = torch.zeros(case["video_length"])
    for window in case["windows"]:
        counts[window] += 1
    for name, spec in case["outputs"].items():
        if name == "timesteps":
            if not timesteps == out.expected[name].tolist() == case["timesteps"]:
                out.fail(f"timesteps {timesteps}, expected {case['timesteps']}")
            out.compared.append(name)
        elif name.startswith("noise_pred_step"):
            index = int(name[len("noise_pred_step"):])
            pred = steps[index]["noise_pred"]
            if summed:  # official: the window SUM per frame (kinemate averages)
                if index > 0:
                    continue
                pred = pred * counts.to(pred).view(1, 1, -1, 1, 1)
            out.check(name, pred)
        elif name.startswith("latents_before_step"):
            if not summed:
                out.check(name, steps[int(name[len("latents_before_step"):]) - 1]["latents"])
        elif name == "final_latents":
            if not summed:
                out.check(name, final)
        elif name == "video_frames":
            if not summed:
                decoded = torch.stack([pipe.decode_frame(final, i) for i in spec["video_frames"]],
                                      dim=2)
                out.check(name, decoded)
        else:
            out.fail(f"unknown golden output {name!r}")
    return out


def run_case(pipe, case: dict, lean: bool) -> Comparison:
    return (run_step if case["kind"] == "step" else run_pipeline)(pipe, case, lean)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", STEP, ids=[c["name"] for c in STEP])
def test_golden_step(aa_pipe, case, path):
    result = run_case(aa_pipe, case, PATHS[path])
    assert not result.failures, "\n".join(result.failures)
    assert set(result.compared) == set(case["outputs"])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", PIPE, ids=[c["name"] for c in PIPE])
def test_golden_pipeline(aa_pipe, case, path):
    result = run_case(aa_pipe, case, PATHS[path])
    assert not result.failures, "\n".join(result.failures)
    if case.get("quirk") and not case["cfg"]:
        assert "noise_pred_step0" in result.compared  # the rest follows from the official sum
    else:
        assert set(result.compared) == set(case["outputs"])


def test_golden_setup_is_the_family_default(aa_pipe):
    """What the golden set fixes is what the family does by itself: scheduler, fusion, the
    reference UNet's timestep, the pose guider's constructor, the motion-module config."""
    from kinemate.models.reference import fusion_blocks

    config = dict(aa_pipe.scheduler.config)
    for key, value in INDEX["scheduler"].items():
        if not key.startswith("_"):
            assert config[key] == value, key
    assert INDEX["fusion_blocks"] == "full" and INDEX["reference_unet_timestep"] == 0
    assert INDEX["cfg_batch_order"] == ["uncond", "cond"]
    paths = {id(m): n for n, m in aa_pipe.reference_unet.named_modules()}
    order = [paths[id(b)] for b in fusion_blocks(aa_pipe.reference_unet, "full")]
    assert order == INDEX["reference_bank_pairs"]
    guider = INDEX["weights"]["pose_guider"]["constructor"]
    assert aa_pipe.pose_guider.config.conditioning_embedding_channels == \
        guider["conditioning_embedding_channels"]
    assert list(aa_pipe.pose_guider.config.block_out_channels) == guider["block_out_channels"]
    if not INDEX["weights"].get("inference_config"):
        return  # the release's config is the family's default (tests/models/test_aa_manifest.py)
    inference = json.loads((GOLDEN / INDEX["weights_dir"] /
                            INDEX["weights"]["inference_config"]).read_text())
    extra = inference["unet_additional_kwargs"]
    assert aa_pipe.unet.config.motion_module_kwargs == extra["motion_module_kwargs"]
    assert aa_pipe.unet.config.motion_module_mid_block == extra["motion_module_mid_block"]
    assert aa_pipe.unet.config.use_inflated_groupnorm == extra["use_inflated_groupnorm"]


# -- planted mistakes ----------------------------------------------------------------------
def _uncond_reads_reference(monkeypatch, pipe):
    from kinemate.models.reference import ReferenceBank, ReferenceRead

    monkeypatch.setattr(ReferenceBank, "reader",
                        lambda self, num_frames, uncond_videos=0: ReferenceRead(self, num_frames, 0))


def _clip_uncond_black(monkeypatch, pipe):
    from kinemate.models.animate_anyone.denoiser import AnimateAnyoneDenoiser

    black = pipe.denoiser.image_embeds(np.zeros_like(native_reference()))
    monkeypatch.setattr(AnimateAnyoneDenoiser, "uncond_embeds",
                        lambda self, e: black.reshape(1, 1, -1).expand_as(e))


def _scheduler(**changes):
    def plant(monkeypatch, pipe):
        from kinemate.pipeline import make_scheduler

        config = {**dict(pipe.scheduler.config), "_class_name": "DDIMScheduler", **changes}
        monkeypatch.setattr(pipe, "scheduler", make_scheduler(config))
    return plant


def _motion_modules_off(monkeypatch, pipe):
    from kinemate.models.motion import MotionModule

    monkeypatch.setattr(MotionModule, "forward", lambda self, video: video)


def _pose_after_first_resnet(monkeypatch, pipe):
    unet = pipe.unet
    forward, held = unet.forward, {}

    def without_conv_in_pose(*args, conv_in_residual=None, **kwargs):
        held["pose"] = conv_in_residual
        return forward(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", without_conv_in_pose)
    handle = unet.down_blocks[0].resnets[0].register_forward_hook(
        lambda module, inputs, output: output + held["pose"])
    return handle


# mistake -> (plant, case): "first" = the first step case with CFG; "mid" = the first step
# case with CFG past the first step (the scheduler's betas barely matter at t = 999)
MISTAKES = {
    "reference_read_in_uncond_half": (_uncond_reads_reference, "first"),
    "clip_uncond_black_image": (_clip_uncond_black, "first"),
    "epsilon_instead_of_v": (_scheduler(prediction_type="epsilon"), "first"),
    "betas_without_zero_snr": (_scheduler(rescale_betas_zero_snr=False), "mid"),
    "betas_scaled_linear": (_scheduler(beta_schedule="scaled_linear"), "mid"),
    "motion_modules_missing": (_motion_modules_off, "first"),
    "pose_added_after_first_resnet": (_pose_after_first_resnet, "first"),
}


def mistake_case(which: str) -> dict:
    steps = [c for c in STEP if c["cfg"] and "variant_of" not in c]
    if which == "mid":
        steps = [c for c in steps if c["step_index"] > 0]
    if not steps:
        pytest.skip(f"the golden set has no {which!r} step case with CFG")
    return steps[0]


@pytest.mark.parametrize("mistake", MISTAKES)
def test_planted_mistake_fails_golden(aa_pipe, monkeypatch, mistake):
    """Each planted mistake makes a golden step case with CFG fail (on the lean path)."""
    plant, which = MISTAKES[mistake]
    case = mistake_case(which)
    assert not run_case(aa_pipe, case, True).failures  # passes unplanted
    handle = plant(monkeypatch, aa_pipe)
    try:
        result = run_case(aa_pipe, case, True)
    finally:
        if handle is not None:
            handle.remove()
    assert result.failures, f"{mistake} went unnoticed by {case['name']}"
