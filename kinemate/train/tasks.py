"""What each stage trains: the module whose ``forward`` returns the loss, how a batch becomes its
inputs, and what the stage leaves behind (``final/``) and shows (samples)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch

from kinemate.errors import ConfigError, WeightsError
from kinemate.train.config import StageConfig, TrainConfig
from kinemate.train.data import StageDataset, make_source
from kinemate.models.patch_vae import latent_downsample
from kinemate.train.vae import VAEObjective, build_vae, fit_scaling_factor, is_closed_form


def _heldout_frames(cfg: TrainConfig, n: int) -> torch.Tensor:
    """``n`` held-out frames ``(n, 3, H, W)`` in [-1, 1] (seeds at ``heldout_seed_start``)."""
    from dataclasses import replace

    dcfg = cfg.data
    if dcfg.kind == "synth":
        dcfg = replace(dcfg, seed_offset=dcfg.heldout_seed_start, num_seeds=max(n, 1))
    ds = StageDataset(make_source(dcfg), "vae", seed=cfg.seed + 1, clip_frames=dcfg.clip_frames)
    return torch.stack([ds[k]["image"] for k in range(n)])


def load_vae(path: str | Path):
    """A saved ``AutoencoderKL`` or :class:`kinemate.models.PatchAutoencoder` folder."""
    import json

    from diffusers import AutoencoderKL

    from kinemate.models.patch_vae import PatchAutoencoder

    path = Path(path)
    if not (path / "config.json").is_file():
        raise WeightsError(f"no autoencoder at {path} (config.json missing); train one with a "
                           "'vae' stage or point model.vae at a diffusers VAE folder")
    cls_name = json.loads((path / "config.json").read_text()).get("_class_name")
    cls = PatchAutoencoder if cls_name == "PatchAutoencoder" else AutoencoderKL
    return cls.from_pretrained(str(path))


class VAETask:
    """Stage ``vae``: the autoencoder alone, on single frames."""

    def __init__(self, cfg: TrainConfig, stage: StageConfig, device: torch.device,
                 previous: Path | None = None):
        self.cfg, self.stage, self.device = cfg, stage, device
        torch.manual_seed(cfg.seed)
        self.decoder_only = stage.kind == "vae_decoder"
        if self.decoder_only:
            src = previous if previous is not None else (Path(cfg.model.vae) if cfg.model.vae else None)
            if src is None:
                raise ConfigError("stage vae_decoder needs an autoencoder: put a 'vae' stage "
                                  "before it or set model.vae")
            vae = load_vae(src)
        else:
            vae = load_vae(cfg.model.vae) if cfg.model.vae else build_vae(cfg.model.arch.get("vae"))
        if self.decoder_only and is_closed_form(vae):
            raise ConfigError("stage vae_decoder fine-tunes a learned decoder; a patch "
                              "autoencoder is linear and fitted exactly: drop the stage")
        self.module = VAEObjective(vae, stage.kl_weight, decoder_only=self.decoder_only).to(device)
        if self.decoder_only:  # the latent space stays exactly as the diffusion stages see it
            vae.requires_grad_(False)
            vae.decoder.requires_grad_(True)
            if getattr(vae, "post_quant_conv", None) is not None:
                vae.post_quant_conv.requires_grad_(True)
        self.module.train()
        self.factor = latent_downsample(vae)
        self.closed_form = is_closed_form(vae)
        self.latent_channels = vae.config.latent_channels

    def enable_gradient_checkpointing(self) -> None:
        if getattr(self.module.vae, "_supports_gradient_checkpointing", False):
            self.module.vae.enable_gradient_checkpointing()

    def prepare(self, batch: dict, gen: torch.Generator) -> dict:
        image = batch["image"]
        crop = self.stage.crop
        if crop and crop < min(image.shape[-2:]):
            if crop % self.factor:
                raise ConfigError(f"vae crop {crop} must be a multiple of {self.factor}")
            ys = torch.randint(0, image.shape[-2] - crop + 1, (image.shape[0],), generator=gen)
            xs = torch.randint(0, image.shape[-1] - crop + 1, (image.shape[0],), generator=gen)
            image = torch.stack([im[:, y:y + crop, x:x + crop] for im, y, x in
                                 zip(image, ys.tolist(), xs.tolist())])
        b, _, h, w = image.shape
        eps = torch.randn(b, self.latent_channels, h // self.factor, w // self.factor, generator=gen)
        return {"image": image.to(self.device), "eps": eps.to(self.device)}

    def fit_closed_form(self, images: torch.Tensor) -> None:
        """Fit a closed-form autoencoder (PCA patch autoencoder) on ``images`` ``(N, 3, H, W)``."""
        self.module.vae.fit(images.to(self.device))

    def save_result(self, module: VAEObjective, out_dir: Path) -> None:
        vae = module.vae
        if self.closed_form:  # its scaling factor was set by the fit
            vae.eval().save_pretrained(str(out_dir), safe_serialization=True)
            return
        vae.eval()
        if not self.decoder_only:  # a new latent space: fit its scaling factor
            frames = _heldout_frames(self.cfg, 16).to(self.device)
            vae.register_to_config(scaling_factor=fit_scaling_factor(vae, frames))
        vae.save_pretrained(str(out_dir), safe_serialization=True)

    @torch.no_grad()
    def sample(self, module: VAEObjective, path: Path) -> None:
        """Held-out frames (top) and their reconstructions (bottom) as a PNG next to ``path``."""
        from kinemate.io import write_image

        vae = module.vae
        was_training = vae.training
        vae.eval()
        frames = _heldout_frames(self.cfg, 8).to(self.device)
        rec = vae.decode(vae.encode(frames).latent_dist.mean).sample
        vae.train(was_training)
        grid = torch.cat([torch.cat(list(frames), -1), torch.cat(list(rec), -1)], -2)
        img = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        path = Path(path).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, np.ascontiguousarray(img))


# --------------------------------------------------------------------------- diffusion stages


class TrainingBank:
    """A :class:`kinemate.models.ReferenceBank` that keeps the autograd graph of the written
    reference features (the inference bank stores detached copies), so stage 1 trains the
    appearance encoder through the UNet's reference attention. Built lazily so this module
    imports without the engine."""

    _cls = None

    @classmethod
    def make(cls):
        if cls._cls is None:
            from kinemate.models.reference import ReferenceBank, attention

            class _Bank(ReferenceBank):
                def __init__(self):
                    super().__init__(bank_dtype=None, lean=False)
                    self.live: dict[int, torch.Tensor] = {}

                def start_write(self) -> None:
                    super().start_write()
                    self.live.clear()

                def clear(self) -> None:
                    super().clear()
                    if hasattr(self, "live"):
                        self.live.clear()

                def write(self, slot, attn, normed):
                    self.live[slot] = normed
                    self.features[slot] = normed
                    return attention(attn, normed, normed)

                def _reference(self, slot, like):
                    feat = self.live.get(slot)
                    if feat is None:
                        return super()._reference(slot, like)
                    return feat.to(like.dtype)

            cls._cls = _Bank
        return cls._cls()


def _record_tail_hooks(appearance_encoder, get_bank) -> list:
    """The appearance encoder's last reference feature comes from a LayerNorm outside any
    attention processor (its tail block) and is stored detached; a forward hook on that
    LayerNorm records the live tensor in the training bank too."""
    from kinemate.models.reference import ReferenceOnlyBlock

    handles = []
    for m in appearance_encoder.modules():
        if isinstance(m, ReferenceOnlyBlock):
            def hook(_mod, _inp, out, block=m):
                bank = get_bank()
                if bank is not None and block.slot is not None:
                    bank.live[block.slot] = out
            handles.append(m.norm1.register_forward_hook(hook))
    return handles


class DiffusionObjective(torch.nn.Module):
    """Appearance encoder + pose ControlNet + video UNet; ``forward`` returns the denoising loss.

    Inputs: ``ref_latents`` (B, C, h, w) clean reference latents, ``latents`` (B, C, F, h, w)
    clean target latents, ``control`` (B, 3, F, H, W) in [0, 1], ``noise`` like ``latents``,
    ``timesteps`` (B,), ``n_uncond``: the first ``n_uncond`` samples are trained without the
    reference (what the unconditional half of classifier-free guidance sees at inference).
    ``frozen_conditioning``: stage 2 runs the appearance encoder and ControlNet without grad.
    """

    def __init__(self, unet, appearance_encoder, controlnet, text_embeds: torch.Tensor,
                 alphas_cumprod: torch.Tensor, *, frozen_conditioning: bool, snr_gamma: float = 0.0,
                 prediction_type: str = "epsilon", temporal_loss_weight: float = 0.0):
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ConfigError(f"prediction_type {prediction_type!r} is not supported for "
                              "training; use 'epsilon', 'v_prediction' or 'sample'")
        if getattr(unet.config, "reference_residual", False) and prediction_type != "sample":
            raise ConfigError("a UNet with reference_residual predicts the clean frame: set "
                              "model.scheduler.prediction_type to 'sample'")
        self.prediction_type = prediction_type
        self.unet = unet
        self.appearance_encoder = appearance_encoder
        self.controlnet = controlnet
        self.register_buffer("text_embeds", text_embeds.float().clone(), persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone(), persistent=False)
        self.frozen_conditioning = frozen_conditioning
        self.snr_gamma = snr_gamma
        self.temporal_loss_weight = temporal_loss_weight
        self._bank = None
        self._hooks = _record_tail_hooks(appearance_encoder, lambda: self._bank)

    def forward(self, ref_latents, latents, control, noise, timesteps, n_uncond: int = 0):
        from einops import rearrange

        b, _, f, _, _ = latents.shape
        a = self.alphas_cumprod[timesteps].view(b, 1, 1, 1, 1).to(latents.dtype)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        text = self.text_embeds.to(latents.dtype).expand(b, -1, -1)
        bank = TrainingBank.make()
        self._bank = bank
        try:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_conditioning):
                bank.start_write()
                self.appearance_encoder(ref_latents, timesteps, text, bank)
                down, mid = self.controlnet(
                    rearrange(noisy, "b c f h w -> (b f) c h w"), timesteps.repeat_interleave(f),
                    encoder_hidden_states=text.repeat_interleave(f, 0),
                    controlnet_cond=rearrange(control, "b c f h w -> (b f) c h w"),
                    return_dict=False)
            down = [rearrange(r, "(b f) c h w -> b c f h w", f=f) for r in down]
            mid = rearrange(mid, "(b f) c h w -> b c f h w", f=f)
            bank.start_read(num_frames=f, uncond_batches=int(n_uncond))
            # dropped reference (the first n_uncond rows): zeros, as the unconditional CFG half
            # sees it
            n = int(n_uncond)
            ref_in = torch.cat([torch.zeros_like(ref_latents[:n]), ref_latents[n:]])
            pred = self.unet(noisy, timesteps, text, down_block_additional_residuals=down,
                             mid_block_additional_residual=mid,
                             cross_attention_kwargs={"reference": bank},
                             reference_latents=ref_in)
        finally:
            # not cleared: with gradient checkpointing the UNet's attention is recomputed
            # (in read mode) during backward and needs the bank; it dies with the graph
            self._bank = None
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0
            target = a.sqrt() * noise - (1 - a).sqrt() * latents
        elif self.prediction_type == "sample":  # the clean latent (x0)
            target = latents
        else:
            target = noise
        err = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3, 4))
        if self.snr_gamma > 0:  # min-SNR-gamma weighting (Hang et al. 2023)
            snr = a.view(b).float() / (1 - a.view(b).float())
            # in x0 units the epsilon loss is snr x and the v loss (snr + 1) x the x0 loss, so
            # the weights are min(snr, g) / snr, min(snr, g) / (snr + 1) and min(snr, g)
            weight = torch.clamp(snr, max=self.snr_gamma)
            if self.prediction_type == "epsilon":
                weight = weight / snr
            elif self.prediction_type == "v_prediction":
                weight = weight / (snr + 1)
            err = err * weight
        loss = err.mean()
        if self.temporal_loss_weight > 0 and f > 1:
            # the change from frame to frame of the predicted clean clip against the true
            # change: penalises flicker that a per-frame loss does not see
            if self.prediction_type == "sample":
                x0 = pred.float()
            elif self.prediction_type == "v_prediction":
                x0 = a.sqrt() * noisy.float() - (1 - a).sqrt() * pred.float()
            else:
                x0 = (noisy.float() - (1 - a).sqrt() * pred.float()) / a.sqrt()
            d_pred = x0[:, :, 1:] - x0[:, :, :-1]
            d_true = latents[:, :, 1:].float() - latents[:, :, :-1].float()
            loss = loss + self.temporal_loss_weight * (d_pred - d_true).pow(2).mean()
        return loss


class DiffusionTask:
    """Stage ``stage1`` (frame pairs; appearance encoder + ControlNet [+ UNet spatial layers],
    temporal modules off) or ``stage2`` (clips; temporal modules only)."""

    def __init__(self, cfg: TrainConfig, stage: StageConfig, device: torch.device,
                 previous: Path | None = None):
        from kinemate.train import arch as A

        self.cfg, self.stage, self.device = cfg, stage, device
        torch.manual_seed(mix_seed_int(cfg.seed, stage.id))
        self.arch = A.resolve_arch(cfg.model.arch)
        start = previous if previous is not None and (previous / "kinemate.json").is_file() else None
        if start is None and cfg.model.init:
            start = Path(cfg.model.init)
        self.from_scratch = start is None
        self.meta = {"name": cfg.model.name, "control_kind": cfg.data.control,
                     "default_size": [cfg.data.size, cfg.data.size]}
        if start is not None:
            pipe = _load_pipeline_folder(start)
            unet_full, app, cn, vae = pipe.unet, pipe.appearance_encoder, pipe.controlnet, pipe.vae
            text = pipe.text_embeds_cond
            self.scaling = float(pipe.vae_scaling_factor)
            self.scheduler_config = dict(pipe.scheduler.config)
            self.options = pipe.options
            self.meta.update(name=cfg.model.name or pipe.name, control_kind=pipe.control_kind)
        else:
            vae_dir = previous if previous is not None else (Path(cfg.model.vae) if cfg.model.vae else None)
            if vae_dir is None:
                raise ConfigError("training from scratch needs a VAE: add a 'vae' stage before "
                                  f"{stage.kind} or set model.vae (or model.init)")
            vae = load_vae(vae_dir)
            unet_full = A.build_unet(self.arch, motion=True)
            app = A.build_appearance_encoder(self.arch)
            cn = A.build_controlnet(self.arch)
            A.copy_matching(app, unet_full)
            A.copy_matching(cn, unet_full)
            text = A.fixed_text_embedding(self.arch)
            self.scaling = float(vae.config.scaling_factor)
            self.scheduler_config = None
            self.options = None
        self.vae = vae.to(device).eval().requires_grad_(False)
        self.unet_full_config = dict(unet_full.config)
        if stage.kind == "stage1":
            # temporal modules off: a UNet without them, same spatial weights; the motion
            # weights are kept aside and put back when the stage's result is saved
            unet = A.build_unet_from_config(self.unet_full_config, motion=False)
            sd = unet_full.state_dict()
            self.motion_state = {k: v.clone() for k, v in sd.items() if ".motion_modules." in k}
            unet.load_state_dict({k: v for k, v in sd.items() if ".motion_modules." not in k})
            train_spatial = stage.train_unet_spatial
            if train_spatial is None:
                train_spatial = self.from_scratch
            unet.requires_grad_(bool(train_spatial))
            app.requires_grad_(True)
            cn.requires_grad_(True)
            frozen_cond = False
        else:
            unet = unet_full
            if not unet.motion_module_keys():
                raise ConfigError("stage2 trains temporal modules but the UNet has none; set "
                                  "model.arch.motion.use_motion_module to true")
            self.motion_state = None
            unet.requires_grad_(False)
            for name, p in unet.named_parameters():
                if ".motion_modules." in name:
                    p.requires_grad_(True)
            app.requires_grad_(False)
            cn.requires_grad_(False)
            frozen_cond = True
        from kinemate.pipeline.animation import make_scheduler
        from kinemate.pipeline.animation import MAGICANIMATE_SCHEDULER

        sched = make_scheduler({**(self.scheduler_config or MAGICANIMATE_SCHEDULER),
                                **(cfg.model.scheduler or {})})
        self.scheduler_config = {**dict(sched.config), "_class_name": type(sched).__name__}
        alphas = _alphas_cumprod(sched)
        if stage.timestep_range is not None and stage.timestep_range[1] >= len(alphas):
            raise ConfigError(
                f"stage {stage.id}: timestep_range {stage.timestep_range} goes past the "
                f"scheduler's last timestep {len(alphas) - 1}; lower its upper end"
            )
        self.text = text.float()
        self.module = DiffusionObjective(unet, app, cn, self.text, alphas,
                                         frozen_conditioning=frozen_cond,
                                         snr_gamma=stage.snr_gamma,
                                         temporal_loss_weight=stage.temporal_loss_weight,
                                         prediction_type=sched.config.prediction_type).to(device)
        self.module.train()

    def enable_gradient_checkpointing(self) -> None:
        from diffusers.models.transformers.transformer_2d import Transformer2DModel

        for model in (self.module.appearance_encoder, self.module.controlnet):
            if getattr(model, "_supports_gradient_checkpointing", False):
                model.enable_gradient_checkpointing()
        # the appearance encoder's transformers write the reference bank: recomputing them
        # in backward (when the bank is in read mode) would be wrong, so only its resnets are
        # checkpointed
        for m in self.module.appearance_encoder.modules():
            if isinstance(m, Transformer2DModel):
                m.gradient_checkpointing = False
        for m in self.module.unet.modules():  # the video UNet's spatial transformers
            if isinstance(m, Transformer2DModel):
                m.enable_gradient_checkpointing()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> scaled posterior means (N, C, h, w)."""
        return self.vae.encode(images.to(self.device)).latent_dist.mean * self.scaling

    def prepare(self, batch: dict, gen: torch.Generator) -> dict:
        from einops import rearrange

        target, control = batch["target"], batch["control"]
        if target.dim() == 4:  # frame pairs: one-frame videos
            target, control = target.unsqueeze(2), control.unsqueeze(2)
        b, _, f, _, _ = target.shape
        latents = rearrange(self.encode(rearrange(target, "b c f h w -> (b f) c h w")),
                            "(b f) c h w -> b c f h w", f=f)
        ref_latents = self.encode(batch["reference"])
        noise = torch.randn(latents.shape, generator=gen)
        lo, hi = self.stage.timestep_range or (0, len(self.module.alphas_cumprod) - 1)
        timesteps = torch.randint(lo, hi + 1, (b,), generator=gen)
        n_uncond = int((torch.rand(b, generator=gen) < self.stage.reference_dropout).sum())
        return {"ref_latents": ref_latents, "latents": latents, "control": control.to(self.device),
                "noise": noise.to(self.device), "timesteps": timesteps.to(self.device),
                "n_uncond": n_uncond}

    def build_pipeline(self, module: "DiffusionObjective"):
        """An :class:`AnimationPipeline` of the current weights (full UNet with temporal
        modules: in stage 1 the spatial weights are trained and the motion weights untouched)."""
        from kinemate.pipeline.animation import AnimationPipeline, SamplingOptions, make_scheduler
        from kinemate.train import arch as A

        if self.motion_state is not None:
            unet = A.build_unet_from_config(self.unet_full_config, motion=True)
            sd = {k: v.detach().clone() for k, v in module.unet.state_dict().items()}
            sd.update(self.motion_state)
            unet.load_state_dict(sd)
            unet.to(self.device)  # built on the CPU; every other part is already on the device
        else:
            unet = copy.deepcopy(module.unet)
        # the config's model.sampling wins over the options of the model a stage started from
        # (as model.scheduler does for the scheduler)
        opts = dataclasses.replace(self.options or SamplingOptions(),
                                   **_tiny_sampling_defaults(self.cfg))
        return AnimationPipeline(
            unet.eval(), copy.deepcopy(module.appearance_encoder).eval(),
            copy.deepcopy(module.controlnet).eval(), copy.deepcopy(self.vae).eval(),
            make_scheduler({**self.scheduler_config}),
            text_embeds_uncond=self.text.clone(), text_embeds_cond=self.text.clone(),
            name=self.meta["name"], control_kind=self.meta["control_kind"],
            default_size=tuple(self.meta["default_size"]), vae_scaling_factor=self.scaling,
            options=opts)

    def save_result(self, module: "DiffusionObjective", out_dir: Path) -> None:
        pipe = self.build_pipeline(module)
        for m in (pipe.unet, pipe.appearance_encoder, pipe.controlnet, pipe.vae):
            m.requires_grad_(False)
        pipe.save_pretrained(out_dir)

    @torch.no_grad()
    def sample(self, module: "DiffusionObjective", path: Path) -> None:
        """reference | control | result | ground truth of a held-out clip, as an MP4."""
        from kinemate.io import side_by_side, write_video

        pipe = self.build_pipeline(module)
        frames, controls = heldout_clip(self.cfg, self.cfg.sample_seed)
        out = pipe(frames[0], controls, num_inference_steps=self.cfg.sample_steps, seed=0,
                   progress=False)
        grid = [side_by_side([frames[0], c, o, g]) for c, o, g in zip(controls, out, frames)]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, np.stack(grid), fps=8)


