"""Training: each stage lowers its loss on a fixed batch; resume continues exactly; config errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from trainfixtures import tiny_config

from kinemate.errors import ConfigError
from kinemate.train.config import config_from_dict, load_config
from kinemate.train.trainer import _previous_result, build_task, train

VAE_STAGE = {"kind": "vae", "steps": 2, "batch_size": 2, "lr": 1e-3, "ema_decay": 0}


def _fit_fixed_batch(task, steps: int, lr: float) -> list[float]:
    """Optimise the task's module on one fixed batch (same noise/timesteps every step)."""
    from kinemate.train.data import StageDataset, make_source

    kind = task.stage.kind
    ds = StageDataset(make_source(task.cfg.data), kind, seed=0, clip_frames=task.cfg.data.clip_frames)
    batch = torch.utils.data.default_collate([ds[k] for k in range(4 if kind != "stage2" else 2)])
    inputs = task.prepare(batch, torch.Generator().manual_seed(0))
    if "n_uncond" in inputs:
        inputs["n_uncond"] = 1  # one sample without the reference, as in training
    params = [p for p in task.module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = task.module(**inputs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _assert_drops(losses: list[float], factor: float) -> None:
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < factor * first, f"loss did not drop: {losses}"


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A finished 2-step VAE stage (what the diffusion stages start from)."""
    tmp = tmp_path_factory.mktemp("vae")
    cfg = config_from_dict(tiny_config(tmp, [VAE_STAGE]))
    train(cfg, progress=False)
    return tmp, cfg


def test_vae_stage_lowers_loss(tmp_path):
    cfg = config_from_dict(tiny_config(tmp_path, [VAE_STAGE]))
    task = build_task(cfg, cfg.stages[0], torch.device("cpu"))
    losses = _fit_fixed_batch(task, 25, 3e-3)
    _assert_drops(losses, 0.7)


def test_stage1_lowers_loss_and_trains_the_right_parts(vae_run):
    tmp, _ = vae_run
    cfg = config_from_dict(tiny_config(tmp, [VAE_STAGE, {"kind": "stage1", "steps": 1}]))
    stage = cfg.stages[1]
    task = build_task(cfg, stage, torch.device("cpu"))
    m = task.module
    assert not m.unet.motion_module_keys(), "stage 1 runs the UNet without temporal modules"
    assert all(p.requires_grad for p in m.appearance_encoder.parameters())
    assert all(p.requires_grad for p in m.controlnet.parameters())
    assert all(p.requires_grad for p in m.unet.parameters())  # from scratch: spatial layers too
    before = {k: v.clone() for k, v in m.appearance_encoder.state_dict().items()}
    losses = _fit_fixed_batch(task, 25, 2e-3)
    _assert_drops(losses, 0.8)
    # the appearance encoder learns through the UNet's reference attention
    changed = [k for k, v in m.appearance_encoder.state_dict().items()
               if not torch.equal(v, before[k])]
    assert any("up_blocks" in k and "attn1" in k for k in changed)


def test_stage2_trains_only_temporal_modules(vae_run):
    tmp, _ = vae_run
    cfg = config_from_dict(tiny_config(tmp, [VAE_STAGE, {"kind": "stage2", "steps": 1}]))
    task = build_task(cfg, cfg.stages[1], torch.device("cpu"))
    m = task.module
    trained = {k for k, p in m.named_parameters() if p.requires_grad}
    assert trained and all(".motion_modules." in k for k in trained)
    frozen_before = {k: v.clone() for k, v in m.state_dict().items() if k not in trained}
    losses = _fit_fixed_batch(task, 30, 3e-3)
    _assert_drops(losses, 0.9)
    after = m.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen_before.items())


def test_resume_continues_exactly(tmp_path):
    stages = [VAE_STAGE, {"kind": "stage1", "steps": 4, "batch_size": 2, "lr": 1e-3,
                          "ema_decay": 0.9}]
    straight = config_from_dict(tiny_config(tmp_path / "a", stages))
    train(straight, progress=False)
    split = config_from_dict(tiny_config(tmp_path / "b", stages))
    out = train(split, progress=False, stop_after_steps=2)
    assert not (out / "DONE").exists()
    state = json.loads((out / "checkpoints" / "step_0000002" / "state.json").read_text())
    assert state["step"] == 2 and state["micro_step"] == 2
    with pytest.raises(ConfigError):
        train(split, progress=False)  # an existing run needs --resume
    train(split, resume=True, progress=False)
    for rel in ("stage1/checkpoints/step_0000004/model.safetensors",
                "stage1/final/unet/model.safetensors",
                "stage1/final/appearance_encoder/model.safetensors",
                "stage1/final/controlnet/model.safetensors"):
        a = load_file(str(tmp_path / "a" / "run" / rel))
        b = load_file(str(tmp_path / "b" / "run" / rel))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{rel}:{k} differs after resume"
    ema_a = torch.load(tmp_path / "a/run/stage1/checkpoints/step_0000004/ema.pt")
    ema_b = torch.load(tmp_path / "b/run/stage1/checkpoints/step_0000004/ema.pt")
    assert all(torch.equal(ema_a["shadow"][k], ema_b["shadow"][k]) for k in ema_a["shadow"])
    log_rows = (tmp_path / "b/run/stage1/log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in log_rows[1:]] == ["1", "2", "3", "4"]


def test_more_steps_given_on_resume_before_the_cooldown_equal_a_straight_run(tmp_path):
    """A run stopped before its cool-down and resumed with a larger ``steps`` ends where a run
    configured with that ``steps`` from the start ends (how the bundled model's run grew)."""
    def stages(steps):
        return [VAE_STAGE, {"kind": "stage1", "steps": steps, "batch_size": 2, "lr": 1e-3,
                            "cooldown_steps": 2, "ema_decay": 0.9}]
    straight = config_from_dict(tiny_config(tmp_path / "a", stages(6)))
    train(straight, progress=False)
    short = config_from_dict(tiny_config(tmp_path / "b", stages(4)))
    # the step-2 checkpoint holds the LR of step 2, still full in both configs (with a stop at
    # step 3, where the shorter one cools down, the two runs differ)
    train(short, progress=False, stop_after_steps=2)
    longer = config_from_dict(tiny_config(tmp_path / "b", stages(6)))
    train(longer, resume=True, progress=False)
    assert json.loads((tmp_path / "b/run/stage1/DONE").read_text())["steps"] == 6
    for part in ("unet", "appearance_encoder", "controlnet"):
        a = load_file(str(tmp_path / "a/run/stage1/final" / part / "model.safetensors"))
        b = load_file(str(tmp_path / "b/run/stage1/final" / part / "model.safetensors"))
        for k in a:
            assert torch.equal(a[k], b[k]), f"{part}:{k} differs"


def test_stage_result_loads_as_pipeline(vae_run, tmp_path):
    from kinemate.pipeline.loading import load_pipeline
    from kinemate.synth import generate_clip

    tmp, _ = vae_run
    cfg = config_from_dict(tiny_config(tmp, [VAE_STAGE, {"kind": "stage1", "steps": 1,
                                                         "batch_size": 1}]))
    train(cfg, resume=True, progress=False)
    final = _previous_result(cfg, cfg.stages[1].__class__(kind="stage2"))
    pipe = load_pipeline(final)
    assert pipe.control_kind == "openpose" and pipe.name == "test-tiny"
    assert pipe.unet.motion_module_keys()  # saved with (untrained) temporal modules
    clip = generate_clip(1_000_003, num_frames=4, size=(32, 32))
    out = pipe(clip.frames[0], clip.skeleton, steps=2, progress=False)
    assert out.shape == (4, 32, 32, 3) and out.dtype.name == "uint8"


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({"stages": [{"kind": "stage1", "stepz": 3}]})
    with pytest.raises(ConfigError, match="stage kind"):
        config_from_dict({"stages": [{"kind": "stage3"}]})
    with pytest.raises(ConfigError, match="multiple of 8"):
        config_from_dict({"data": {"size": 30}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cooldown_steps"):
        config_from_dict({"stages": [{"kind": "stage1", "cooldown_steps": -1}]})
    good = tmp_path / "good.yaml"
    good.write_text("seed: 5\nstages:\n  - kind: vae\n    steps: 3\n")
    cfg = load_config(good)
    assert cfg.seed == 5 and cfg.stages[0].kind == "vae" and cfg.stages[0].steps == 3


def test_vae_decoder_stage_keeps_the_latent_space(vae_run, tmp_path):
    from kinemate.train.tasks import load_vae

    tmp, _ = vae_run
    cfg = config_from_dict(tiny_config(tmp, [VAE_STAGE, {"kind": "vae_decoder", "steps": 3,
                                                         "batch_size": 2, "lr": 1e-3}]))
    train(cfg, resume=True, progress=False)
    before = load_vae(tmp / "run" / "vae" / "final").state_dict()
    after = load_vae(tmp / "run" / "vae_decoder" / "final").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    # the next stage starts from the fine-tuned autoencoder
    nxt = _previous_result(cfg, cfg.stages[0].__class__(kind="stage1"))
    assert nxt == tmp / "run" / "vae_decoder" / "final"


def test_patch_autoencoder_is_fitted_in_one_pass_and_drives_the_diffusion_stages(tmp_path):
    """``model.arch.vae.type: patch``: the vae stage fits the PCA patch autoencoder (no gradient
    steps), and the diffusion stages and the saved pipeline work on its 4x latents."""
    from kinemate.models import PatchAutoencoder
    from kinemate.pipeline.loading import load_pipeline
    from kinemate.synth import generate_clip
    from kinemate.train.tasks import load_vae

    raw = tiny_config(tmp_path, [{"kind": "vae", "steps": 1, "batch_size": 4, "fit_frames": 12},
                                 {"kind": "stage1", "steps": 2, "batch_size": 1}])
    arch = raw["model"]["arch"]
    arch["vae"] = {"type": "patch", "patch_size": 4}
    arch["unet"].update(in_channels=48, out_channels=48)
    arch["controlnet"] = {"conditioning_embedding_out_channels": [8, 16, 16]}  # x4
    cfg = config_from_dict(raw)
    train(cfg, progress=False)
    done = json.loads((tmp_path / "run" / "vae" / "DONE").read_text())
    assert done["steps"] == 0 and done["fit_frames"] == 12
    vae = load_vae(tmp_path / "run" / "vae" / "final")
    assert isinstance(vae, PatchAutoencoder) and vae.config.scaling_factor != 1.0
    pipe = load_pipeline(tmp_path / "run" / "stage1" / "final")
    assert isinstance(pipe.vae, PatchAutoencoder) and pipe.latent_factor == 4
    assert pipe.vae_scaling_factor == vae.config.scaling_factor
    clip = generate_clip(1_000_004, num_frames=4, size=(32, 32))
    out = pipe(clip.frames[0], clip.skeleton, steps=2, progress=False)
    assert out.shape == (4, 32, 32, 3) and out.dtype.name == "uint8"
    with pytest.raises(ConfigError, match="patch autoencoder"):
        bad = config_from_dict({**raw, "output_dir": str(tmp_path / "bad")})
        bad.stages[1] = bad.stages[1].__class__(kind="vae_decoder", steps=1)
        train(bad, progress=False)


def test_v_prediction_target_is_trained_and_saved_with_the_model(vae_run, tmp_path):
    from kinemate.pipeline.loading import load_pipeline

    tmp, _ = vae_run
    raw = tiny_config(tmp, [VAE_STAGE, {"kind": "stage1", "steps": 1, "batch_size": 1}])
    raw["model"]["scheduler"] = {"prediction_type": "v_prediction"}
    raw["output_dir"] = str(tmp_path / "v")
    cfg = config_from_dict(raw)
    (tmp_path / "v").mkdir()
    import shutil
    shutil.copytree(tmp / "run" / "vae", tmp_path / "v" / "vae")  # reuse the finished VAE stage
    task = build_task(cfg, cfg.stages[1], torch.device("cpu"))
    assert task.module.prediction_type == "v_prediction"
    _assert_drops(_fit_fixed_batch(task, 25, 2e-3), 0.8)
    train(cfg, resume=True, progress=False)
    pipe = load_pipeline(tmp_path / "v" / "stage1" / "final")
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    residual = {**raw["model"]["arch"], "unet": {**raw["model"]["arch"]["unet"],
                                                 "reference_residual": True}}
    bad = dict(raw, model={**raw["model"], "arch": residual})  # residual with v-prediction
    with pytest.raises(ConfigError, match="prediction_type"):
        build_task(config_from_dict(bad), cfg.stages[1], torch.device("cpu"))


def test_reference_residual_model_starts_as_the_reference_and_learns(vae_run, tmp_path):
    """``reference_concat`` + ``reference_residual`` with x0 ("sample") prediction: a fresh
    model's pipeline reproduces the reference latent in every frame (zero-initialised output
    conv), training lowers the loss from there, and the flags survive saving."""
    import shutil

    from kinemate.pipeline.loading import load_pipeline
    from kinemate.synth import generate_clip

    tmp, _ = vae_run
    raw = tiny_config(tmp, [VAE_STAGE, {"kind": "stage1", "steps": 1, "batch_size": 1,
                                        "reference_dropout": 0.0}])
    raw["model"]["scheduler"] = {"prediction_type": "sample"}
    raw["model"]["arch"]["unet"].update(reference_concat=True, reference_residual=True)
    raw["output_dir"] = str(tmp_path / "r")
    (tmp_path / "r").mkdir()
    shutil.copytree(tmp / "run" / "vae", tmp_path / "r" / "vae")
    cfg = config_from_dict(raw)
    task = build_task(cfg, cfg.stages[1], torch.device("cpu"))
    pipe = task.build_pipeline(task.module)
    clip = generate_clip(1_000_007, num_frames=3, size=(32, 32))
    latents = pipe.sample_latents(clip.frames[0], clip.skeleton, steps=3,
                                  guidance=1.0, progress=False)
    ref = pipe.encode_reference(clip.frames[0])
    torch.testing.assert_close(latents, ref[:, :, None].expand_as(latents), atol=1e-4, rtol=0)
    _assert_drops(_fit_fixed_batch(task, 25, 2e-3), 0.8)
    train(cfg, resume=True, progress=False)
    saved = load_pipeline(tmp_path / "r" / "stage1" / "final")
    assert saved.scheduler.config.prediction_type == "sample"
    assert saved.unet.config.reference_concat and saved.unet.config.reference_residual
    out = saved(clip.frames[0], clip.skeleton, steps=2, guidance=3.0,
                progress=False)  # the CFG path runs too (its unconditional rows get zeros)
    assert out.shape == (3, 32, 32, 3)


def test_lr_schedule_warms_up_holds_and_cools_down():
    from kinemate.train.config import StageConfig
    from kinemate.train.trainer import lr_factor

    st = StageConfig(kind="stage1", steps=100, warmup_steps=10, cooldown_steps=20)
    f = [lr_factor(st, s) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0
    assert all(x == 1.0 for x in f[10:80])
    assert f[80] == 1.0 and f[90] == pytest.approx(0.5) and f[99] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(f[80:], f[81:]))  # falls monotonically to the end
    plain = StageConfig(kind="stage1", steps=100)
    assert {lr_factor(plain, s) for s in range(100)} == {1.0}


def test_timestep_range_limits_the_trained_noise_levels(vae_run):
    """``timestep_range`` draws training timesteps only from [lo, hi]; bad ranges are refused."""
    from kinemate.train.data import StageDataset, make_source

    tmp, _ = vae_run
    raw = tiny_config(tmp, [VAE_STAGE, {"kind": "stage1", "steps": 1, "batch_size": 1,
                                        "timestep_range": [990, 995]}])
    cfg = config_from_dict(raw)
    task = build_task(cfg, cfg.stages[1], torch.device("cpu"))
    ds = StageDataset(make_source(cfg.data), "stage1", seed=0, clip_frames=cfg.data.clip_frames)
    batch = torch.utils.data.default_collate([ds[k] for k in range(4)])
    seen = set()
    for s in range(20):
        seen |= set(task.prepare(batch, torch.Generator().manual_seed(s))["timesteps"].tolist())
    assert seen <= set(range(990, 996)) and len(seen) > 1
    plain = config_from_dict(tiny_config(tmp, [VAE_STAGE, {"kind": "stage1"}]))
    full = build_task(plain, plain.stages[1], torch.device("cpu"))
    t_full = full.prepare(batch, torch.Generator().manual_seed(0))["timesteps"]
    assert t_full.min() < 990  # without the option every noise level is drawn

    for bad in ([5], [10, 5], [-1, 3], [1.5, 3]):
        with pytest.raises(ConfigError, match="timestep_range"):
            config_from_dict({"stages": [{"kind": "stage1", "timestep_range": bad}]})
    raw["stages"][1]["timestep_range"] = [0, 1000]
    with pytest.raises(ConfigError, match="last timestep 999"):
        build_task(config_from_dict(raw), config_from_dict(raw).stages[1], torch.device("cpu"))


def test_named_stages_run_a_kind_twice_and_chain_in_config_order(vae_run, tmp_path, capsys):
    """A second ``stage1`` with a ``name`` fine-tunes the first one's result in its own folder,
    and ``stage2`` starts from it; ``kinemate train --only NAME`` runs just that stage."""
    import shutil

    from kinemate.cli import main
    from kinemate.pipeline.loading import load_pipeline

    tmp, _ = vae_run
    one = {"kind": "stage1", "steps": 1, "batch_size": 1}
    raw = tiny_config(tmp_path, [VAE_STAGE, one,
                                 {**one, "name": "onestep", "timestep_range": [900, 999],
                                  "train_unet_spatial": True},
                                 {"kind": "stage2", "steps": 1, "batch_size": 1}])
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(tmp / "run" / "vae", run / "vae")
    cfg = config_from_dict(raw)
    assert [s.id for s in cfg.stages] == ["vae", "stage1", "onestep", "stage2"]
    train(cfg, resume=True, progress=False, only=["stage1"])
    assert (run / "stage1" / "DONE").is_file() and not (run / "onestep").exists()

    ft = cfg.stages[2]
    assert _previous_result(cfg, ft) == run / "stage1" / "final"
    task = build_task(cfg, ft, torch.device("cpu"))
    assert not task.from_scratch  # it starts from the first stage1's weights, not from scratch
    start = load_pipeline(run / "stage1" / "final").unet.state_dict()
    now = task.module.unet.state_dict()
    assert all(torch.equal(now[k], start[k]) for k in now)

    cfg_path = tmp_path / "cfg.json"
    raw["model"]["sampling"]["steps"] = 3  # the config's sampling options win
    cfg_path.write_text(json.dumps(raw))
    assert main(["train", "--config", str(cfg_path), "--resume", "--no-progress",
                 "--only", "onestep"]) == 0
    assert (run / "onestep" / "DONE").is_file() and not (run / "stage2").exists()
    assert json.loads((run / "onestep" / "DONE").read_text())["stage"] == "onestep"
    tuned_pipe = load_pipeline(run / "onestep" / "final")
    assert tuned_pipe.options.steps == 3
    assert load_pipeline(run / "stage1" / "final").options.steps == 2
    tuned = tuned_pipe.unet.state_dict()
    assert any(not torch.equal(tuned[k], start[k]) for k in start)
    assert _previous_result(cfg, cfg.stages[3]) == run / "onestep" / "final"
    assert main(["train", "--config", str(cfg_path), "--resume", "--only", "stage3"]) != 0
    assert "vae, stage1, onestep, stage2" in capsys.readouterr().err

    with pytest.raises(ConfigError, match="own name"):
        config_from_dict({"stages": [one, one]})
    with pytest.raises(ConfigError, match="stage name"):
        config_from_dict({"stages": [{**one, "name": "../x"}]})


def test_temporal_loss_adds_the_frame_to_frame_change_error(vae_run):
    """``temporal_loss_weight`` w adds w x (error of the predicted frame-to-frame change): the
    loss grows linearly with w on the same batch, and the option is refused below 0."""
    tmp, _ = vae_run
    raw = tiny_config(tmp, [VAE_STAGE, {"kind": "stage1", "steps": 1, "batch_size": 1},
                            {"kind": "stage2", "steps": 1, "batch_size": 1,
                             "temporal_loss_weight": 1.0}])
    cfg = config_from_dict(raw)
    train(config_from_dict({**raw, "stages": raw["stages"][:2]}), resume=True, progress=False)
    task = build_task(cfg, cfg.stages[2], torch.device("cpu"))
    assert task.module.temporal_loss_weight == 1.0
    from kinemate.train.data import StageDataset, make_source

    ds = StageDataset(make_source(cfg.data), "stage2", seed=0, clip_frames=cfg.data.clip_frames)
    batch = torch.utils.data.default_collate([ds[0]])
    inputs = task.prepare(batch, torch.Generator().manual_seed(0))
    losses = []
    with torch.no_grad():
        for w in (0.0, 1.0, 2.0):
            task.module.temporal_loss_weight = w
            losses.append(float(task.module(**inputs)))
    assert losses[1] > losses[0]
    assert losses[2] - losses[0] == pytest.approx(2 * (losses[1] - losses[0]), rel=1e-4)
    with pytest.raises(ConfigError, match="temporal_loss_weight"):
        config_from_dict({"stages": [{"kind": "stage2", "temporal_loss_weight": -1}]})
