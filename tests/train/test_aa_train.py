"""Training Moore-AnimateAnyone's two stages (``model.family: animate-anyone``) on synthetic
people: configs/animate-anyone-tiny.yaml shrunk to seconds, what each stage trains, the saved
folder loading as the animate-anyone family and sampling, exact resume, the official recipe's
details (CLIP context dropped to a zero embedding, reference UNet at t = 0, training noise on
scaled_linear zero-SNR betas, min-SNR in the official form, the pair margin), and
configs/animate-anyone-sd15.yaml fine-tuning the tiny golden release."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from kinemate.errors import ConfigError
from kinemate.train.config import config_from_dict
from kinemate.train.trainer import build_task, train

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "animate-anyone-tiny.yaml"
SD15 = REPO / "configs" / "animate-anyone-sd15.yaml"
GOLDEN = REPO.parent / "shared" / "reference" / "animate-anyone" / "golden" / "weights"
CPU = torch.device("cpu")


def shrunk(path: Path, out: Path, *, stage1_steps: int = 3, stage2_steps: int = 2) -> dict:
    """The config file at 32x32 px with a few steps per stage (its networks unchanged)."""
    raw = yaml.safe_load(path.read_text())
    raw.update(output_dir=str(out), torch_threads=1, log_every=1, checkpoint_every=1000,
               checkpoint_every_minutes=1000, sample_every=0, sample_steps=2)
    raw["data"].update(size=32, synth_frames=6, clip_frames=4, num_seeds=4, cache_clips=4,
                       pair_margin=2)
    raw["model"]["arch"]["image_encoder"]["image_size"] = 32
    raw["model"]["sampling"].update(steps=2, context_frames=4, context_overlap=1)
    vae, stage1, stage2 = raw["stages"]
    vae.update(batch_size=16, fit_frames=64)
    stage1.update(steps=stage1_steps, batch_size=2, warmup_steps=0)
    stage2.update(steps=stage2_steps, batch_size=1, warmup_steps=0)
    return raw


def batch_of(task, kind: str, n: int) -> dict:
    from kinemate.train.data import StageDataset, make_source

    ds = StageDataset(make_source(task.data), kind, seed=0, clip_frames=task.cfg.data.clip_frames)
    return torch.utils.data.default_collate([ds[k] for k in range(n)])


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a kinemate-format folder as ``component/key``."""
    out = {}
    for f in sorted(folder.glob("*/*.safetensors")):
        out.update({f"{f.parent.name}/{k}": v for k, v in load_file(str(f)).items()})
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """configs/animate-anyone-tiny.yaml, shrunk, trained through both stages."""
    tmp = tmp_path_factory.mktemp("aa")
    raw = shrunk(TINY, tmp / "run")
    cfg = config_from_dict(raw)
    assert cfg.model.family == "animate-anyone"
    result = train(cfg, progress=False)
    return tmp / "run", raw, result


