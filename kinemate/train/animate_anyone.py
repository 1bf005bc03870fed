"""Moore-AnimateAnyone's two training stages on kinemate's trainer (``model.family:
animate-anyone``).

What differs from MagicAnimate's design (:class:`kinemate.train.tasks.DiffusionTask`), as the
official ``train_stage_1.py`` / ``train_stage_2.py`` do it:

* the networks: denoising video UNet (``reference_fusion="full"``, per-frame GroupNorm,
  AnimateDiff-v2 motion modules with one in the mid block), a reference UNet (the UNet without
  its output head; every transformer block writes), a pose guider whose features are added
  after the UNet's ``conv_in``, and a frozen CLIP image encoder;
* the context of both UNets is the CLIP ``image_embeds`` of the reference frame, one token;
  a sample trained without the reference (``reference_dropout``, 0.1 as the official
  ``uncond_ratio``) gets a zero embedding and no reference attention;
* the reference UNet runs at timestep 0 on the clean reference latent, whatever the target's
  timestep;
* stage 1 trains the reference UNet (except its last up block, as the official script), the
  pose guider and the denoising UNet's spatial layers (``train_unet_spatial`` defaults to
  true: the official stage 1 always trains it); stage 2 only the motion modules;
* the training noise is drawn on ``scaled_linear`` betas rescaled to zero terminal SNR while
  the saved model samples with the ``linear`` zero-SNR DDIM of the release
  (``model.train_scheduler``), v-prediction, and min-SNR weighting in the official form
  (``snr_weighting: min_snr_plus_one``).

Where kinemate deliberately differs from the official scripts, docs/training.md says so.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from kinemate.errors import ConfigError
from kinemate.train.tasks import DenoisingObjective, DiffusionTask

# the tiny from-scratch architecture (model.arch of an animate-anyone config); the motion
# modules are the release's AnimateDiff-v2 ones (mid block, 32-frame positional tables) with
# fewer heads
TINY_AA_ARCH: dict = {
    "unet": {
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [32, 64, 64, 64],
        "layers_per_block": 1,
        "attention_head_dim": 4,  # = number of heads (diffusers naming quirk)
        "cross_attention_dim": 32,  # = the image encoder's projection_dim
        "norm_num_groups": 32,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "sample_size": 16,
    },
    "motion": None,  # None: the release's unet_additional_kwargs with 4 heads (below)
    # PoseGuider widths: n entries downsample by 2^(n-1), which must equal the VAE's factor
    "pose_guider": {"block_out_channels": [16, 32, 32, 64]},
    # transformers CLIPVisionConfig keys (projection_dim: the UNet's cross_attention_dim)
    "image_encoder": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                      "num_attention_heads": 2, "image_size": 64, "patch_size": 16,
                      "hidden_act": "quick_gelu"},
    "vae": None,  # None: kinemate.train.vae.DEFAULT_TINY_VAE
}


def _tiny_motion() -> dict:
    from kinemate.models.animate_anyone.networks import ANIMATE_ANYONE_MOTION_KWARGS

    motion = copy.deepcopy(ANIMATE_ANYONE_MOTION_KWARGS)
    motion["motion_module_kwargs"]["num_attention_heads"] = 4
    return motion


def _merge(base, over):
    """``over`` merged into ``base`` recursively (dicts), else replacing it."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v)
        return out
    return copy.deepcopy(over)


def resolve_aa_arch(arch: dict | None) -> dict:
    """``TINY_AA_ARCH`` updated recursively by ``arch`` (so ``motion: {motion_module_kwargs:
    {num_attention_heads: 2}}`` keeps the other motion keys of the release)."""
    base = {**copy.deepcopy(TINY_AA_ARCH), "motion": _tiny_motion()}
    unknown = sorted(set(arch or {}) - set(base))
    if unknown:
        raise ConfigError(f"unknown model.arch key(s) {unknown} for model.family "
                          f"animate-anyone; valid keys: {sorted(base)}")
    out = _merge(base, dict(arch or {}))
    projection = out["unet"]["cross_attention_dim"]
    given = out["image_encoder"].get("projection_dim", projection)
    if given != projection:
        raise ConfigError(f"model.arch.image_encoder.projection_dim {given} must equal the "
                          f"UNet's cross_attention_dim {projection} (the CLIP embedding is the "
                          "UNets' cross-attention context); leave it out to use that")
    out["image_encoder"]["projection_dim"] = projection
    enc = out["image_encoder"]
    if enc.get("image_size", 224) % enc.get("patch_size", 32):
        raise ConfigError("model.arch.image_encoder.image_size must be a multiple of its "
                          "patch_size")
    if len(out["pose_guider"]["block_out_channels"]) < 2:
        raise ConfigError("model.arch.pose_guider.block_out_channels needs at least 2 "
                          "entries (n entries downsample by 2^(n-1))")
    return out


