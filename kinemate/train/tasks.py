"""What each stage trains: the module whose ``forward`` returns the loss, how a batch becomes its
inputs, and what the stage leaves behind (``final/``) and shows (samples)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from kinemate.errors import ConfigError, WeightsError
from kinemate.models.patch_vae import latent_downsample
from kinemate.models.reference import ReferenceBank
from kinemate.train.config import DataConfig, StageConfig, TrainConfig, stage_data
from kinemate.train.data import StageDataset, make_source
from kinemate.train.vae import VAEObjective, build_vae, fit_scaling_factor, is_closed_form


@contextlib.contextmanager
def _seeded_init(seed: int) -> Iterator[None]:
    """Seed torch's global CPU generator for a block that builds modules (their default init
    draws from it), then give the caller back its own generator state."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


def _heldout_frames(cfg: TrainConfig, n: int, data: DataConfig | None = None) -> torch.Tensor:
    """``n`` held-out frames ``(n, 3, H, W)`` in [-1, 1] (seeds at ``heldout_seed_start``) of
    ``data`` (default ``cfg.data``)."""
    from dataclasses import replace

    dcfg = data or cfg.data
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
        self.decoder_only = stage.kind == "vae_decoder"
        with _seeded_init(cfg.seed):  # a newly built autoencoder's init
            vae = self._autoencoder(previous)
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

    def _autoencoder(self, previous: Path | None):
        """The autoencoder to train: model.vae or a new one; for ``vae_decoder`` the previous
        stage's result (else model.vae)."""
        cfg = self.cfg
        if not self.decoder_only:
            return load_vae(cfg.model.vae) if cfg.model.vae else build_vae(cfg.model.arch.get("vae"))
        src = previous if previous is not None else (Path(cfg.model.vae) if cfg.model.vae else None)
        if src is None:
            raise ConfigError("stage vae_decoder needs an autoencoder: put a 'vae' stage "
                              "before it or set model.vae")
        return load_vae(src)

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
            frames = _heldout_frames(self.cfg, 16, stage_data(self.cfg, self.stage))
            frames = frames.to(self.device)
            vae.register_to_config(scaling_factor=fit_scaling_factor(vae, frames))
        vae.save_pretrained(str(out_dir), safe_serialization=True)

    @torch.no_grad()
    def sample(self, module: VAEObjective, path: Path) -> None:
        """Held-out frames (top) and their reconstructions (bottom) as a PNG next to ``path``."""
        from kinemate.io import write_image

        vae = module.vae
        was_training = vae.training
        vae.eval()
        frames = _heldout_frames(self.cfg, 8, stage_data(self.cfg, self.stage)).to(self.device)
        rec = vae.decode(vae.encode(frames).latent_dist.mean).sample
        vae.train(was_training)
        grid = torch.cat([torch.cat(list(frames), -1), torch.cat(list(rec), -1)], -2)
        img = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        path = Path(path).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, np.ascontiguousarray(img))


# --------------------------------------------------------------------------- diffusion stages