def stage_task(raw: dict, out: Path, kind: str):
    """A stage's task on a copy of the finished run's earlier stages (its starting point)."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = config_from_dict({**raw, "output_dir": str(out)})
    stage = next(s for s in cfg.stages if s.kind == kind)
    return cfg, build_task(cfg, stage, CPU)


def test_the_result_loads_as_animate_anyone_and_samples(run):
    from kinemate.pipeline import load_pipeline
    from kinemate.synth import generate_clip

    out, raw, result = run
    assert result == out / "stage2" / "final"
    index = json.loads((result / "kinemate.json").read_text())
    assert index["family"] == "animate-anyone"
    assert set(index["components"]) == {"unet", "reference_unet", "pose_guider",
                                        "image_encoder", "vae"}
    assert "text_embeddings" not in index  # the context is the CLIP image embedding
    pipe = load_pipeline(result)
    assert (pipe.family, pipe.control_kind, pipe.default_size) == \
        ("animate-anyone", "openpose", (32, 32))
    sched = pipe.scheduler.config  # saved as the release samples: linear betas, zero SNR
    assert (sched.prediction_type, sched.beta_schedule, sched.rescale_betas_zero_snr,
            sched.timestep_spacing) == ("v_prediction", "linear", True, "trailing")
    assert pipe.options.steps == 2 and pipe.options.guidance == 3.5
    assert pipe.unet.config.motion_module_mid_block and pipe.unet.config.use_inflated_groupnorm
    clip = generate_clip(1_000_003, num_frames=5, size=(32, 32))
    frames = pipe(clip.frames[0], clip.skeleton, seed=0, progress=False)
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.uint8
    assert frames.std() > 0
    assert (out / "stage1" / "samples" / "final.mp4").is_file()
    assert (out / "stage2" / "samples" / "final.mp4").is_file()


def test_stage1_trains_the_reference_unet_pose_guider_and_unet_spatial_layers(run, tmp_path):
    """Gradients reach the reference UNet (through the reference attention, last up block
    frozen as in the official script), the pose guider and the UNet's spatial layers; the
    image encoder and the VAE stay outside the trained module; the motion modules are off and
    the saved result keeps them untouched."""
    out, raw, _ = run
    work = tmp_path / "s1"
    work.mkdir()
    shutil.copytree(out / "vae", work / "vae")
    _, task = stage_task(raw, work, "stage1")
    m = task.module
    assert not m.unet.motion_module_keys(), "stage 1 runs the UNet without its motion modules"
    assert all(p.requires_grad for p in m.unet.parameters())
    assert all(p.requires_grad for p in m.pose_guider.parameters())
    last = f"up_blocks.{len(m.reference_unet.up_blocks) - 1}."
    for name, p in m.reference_unet.named_parameters():
        assert p.requires_grad == (not name.startswith(last)), name
    assert not any(p.requires_grad for p in task.image_encoder.parameters())
    assert all(not n.startswith(("image_encoder", "vae")) for n, _ in m.named_parameters())

    inputs = task.prepare(batch_of(task, "stage1", 2), torch.Generator().manual_seed(0))
    assert inputs["image_embeds"].shape == (2, 1, raw["model"]["arch"]["unet"]["cross_attention_dim"])
    inputs["n_uncond"] = 0
    m(**inputs).backward()
    grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    nonzero = {n for n, g in grads.items() if g.abs().sum() > 0}
    assert any(n.startswith("reference_unet.down_blocks.0") for n in nonzero)
    assert "pose_guider.conv_out.weight" in nonzero  # zero at first: its input grads are 0
    assert any(n.startswith("unet.mid_block") for n in nonzero)

    # the run: stage 1's result against the task's starting weights (same seeded init)
    start = {f"{c}/{k}": v for c, mod in (("reference_unet", m.reference_unet),
                                          ("pose_guider", m.pose_guider))
             for k, v in mod.state_dict().items()}
    done = tensors(out / "stage1" / "final")
    for key, before in start.items():
        frozen = key.startswith(f"reference_unet/{last}")
        assert torch.equal(done[key], before) == frozen, key
    assert all(torch.equal(done[f"unet/{k}"], v) for k, v in task.motion_state.items())
    assert any(not torch.equal(done[f"unet/{k}"], v)
               for k, v in m.unet.state_dict().items())


def test_stage2_trains_only_the_motion_modules(run, tmp_path):
    out, raw, _ = run
    work = tmp_path / "s2"
    work.mkdir()
    for stage in ("vae", "stage1"):
        shutil.copytree(out / stage, work / stage)
    _, task = stage_task(raw, work, "stage2")
    trained = {n for n, p in task.module.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("unet.") and ".motion_modules." in n for n in trained)
    assert any(n.startswith("unet.mid_block.motion_modules") for n in trained)
    assert task.module.frozen_conditioning
    inputs = task.prepare(batch_of(task, "stage2", 1), torch.Generator().manual_seed(0))
    assert inputs["latents"].shape[2] == raw["data"]["clip_frames"]

    before, after = tensors(out / "stage1" / "final"), tensors(out / "stage2" / "final")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("unet/") and ".motion_modules." in k for k in changed)


def test_a_dropped_reference_sees_neither_the_reference_nor_its_clip_embedding(run, tmp_path):
    """The first ``n_uncond`` samples get a zero context and no reference attention (what the
    unconditional half of guidance sees at inference): their prediction does not depend on
    the reference frame or its embedding, and the others' does."""
    out, raw, _ = run
    work = tmp_path / "u"
    work.mkdir()
    shutil.copytree(out / "vae", work / "vae")
    _, task = stage_task(raw, work, "stage1")
    inputs = task.prepare(batch_of(task, "stage1", 2), torch.Generator().manual_seed(1))
    m = task.module.eval()
    a = m.alphas_cumprod[inputs["timesteps"]].view(-1, 1, 1, 1, 1)
    noisy = a.sqrt() * inputs["latents"] + (1 - a).sqrt() * inputs["noise"]
    references = [(inputs["ref_latents"], inputs["image_embeds"]),
                  (inputs["ref_latents"].flip(0) + 1.0, torch.randn_like(inputs["image_embeds"]))]
    with torch.no_grad():
        preds = [m.predict(noisy, inputs["timesteps"], ref, inputs["control"], 1,
                           image_embeds=embeds) for ref, embeds in references]
    torch.testing.assert_close(preds[0][:1], preds[1][:1], rtol=0, atol=1e-6)
    assert (preds[0][1:] - preds[1][1:]).abs().max() > 1e-4