class AAComponents(NamedTuple):
    """The parts of an Animate Anyone model a stage starts with (``unet`` with temporal
    modules)."""

    unet: torch.nn.Module
    reference_unet: torch.nn.Module
    pose_guider: torch.nn.Module
    image_encoder: torch.nn.Module
    vae: torch.nn.Module


class AnimateAnyoneObjective(DenoisingObjective):
    """Denoising UNet + reference UNet + pose guider; ``forward`` returns the loss (see
    :class:`~kinemate.train.tasks.DenoisingObjective`), with the reference frame's CLIP
    ``image_embeds`` ``(B, 1, D)`` as the family's input."""

    def __init__(self, unet, reference_unet, pose_guider, alphas_cumprod: torch.Tensor, *,
                 frozen_conditioning: bool, snr_gamma: float = 0.0,
                 prediction_type: str = "v_prediction", temporal_loss_weight: float = 0.0,
                 snr_weighting: str = "min_snr_plus_one"):
        super().__init__(alphas_cumprod, frozen_conditioning=frozen_conditioning,
                         snr_gamma=snr_gamma, prediction_type=prediction_type,
                         temporal_loss_weight=temporal_loss_weight, snr_weighting=snr_weighting)
        self.unet = unet
        self.reference_unet = reference_unet
        self.pose_guider = pose_guider

    def predict(self, noisy, timesteps, ref_latents, control, n_uncond: int, image_embeds):
        from einops import rearrange

        from kinemate.models.reference import ReferenceBank

        f = noisy.shape[2]
        n = n_uncond
        # the context: the reference's CLIP embedding; a zero embedding where the reference is
        # dropped (the unconditional half of guidance at inference)
        context = image_embeds.to(noisy.dtype)
        context = torch.cat([torch.zeros_like(context[:n]), context[n:]])
        # the bank keeps the graph of the written features (gradients reach the reference UNet
        # through the denoising UNet's reference attention); the first n videos do not read it
        bank = ReferenceBank(bank_dtype=None, lean=False, detach=False)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_conditioning):
            self.reference_unet(ref_latents, torch.zeros_like(timesteps), context, bank.writer())
            pose = self.pose_guider(rearrange(control, "b c f h w -> (b f) c h w"))
        pose = rearrange(pose, "(b f) c h w -> b c f h w", f=f)
        return self.unet(noisy, timesteps, context,
                         cross_attention_kwargs={"reference": bank.reader(f, uncond_videos=n)},
                         conv_in_residual=pose)