def heldout_clip(cfg: TrainConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames and control maps of one held-out synthetic clip at the training size."""
    from dataclasses import replace

    from kinemate.train.data import synth_clip

    if seed < cfg.data.heldout_seed_start:
        raise ConfigError(f"seed {seed} is a training seed; held-out seeds start at "
                          f"{cfg.data.heldout_seed_start}")
    return synth_clip(seed, replace(cfg.data, frame_stride=1))


def _tiny_sampling_defaults(cfg: TrainConfig) -> dict:
    return dict(cfg.model.sampling or {})


def _alphas_cumprod(scheduler) -> torch.Tensor:
    if hasattr(scheduler, "alphas_cumprod"):
        return torch.as_tensor(scheduler.alphas_cumprod).float()
    betas = torch.linspace(scheduler.config.beta_start, scheduler.config.beta_end,
                           scheduler.config.num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


def _load_pipeline_folder(folder: Path):
    from kinemate.pipeline.loading import load_pipeline

    pipe = load_pipeline(folder)
    for m in (pipe.unet, pipe.appearance_encoder, pipe.controlnet, pipe.vae):
        m.requires_grad_(True)
    return pipe


def mix_seed_int(*parts) -> int:
    from kinemate.train.data import mix_seed

    return mix_seed(*parts) % (2**31)