def test_the_reference_unet_runs_at_t0_on_the_clip_context_inference_uses(run, tmp_path):
    """The reference UNet is written at timestep 0 whatever the target's timestep (as at
    inference), and the training context is the CLIP embedding the sampler computes for the
    same reference frame."""
    out, raw, _ = run
    work = tmp_path / "t0"
    work.mkdir()
    shutil.copytree(out / "vae", work / "vae")
    _, task = stage_task(raw, work, "stage1")
    batch = batch_of(task, "stage1", 2)
    inputs = task.prepare(batch, torch.Generator().manual_seed(2))
    assert inputs["timesteps"].max() > 0
    seen = []
    hook = task.module.reference_unet.register_forward_hook(
        lambda mod, args, result: seen.append(args[1].clone()))
    with torch.no_grad():
        task.module(**inputs)
    hook.remove()
    assert len(seen) == 1 and torch.equal(seen[0], torch.zeros_like(inputs["timesteps"]))

    pipe = task.build_pipeline(task.module)
    frames = ((batch["reference"] + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    at_inference = torch.cat([pipe.denoiser.image_embeds(f.numpy()) for f in frames])
    torch.testing.assert_close(inputs["image_embeds"][:, 0], at_inference, rtol=0, atol=1e-6)


def test_training_noise_betas_and_the_official_snr_weighting(run, tmp_path):
    """Training noise on scaled_linear betas rescaled to zero terminal SNR (the official
    training scheduler) while the model samples with linear ones; ``model.train_scheduler: {}``
    trains on the sampling betas; min-SNR in the official form keeps weight 1 at t = 999,
    where the paper's form gives 0."""
    from diffusers import DDIMScheduler

    out, raw, _ = run
    work = tmp_path / "n"
    work.mkdir()
    shutil.copytree(out / "vae", work / "vae")
    _, task = stage_task(raw, work, "stage1")
    official = DDIMScheduler(beta_schedule="scaled_linear", rescale_betas_zero_snr=True,
                             beta_start=0.00085, beta_end=0.012)
    torch.testing.assert_close(task.module.alphas_cumprod, official.alphas_cumprod.float())
    assert task.module.alphas_cumprod[999] == 0 and task.scheduler_config["beta_schedule"] == "linear"
    assert task.module.prediction_type == "v_prediction"

    same = copy.deepcopy(raw)
    same["model"]["train_scheduler"] = {}
    _, plain = stage_task(same, work, "stage1")
    linear = DDIMScheduler(beta_schedule="linear", rescale_betas_zero_snr=True,
                           beta_start=0.00085, beta_end=0.012)
    torch.testing.assert_close(plain.module.alphas_cumprod, linear.alphas_cumprod.float())
    bad = copy.deepcopy(raw)
    bad["model"]["train_scheduler"] = {"prediction_type": "epsilon"}
    with pytest.raises(ConfigError, match="only the betas"):
        stage_task(bad, work, "stage1")

    inputs = task.prepare(batch_of(task, "stage1", 2), torch.Generator().manual_seed(0))
    inputs["timesteps"] = torch.full_like(inputs["timesteps"], 999)
    m = task.module
    assert m.snr_gamma == 5.0 and m.snr_weighting == "min_snr_plus_one"
    with torch.no_grad():
        official_loss = float(m(**inputs))
        m.snr_weighting = "min_snr"
        paper_loss = float(m(**inputs))
    assert official_loss > 0 and paper_loss == 0.0
    with pytest.raises(ConfigError, match="snr_weighting"):
        config_from_dict({"stages": [{"kind": "stage1", "snr_weighting": "snr"}]})


def test_resume_continues_exactly(run, tmp_path):
    """Stage 1 for 4 steps straight, and 2 steps, stopped, resumed for 2: the same weights."""
    out, raw, _ = run
    results = []
    for name, stops in (("straight", [None]), ("split", [2, None])):
        work = tmp_path / name
        work.mkdir()
        shutil.copytree(out / "vae", work / "vae")
        cfg_raw = {**raw, "output_dir": str(work)}
        cfg_raw["stages"] = copy.deepcopy(raw["stages"][:2])
        cfg_raw["stages"][1].update(steps=4)
        cfg = config_from_dict(cfg_raw)
        for stop in stops:
            train(cfg, resume=True, progress=False, stop_after_steps=stop)
        assert json.loads((work / "stage1" / "DONE").read_text())["steps"] == 4
        results.append(tensors(work / "stage1" / "final"))
    straight, split = results
    assert straight.keys() == split.keys()
    for k in straight:
        assert torch.equal(straight[k], split[k]), f"{k} differs after resume"


def test_pair_margin_keeps_the_target_away_from_the_reference():
    from kinemate.train.data import StageDataset

    class Frames:  # a clip source whose frames are their own index
        def __len__(self):
            return 3

        def num_frames(self, index):
            return 20

        def clip(self, index, indices):
            frames = np.stack([np.full((8, 8, 3), i, np.uint8) for i in indices])
            return frames, frames

    def pairs(margin):
        ds = StageDataset(Frames(), "stage1", seed=0, clip_frames=4, pair_margin=margin)
        return [(int(round((float(ex["reference"][0, 0, 0]) + 1) * 127.5)),
                 int(round((float(ex["target"][0, 0, 0]) + 1) * 127.5)))
                for ex in (ds[k] for k in range(300))]

    assert all(abs(r - t) >= 6 for r, t in pairs(6))
    assert any(abs(r - t) < 6 for r, t in pairs(0))
    with pytest.raises(ConfigError, match="pair_margin"):
        config_from_dict({"data": {"pair_margin": -1}})


def test_config_errors_say_what_to_do(run, tmp_path):
    out, raw, _ = run
    with pytest.raises(ConfigError, match="model.family"):
        config_from_dict({"model": {"family": "animateanyone"}})
    with pytest.raises(ConfigError, match="openpose"):
        config_from_dict({"model": {"family": "animate-anyone"}, "data": {"control": "densepose"}})
    work = tmp_path / "e"
    work.mkdir()
    shutil.copytree(out / "vae", work / "vae")
    for arch, match in (({"pose_guider": {"block_out_channels": [8, 16]}}, "downsample by 2"),
                        ({"image_encoder": {"projection_dim": 8}}, "projection_dim"),
                        ({"controlnet": {}}, "unknown model.arch")):
        bad = copy.deepcopy(raw)
        bad["model"]["arch"].update(arch)
        with pytest.raises(ConfigError, match=match):
            stage_task(bad, work, "stage1")
    # a MagicAnimate-design model cannot be the start of an Animate Anyone stage
    ma = copy.deepcopy(raw)
    ma["model"]["init"] = str(REPO / "kinemate" / "assets" / "kinemate-tiny")
    with pytest.raises(ConfigError, match="appearance_encoder"):
        stage_task(ma, tmp_path / "ma", "stage1")


@pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"Animate Anyone golden weights not at {GOLDEN}")
def test_sd15_config_fine_tunes_the_release_layout(tmp_path):
    """configs/animate-anyone-sd15.yaml as written (official hyper-parameters, gradient
    checkpointing, stage sizes), with model.init at the tiny golden release and synthetic data
    on the CPU: one step per stage; stage 1 starts from the release's weights and keeps its
    motion modules, the result loads as animate-anyone and samples."""
    from kinemate.models.animate_anyone.checkpoint import load_release
    from kinemate.pipeline import load_pipeline
    from kinemate.synth import generate_clip

    raw = yaml.safe_load(SD15.read_text())
    assert raw["model"]["family"] == "animate-anyone" and raw["model"]["init"]
    raw.update(output_dir=str(tmp_path / "run"), mixed_precision="no", sample_steps=1,
               checkpoint_every=1000)
    raw["model"]["init"] = str(GOLDEN)
    raw["data"] = {**raw["data"], "kind": "synth", "root": None, "synth_frames": 6,
                   "clip_frames": 4, "frame_stride": 1, "num_seeds": 3, "cache_clips": 3}
    raw["model"]["sampling"] = {"context_frames": 4, "context_overlap": 1, "steps": 2}
    s1, s2 = raw["stages"]
    assert (s1["size"], s2["size"], s1["lr"], s1["snr_gamma"]) == (768, 512, 1e-5, 5.0)
    s1.update(size=64, steps=1, batch_size=2)
    s2.update(size=32, steps=1)
    cfg = config_from_dict(raw)
    assert cfg.gradient_checkpointing and cfg.noise_offset == 0.05

    task = build_task(cfg, cfg.stages[0], CPU)
    assert not task.from_scratch
    release = load_release(GOLDEN)
    start = task.module.reference_unet.state_dict()
    assert all(torch.equal(v, start[k]) for k, v in release.reference_unet.state_dict().items())
    del task

    result = train(cfg, progress=False)
    assert load_pipeline(tmp_path / "run" / "stage1" / "final").default_size == (64, 64)
    stage1 = tensors(tmp_path / "run" / "stage1" / "final")
    for k, v in release.unet.state_dict().items():  # the release's motion modules, kept
        if ".motion_modules." in k:
            assert torch.equal(stage1[f"unet/{k}"], v), k
    pipe = load_pipeline(result)
    assert pipe.family == "animate-anyone" and pipe.default_size == (32, 32)
    assert pipe.options.steps == 2 and pipe.options.context_frames == 4
    clip = generate_clip(1_000_001, num_frames=4, size=(32, 32))
    frames = pipe(clip.frames[0], clip.skeleton, seed=0, progress=False)
    assert frames.shape == (4, 32, 32, 3)