class AnimateAnyoneTask(DiffusionTask):
    """Stage ``stage1`` (frame pairs: reference UNet + pose guider + denoising UNet spatial
    layers) or ``stage2`` (clips: motion modules only) of a Moore-AnimateAnyone model; the
    result is a kinemate-format folder of the ``animate-anyone`` family."""

    family = "animate-anyone"
    component_names = ("unet", "reference_unet", "pose_guider", "image_encoder")

    def _resolve_arch(self, arch: dict) -> dict:
        return resolve_aa_arch(arch)

    def _family_scheduler(self) -> dict:
        from kinemate.models.animate_anyone import ANIMATE_ANYONE_SCHEDULER

        return ANIMATE_ANYONE_SCHEDULER

    def _default_train_scheduler(self) -> dict:
        # train_stage_{1,2}.py build their training scheduler from the validation one with
        # beta_schedule switched to scaled_linear (zero-SNR rescale and v-prediction kept)
        return {"beta_schedule": "scaled_linear"}

    def _default_snr_weighting(self) -> str:
        return "min_snr_plus_one"

    def _default_train_unet_spatial(self) -> bool:
        return True  # the official stage 1 trains the whole denoising UNet

    def _components_of(self, pipe) -> AAComponents:
        return AAComponents(pipe.unet, pipe.reference_unet, pipe.pose_guider,
                            pipe.image_encoder, pipe.vae)

    def _build_components(self, previous: Path | None) -> AAComponents:
        """New networks of ``model.arch`` around a trained VAE; the reference UNet starts as a
        copy of the denoising UNet's spatial layers (the official stage 1 starts both from
        the same SD UNet)."""
        from kinemate.models.animate_anyone import DEFAULT_OPTIONS, networks
        from kinemate.models.patch_vae import latent_downsample
        from kinemate.pipeline.options import SamplingOptions
        from kinemate.train import arch as A

        vae = self._trained_vae(previous)
        self.options = SamplingOptions().merged(DEFAULT_OPTIONS)
        arch = self.arch
        guider_widths = list(arch["pose_guider"]["block_out_channels"])
        factor = latent_downsample(vae)
        if 2 ** (len(guider_widths) - 1) != factor:
            raise ConfigError(
                f"model.arch.pose_guider.block_out_channels {guider_widths} downsample by "
                f"{2 ** (len(guider_widths) - 1)}, the VAE by {factor}; give it "
                f"{factor.bit_length()} entries")
        channels = int(vae.config.latent_channels)
        if {int(arch["unet"]["in_channels"]), int(arch["unet"]["out_channels"])} != {channels}:
            raise ConfigError(f"the VAE has {channels} latent channels: set model.arch.unet "
                              f"in_channels and out_channels to {channels}")
        unet = networks.denoising_unet(arch["unet"], arch["motion"])
        reference = networks.reference_unet(arch["unet"])
        A.copy_matching(reference, unet)
        guider = networks.PoseGuider(
            conditioning_embedding_channels=int(arch["unet"]["block_out_channels"][0]),
            block_out_channels=tuple(guider_widths))
        clip = networks.image_encoder(arch["image_encoder"])
        return AAComponents(unet, reference, guider, clip, vae)

    def _train_conditioning(self, parts: AAComponents, train: bool) -> None:
        """Stage 1: the pose guider and the reference UNet train, except the reference UNet's
        last up block (its outputs past the last written feature reach nothing; the official
        script freezes its ``up_blocks.3``); stage 2 freezes them. CLIP never trains."""
        parts.pose_guider.requires_grad_(train)
        parts.reference_unet.requires_grad_(train)
        if train:
            parts.reference_unet.up_blocks[-1].requires_grad_(False)
        parts.image_encoder.requires_grad_(False)

    def _objective(self, unet, parts: AAComponents, alphas, prediction_type: str, *,
                   frozen_conditioning: bool) -> AnimateAnyoneObjective:
        # the frozen image encoder stays with the task, as the VAE does: it makes the
        # objective's inputs (prepare) and goes into the saved model
        self.image_encoder = parts.image_encoder.to(self.device).eval().requires_grad_(False)
        return AnimateAnyoneObjective(unet, parts.reference_unet, parts.pose_guider, alphas,
                                      frozen_conditioning=frozen_conditioning,
                                      snr_gamma=self.stage.snr_gamma,
                                      temporal_loss_weight=self.stage.temporal_loss_weight,
                                      prediction_type=prediction_type,
                                      snr_weighting=self._snr_weighting())

    def _checkpointed_networks(self) -> tuple:
        return (self.module.reference_unet,), self.module.reference_unet

    def _family_inputs(self, batch: dict) -> dict:
        return {"image_embeds": self.image_embeds(batch["reference"])}

    @torch.no_grad()
    def image_embeds(self, reference: torch.Tensor) -> torch.Tensor:
        """CLIP ``image_embeds`` ``(B, 1, D)`` of reference frames ``(B, 3, H, W)`` in [-1, 1],
        preprocessed as at inference (:func:`kinemate.models.animate_anyone.preprocess.
        clip_pixels`: squashed to the encoder's size, CLIP mean/std)."""
        from kinemate.models.animate_anyone.preprocess import clip_pixels

        frames = ((reference.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        frames = frames.permute(0, 2, 3, 1).cpu().numpy()
        size = int(self.image_encoder.config.image_size)
        pixels = torch.cat([clip_pixels(np.ascontiguousarray(f), size) for f in frames])
        embeds = self.image_encoder(pixel_values=pixels.to(self.device)).image_embeds
        return embeds.float().unsqueeze(1)

    def _denoiser(self, unet, module):
        from kinemate.models.animate_anyone import AnimateAnyoneDenoiser

        return AnimateAnyoneDenoiser(unet.eval(), copy.deepcopy(module.reference_unet).eval(),
                                     copy.deepcopy(module.pose_guider).eval(),
                                     copy.deepcopy(self.image_encoder).eval())


__all__ = ["AAComponents", "AnimateAnyoneObjective", "AnimateAnyoneTask", "TINY_AA_ARCH",
           "resolve_aa_arch"]