class DenoisingObjective(torch.nn.Module):
    """The denoising loss every family trains with; ``forward`` returns it. A family's
    subclass holds its networks and implements :meth:`predict`.

    Inputs: ``ref_latents`` (B, C, h, w) clean reference latents, ``latents`` (B, C, F, h, w)
    clean target latents, ``control`` (B, 3, F, H, W) in [0, 1], ``noise`` like ``latents``,
    ``timesteps`` (B,), ``n_uncond``: the first ``n_uncond`` samples are trained without the
    reference (what the unconditional half of classifier-free guidance sees at inference),
    and the family's own inputs (e.g. Animate Anyone's ``image_embeds``).
    ``frozen_conditioning``: stage 2 runs the reference networks without grad.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, *, frozen_conditioning: bool,
                 snr_gamma: float = 0.0, prediction_type: str = "epsilon",
                 temporal_loss_weight: float = 0.0, snr_weighting: str = "min_snr"):
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ConfigError(f"prediction_type {prediction_type!r} is not supported for "
                              "training; use 'epsilon', 'v_prediction' or 'sample'")
        self.prediction_type = prediction_type
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone(), persistent=False)
        self.frozen_conditioning = frozen_conditioning
        self.snr_gamma = snr_gamma
        self.snr_weighting = snr_weighting
        self.temporal_loss_weight = temporal_loss_weight

    def forward(self, ref_latents, latents, control, noise, timesteps, n_uncond: int = 0,
                **family_inputs):
        b = latents.shape[0]
        a = self.alphas_cumprod[timesteps].view(b, 1, 1, 1, 1).to(latents.dtype)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        pred = self.predict(noisy, timesteps, ref_latents, control, int(n_uncond),
                            **family_inputs)
        return self.loss(pred, latents, noise, noisy, a)

    def predict(self, noisy, timesteps, ref_latents, control, n_uncond: int, **family_inputs):
        """The network's output for ``noisy`` (B, C, F, h, w): each family's objective
        (a subclass) defines it."""
        raise NotImplementedError(f"{type(self).__name__} does not define predict()")

    def loss(self, pred, latents, noise, noisy, a) -> torch.Tensor:
        """Mean squared error against the scheduler's target, optionally min-SNR weighted,
        plus the temporal term; ``a`` (B, 1, 1, 1, 1) are the cumulative alphas."""
        b, _, f, _, _ = latents.shape
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0
            target = a.sqrt() * noise - (1 - a).sqrt() * latents
        elif self.prediction_type == "sample":  # the clean latent (x0)
            target = latents
        else:
            target = noise
        err = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3, 4))
        if self.snr_gamma > 0:  # min-SNR-gamma weighting (Hang et al. 2023)
            snr = a.view(b).float() / (1 - a.view(b).float())
            if self.prediction_type == "v_prediction" and self.snr_weighting == "min_snr_plus_one":
                # Moore-AnimateAnyone's form (older diffusers scripts): SNR + 1 in both places,
                # so a zero-terminal-SNR timestep keeps weight 1
                weight = torch.clamp(snr + 1, max=self.snr_gamma) / (snr + 1)
            else:
                # in x0 units the epsilon loss is snr x and the v loss (snr + 1) x the x0
                # loss, so the weights are min(snr, g) / snr, min(snr, g) / (snr + 1) and
                # min(snr, g)
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


class DiffusionObjective(DenoisingObjective):
    """MagicAnimate's design: appearance encoder + pose ControlNet + video UNet, conditioned on
    a fixed text embedding. The reference latent gets the same timestep as the target;
    stage 2 (``frozen_conditioning``) runs the appearance encoder and ControlNet without grad.
    """

    def __init__(self, unet, appearance_encoder, controlnet, text_embeds: torch.Tensor,
                 alphas_cumprod: torch.Tensor, *, frozen_conditioning: bool, snr_gamma: float = 0.0,
                 prediction_type: str = "epsilon", temporal_loss_weight: float = 0.0,
                 snr_weighting: str = "min_snr"):
        if getattr(unet.config, "reference_residual", False) and prediction_type != "sample":
            raise ConfigError("a UNet with reference_residual predicts the clean frame: set "
                              "model.scheduler.prediction_type to 'sample'")
        super().__init__(alphas_cumprod, frozen_conditioning=frozen_conditioning,
                         snr_gamma=snr_gamma, prediction_type=prediction_type,
                         temporal_loss_weight=temporal_loss_weight, snr_weighting=snr_weighting)
        self.unet = unet
        self.appearance_encoder = appearance_encoder
        self.controlnet = controlnet
        self.register_buffer("text_embeds", text_embeds.float().clone(), persistent=False)

    def predict(self, noisy, timesteps, ref_latents, control, n_uncond: int):
        from einops import rearrange

        b, _, f, _, _ = noisy.shape
        text = self.text_embeds.to(noisy.dtype).expand(b, -1, -1)
        # the engine's bank, keeping the graph of the written features (gradients reach the
        # appearance encoder through the reference attention); with gradient checkpointing
        # the UNet's attention is recomputed through its read view during backward, so the
        # bank lives as long as the graph
        bank = ReferenceBank(bank_dtype=None, lean=False, detach=False)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_conditioning):
            self.appearance_encoder(ref_latents, timesteps, text, bank.writer())
            down, mid = self.controlnet(
                rearrange(noisy, "b c f h w -> (b f) c h w"), timesteps.repeat_interleave(f),
                encoder_hidden_states=text.repeat_interleave(f, 0),
                controlnet_cond=rearrange(control, "b c f h w -> (b f) c h w"),
                return_dict=False)
        down = [rearrange(r, "(b f) c h w -> b c f h w", f=f) for r in down]
        mid = rearrange(mid, "(b f) c h w -> b c f h w", f=f)
        # dropped reference (the first n_uncond videos): zeros, as the unconditional CFG half
        # sees it
        n = n_uncond
        ref_in = torch.cat([torch.zeros_like(ref_latents[:n]), ref_latents[n:]])
        return self.unet(noisy, timesteps, text, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid,
                         cross_attention_kwargs={"reference": bank.reader(f, uncond_videos=n)},
                         reference_latents=ref_in)


class _Components(NamedTuple):
    """The parts of a MagicAnimate-design model a stage starts with (``unet`` with temporal
    modules)."""

    unet: torch.nn.Module
    appearance_encoder: torch.nn.Module
    controlnet: torch.nn.Module
    vae: torch.nn.Module
    text: torch.Tensor


class DiffusionTask:
    """Stage ``stage1`` (frame pairs; the reference networks [+ UNet spatial layers], temporal
    modules off) or ``stage2`` (clips; temporal modules only) of a diffusion model.

    This class is MagicAnimate's design (appearance encoder + ControlNet); another family
    subclasses it and replaces the hooks marked "family" (its components, what stage 1 trains
    besides the UNet, its objective, its denoiser), e.g.
    :class:`kinemate.train.animate_anyone.AnimateAnyoneTask`."""

    family = "magicanimate"  # the registry family of the saved model
    component_names = ("unet", "appearance_encoder", "controlnet")  # besides the VAE

    def __init__(self, cfg: TrainConfig, stage: StageConfig, device: torch.device,
                 previous: Path | None = None):
        self.cfg, self.stage, self.device = cfg, stage, device
        self.arch = self._resolve_arch(cfg.model.arch)
        self.data = stage_data(cfg, stage)
        self.meta = {"name": cfg.model.name, "control_kind": cfg.data.control,
                     "default_size": [self.data.size, self.data.size]}
        # 1. the model the stage starts from (none: from scratch)
        start = self._starting_model(previous)
        self.from_scratch = start is None
        with _seeded_init(mix_seed_int(cfg.seed, stage.id)):  # the init of new modules
            # 2. its components, loaded or newly built
            if start is not None:
                parts = self._load_components(start)
            else:
                parts = self._build_components(previous)
            self.vae = parts.vae.to(device).eval().requires_grad_(False)
            self.unet_full_config = dict(parts.unet.config)
            # 3. what the stage trains, and the UNet it trains with
            unet = self._stage1_unet(parts) if stage.kind == "stage1" else self._stage2_unet(parts)
        # 4. the noise schedule: model.scheduler over the starting model's
        sched = self._noise_scheduler()
        alphas = self._training_alphas(sched)
        # 5. the objective: stage 2 runs the reference networks without grad
        self.module = self._objective(unet, parts, alphas, sched.config.prediction_type,
                                      frozen_conditioning=stage.kind != "stage1").to(device)
        self.module.train()

    # -- family hooks (MagicAnimate's here) ---------------------------------------------
    def _resolve_arch(self, arch: dict) -> dict:
        """``model.arch`` over the family's tiny defaults."""
        from kinemate.train import arch as A

        return A.resolve_arch(arch)

    def _family_scheduler(self) -> dict:
        """The noise scheduler of a model built from scratch."""
        from kinemate.models.magicanimate import MAGICANIMATE_SCHEDULER

        return MAGICANIMATE_SCHEDULER

    def _default_train_scheduler(self) -> dict:
        """Training-noise overrides when ``model.train_scheduler`` is not set."""
        return {}

    def _default_snr_weighting(self) -> str:
        return "min_snr"

    def _default_train_unet_spatial(self) -> bool:
        """Stage 1 trains the UNet's spatial layers unless ``train_unet_spatial`` says: from
        scratch, not when fine-tuning."""
        return self.from_scratch

    def _components_of(self, pipe) -> _Components:
        """The parts of a loaded pipeline (checked to be of this family)."""
        self.text = pipe.denoiser.text_embeds_cond.float()
        return _Components(pipe.unet, pipe.appearance_encoder, pipe.controlnet, pipe.vae,
                           self.text)

    def _build_components(self, previous: Path | None) -> _Components:
        """New components of ``model.arch`` around a trained VAE (the previous stage's result or
        model.vae); the appearance encoder and ControlNet start as copies of the UNet."""
        from kinemate.train import arch as A

        vae = self._trained_vae(previous)
        unet = A.build_unet(self.arch, motion=True)
        app = A.build_appearance_encoder(self.arch)
        cn = A.build_controlnet(self.arch)
        A.copy_matching(app, unet)
        A.copy_matching(cn, unet)
        self.text = A.fixed_text_embedding(self.arch).float()
        return _Components(unet, app, cn, vae, self.text)

    def _train_conditioning(self, parts, train: bool) -> None:
        """Stage 1 (``train``) trains the appearance encoder and ControlNet; stage 2 freezes
        them."""
        parts.appearance_encoder.requires_grad_(train)
        parts.controlnet.requires_grad_(train)

    def _objective(self, unet, parts, alphas, prediction_type: str, *,
                   frozen_conditioning: bool) -> DenoisingObjective:
        return DiffusionObjective(unet, parts.appearance_encoder, parts.controlnet,
                                  self.text, alphas, frozen_conditioning=frozen_conditioning,
                                  snr_gamma=self.stage.snr_gamma,
                                  temporal_loss_weight=self.stage.temporal_loss_weight,
                                  prediction_type=prediction_type,
                                  snr_weighting=self._snr_weighting())

    def _checkpointed_networks(self) -> tuple:
        """The networks besides the UNet whose layers gradient checkpointing recomputes, and
        (second) the one writing the reference bank."""
        m = self.module
        return (m.appearance_encoder, m.controlnet), m.appearance_encoder

    def _family_inputs(self, batch: dict) -> dict:
        """The objective's family-specific inputs of a batch (none for MagicAnimate)."""
        return {}

    def _denoiser(self, unet, module):
        """The family's denoiser around the full ``unet`` and copies of ``module``'s networks."""
        from kinemate.models.magicanimate import MagicAnimateDenoiser

        return MagicAnimateDenoiser(
            unet.eval(), copy.deepcopy(module.appearance_encoder).eval(),
            copy.deepcopy(module.controlnet).eval(), text_embeds_uncond=self.text.clone(),
            text_embeds_cond=self.text.clone())

    # -- shared -------------------------------------------------------------------------
    def _snr_weighting(self) -> str:
        return self.stage.snr_weighting or self._default_snr_weighting()

    def _starting_model(self, previous: Path | None) -> Path | None:
        """The previous stage's result when it is a whole model (not just a VAE), else
        model.init; None when the stage trains from scratch."""
        if previous is not None and (previous / "kinemate.json").is_file():
            return previous
        return Path(self.cfg.model.init) if self.cfg.model.init else None

    def _load_components(self, start: Path):
        """The components of the model folder ``start``, with its VAE scaling, scheduler,
        sampling options, name and control kind."""
        pipe = _load_pipeline_folder(start)
        if set(pipe.denoiser.components()) != set(self.component_names):
            raise ConfigError(
                f"{start} is a {pipe.family} model, which model.family {self.cfg.model.family} "
                f"cannot train (it has {', '.join(pipe.denoiser.components())}); set "
                "model.family to the model's design or start from another model")
        self.scaling = float(pipe.vae_scaling_factor)
        self.scheduler_config = dict(pipe.scheduler.config)
        self.options = pipe.options
        self.meta.update(name=self.cfg.model.name or pipe.name, control_kind=pipe.control_kind)
        return self._components_of(pipe)

    def _trained_vae(self, previous: Path | None):
        """The autoencoder a from-scratch model is built around: the previous stage's result
        or model.vae (its scaling factor; no scheduler or options yet)."""
        cfg = self.cfg
        vae_dir = previous if previous is not None else (
            Path(cfg.model.vae) if cfg.model.vae else None)
        if vae_dir is None:
            raise ConfigError("training from scratch needs a VAE: add a 'vae' stage before "
                              f"{self.stage.kind} or set model.vae (or model.init)")
        vae = load_vae(vae_dir)
        self.scaling = float(vae.config.scaling_factor)
        self.scheduler_config = None
        self.options = None
        return vae

    def _stage1_unet(self, parts) -> torch.nn.Module:
        """Temporal modules off: a UNet without them, same spatial weights (the motion weights
        are kept aside and put back when the result is saved). The family's reference networks
        train; the UNet's spatial layers when ``train_unet_spatial`` (default: the family's)."""
        from kinemate.train import arch as A

        unet = A.build_unet_from_config(self.unet_full_config, motion=False)
        sd = parts.unet.state_dict()
        self.motion_state = {k: v.clone() for k, v in sd.items() if ".motion_modules." in k}
        unet.load_state_dict({k: v for k, v in sd.items() if ".motion_modules." not in k})
        train_spatial = self.stage.train_unet_spatial
        if train_spatial is None:
            train_spatial = self._default_train_unet_spatial()
        unet.requires_grad_(bool(train_spatial))
        self._train_conditioning(parts, True)
        return unet

    def _stage2_unet(self, parts) -> torch.nn.Module:
        """Only the UNet's temporal modules train; everything else is frozen."""
        unet = parts.unet
        if not unet.motion_module_keys():
            raise ConfigError("stage2 trains temporal modules but the UNet has none; set "
                              "model.arch.motion.use_motion_module to true")
        self.motion_state = None
        unet.requires_grad_(False)
        for name, p in unet.named_parameters():
            if ".motion_modules." in name:
                p.requires_grad_(True)
        self._train_conditioning(parts, False)
        return unet

    def _noise_scheduler(self):
        """The scheduler (the starting model's, else the family's, updated by
        model.scheduler); its config is what the result is saved with."""
        from kinemate.pipeline.animation import make_scheduler

        sched = make_scheduler({**(self.scheduler_config or self._family_scheduler()),
                                **(self.cfg.model.scheduler or {})})
        self.scheduler_config = {**dict(sched.config), "_class_name": type(sched).__name__}
        return sched

    def _training_alphas(self, sched) -> torch.Tensor:
        """The cumulative alphas the training noise is drawn with: the scheduler's, with the
        betas of ``model.train_scheduler`` (default: the family's) where set; the stage's
        ``timestep_range`` must lie within."""
        from kinemate.pipeline.animation import make_scheduler

        overrides = self.cfg.model.train_scheduler
        if overrides is None:
            overrides = self._default_train_scheduler()
        wrong = sorted(set(overrides) - TRAIN_SCHEDULER_KEYS)
        if wrong:
            raise ConfigError(f"model.train_scheduler may set only the betas "
                              f"({', '.join(sorted(TRAIN_SCHEDULER_KEYS))}), not {wrong}; the "
                              "prediction type and timesteps are model.scheduler's")
        if overrides:
            sched = make_scheduler({**self.scheduler_config, **overrides})
        alphas = _alphas_cumprod(sched)
        lo_hi = self.stage.timestep_range
        if lo_hi is not None and lo_hi[1] >= len(alphas):
            raise ConfigError(
                f"stage {self.stage.id}: timestep_range {lo_hi} goes past the "
                f"scheduler's last timestep {len(alphas) - 1}; lower its upper end"
            )
        return alphas

    def enable_gradient_checkpointing(self) -> None:
        from diffusers.models.transformers.transformer_2d import Transformer2DModel

        networks, writer = self._checkpointed_networks()
        for model in networks:
            if getattr(model, "_supports_gradient_checkpointing", False):
                model.enable_gradient_checkpointing()
        # the reference network's transformers write the reference bank: recomputing them
        # in backward (when the bank is in read mode) would be wrong, so only its resnets are
        # checkpointed
        for m in writer.modules():
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
        if self.cfg.noise_offset > 0:  # one offset per video and channel (Guttenberg 2023)
            noise = noise + self.cfg.noise_offset * torch.randn(
                (b, latents.shape[1], 1, 1, 1), generator=gen)
        lo, hi = self.stage.timestep_range or (0, len(self.module.alphas_cumprod) - 1)
        timesteps = torch.randint(lo, hi + 1, (b,), generator=gen)
        n_uncond = int((torch.rand(b, generator=gen) < self.stage.reference_dropout).sum())
        return {"ref_latents": ref_latents, "latents": latents, "control": control.to(self.device),
                "noise": noise.to(self.device), "timesteps": timesteps.to(self.device),
                "n_uncond": n_uncond, **self._family_inputs(batch)}

    def build_pipeline(self, module: DenoisingObjective):
        """An :class:`AnimationPipeline` of the current weights (full UNet with temporal
        modules: in stage 1 the spatial weights are trained and the motion weights untouched)."""
        from kinemate.pipeline.animation import AnimationPipeline, make_scheduler
        from kinemate.pipeline.options import LEGACY_NAMES, SamplingOptions
        from kinemate.train import arch as A

        if self.motion_state is not None:
            with torch.random.fork_rng(devices=[]):  # its init is overwritten right after
                unet = A.build_unet_from_config(self.unet_full_config, motion=True)
            sd = {k: v.detach().clone() for k, v in module.unet.state_dict().items()}
            sd.update(self.motion_state)
            unet.load_state_dict(sd)
            unet.to(self.device)  # built on the CPU; every other part is already on the device
        else:
            unet = copy.deepcopy(module.unet)
        # the config's model.sampling wins over the options of the model a stage started from
        # (as model.scheduler does for the scheduler)
        sampling = {LEGACY_NAMES.get(k, k): v for k, v in _tiny_sampling_defaults(self.cfg).items()}
        opts = (self.options or SamplingOptions()).merged(sampling)
        return AnimationPipeline(
            self._denoiser(unet, module), copy.deepcopy(self.vae).eval(),
            make_scheduler({**self.scheduler_config}), name=self.meta["name"],
            family=self.family, control_kind=self.meta["control_kind"],
            default_size=tuple(self.meta["default_size"]), vae_scaling_factor=self.scaling,
            options=opts)

    def save_result(self, module: DenoisingObjective, out_dir: Path) -> None:
        pipe = self.build_pipeline(module)
        for m in pipe.components.values():
            m.requires_grad_(False)
        pipe.save_pretrained(out_dir)

    @torch.no_grad()
    def sample(self, module: DenoisingObjective, path: Path) -> None:
        """reference | control | result | ground truth of a held-out clip, as an MP4."""
        from kinemate.io import side_by_side, write_video

        pipe = self.build_pipeline(module)
        frames, controls = heldout_clip(self.cfg, self.cfg.sample_seed, self.data)
        out = pipe(frames[0], controls, steps=self.cfg.sample_steps, seed=0,
                   progress=False)
        grid = [side_by_side([frames[0], c, o, g]) for c, o, g in zip(controls, out, frames)]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, np.stack(grid), fps=8)


# the scheduler keys model.train_scheduler may change (the betas)
TRAIN_SCHEDULER_KEYS = frozenset({"beta_schedule", "beta_start", "beta_end", "trained_betas",
                                  "rescale_betas_zero_snr"})


def diffusion_task_class(family: str) -> type:
    """The task class that trains ``model.family``."""
    if family == "animate-anyone":
        from kinemate.train.animate_anyone import AnimateAnyoneTask

        return AnimateAnyoneTask
    return DiffusionTask


def heldout_clip(cfg: TrainConfig, seed: int,
                 data: DataConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frames and control maps of one held-out synthetic clip at the training size (of
    ``data``, default ``cfg.data``)."""
    from dataclasses import replace

    from kinemate.train.data import synth_clip

    data = data or cfg.data
    if seed < data.heldout_seed_start:
        raise ConfigError(f"seed {seed} is a training seed; held-out seeds start at "
                          f"{data.heldout_seed_start}")
    return synth_clip(seed, replace(data, frame_stride=1))


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
    for m in pipe.components.values():
        m.requires_grad_(True)
    return pipe


def mix_seed_int(*parts) -> int:
    from kinemate.train.data import mix_seed

    return mix_seed(*parts) % (2**31)
