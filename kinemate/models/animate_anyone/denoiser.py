"""Animate Anyone's part of one sampling step (SPEC §3-4), behind the engine's denoiser
interface (see :mod:`kinemate.models.magicanimate.denoiser` for the interface itself).

What differs from MagicAnimate:

* conditioning: one CLIP *image* token (the reference photo's ``image_embeds``), a zero
  embedding for the unconditional half; no text;
* the reference UNet runs **once per video**, at timestep 0 on the clean reference latent,
  at the first step (as the official ``i == 0``); every step and window reads that bank.
  Its 16 transformer blocks all write ("full" fusion); the unconditional half never reads;
* pose: the pose guider's features are added to ``conv_in``'s output. They do not depend on
  the timestep; the official code computes them once for the whole video, kinemate per frame
  when a window needs them (:meth:`frame_features`, cached by the engine while windows need
  the frame), so memory stays bounded in video length, at the price of re-running the small
  pose guider once per frame and step (same numbers);
* the denoising UNet normalises each frame on its own and has a motion module in its mid block.

Deliberate difference: without guidance (``guidance <= 1``) the official pipeline *sums* the
predictions of overlapping windows instead of averaging them (SPEC §8.5); the engine averages,
as it does with guidance. The golden case pinning the sum is checked up to that factor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from torch import nn

from kinemate.errors import InputError, UsageError
from kinemate.models.animate_anyone.preprocess import clip_pixels
from kinemate.models.denoiser import VideoUNetDenoiser
from kinemate.models.frames import to_device
from kinemate.models.guidance import GuidanceRows
from kinemate.models.reference import ReferenceBank


@dataclass
class VideoState:
    """What a sampling call fixes once: reference latent, CLIP embedding, controls, bank."""

    ref_latents: torch.Tensor  # (1, C, h, w)
    controls: Sequence[np.ndarray]
    image_embeds: torch.Tensor  # (1, 1, D): the conditional context
    bank: ReferenceBank
    written: bool = False  # the reference UNet has filled the bank


@dataclass
class StepState:
    video: VideoState
    model_input: torch.Tensor  # (1, C, N, h, w)
    t: torch.Tensor
    rows: GuidanceRows


class AnimateAnyoneDenoiser(VideoUNetDenoiser):
    """Denoising video UNet + reference UNet + pose guider + CLIP image encoder."""

    default_max_context = 32  # positional table length of the Animate Anyone release
    component_names = ("unet", "reference_unet", "pose_guider", "image_encoder")

    def __init__(self, unet: nn.Module, reference_unet: nn.Module, pose_guider: nn.Module,
                 image_encoder: nn.Module):
        self.unet, self.reference_unet = unet, reference_unet
        self.pose_guider, self.image_encoder = pose_guider, image_encoder

    # -- what the engine asks of every family --------------------------------------------
    def start_video(self, ref_latents: torch.Tensor, controls: Sequence[np.ndarray], *,
                    reference: np.ndarray | None = None, reference_bank_dtype: str = "float16",
                    lean: bool = True, window_batch: int = 1,
                    image_embeds: torch.Tensor | None = None) -> VideoState:
        """Fix what a sampling call shares: the CLIP embedding of ``reference`` (uint8
        ``(H, W, 3)``) unless ``image_embeds`` ``(1, D)`` is given, and an empty bank (the
        reference UNet fills it at the first step, when the guidance rows are known)."""
        if window_batch > 1 and not lean:
            raise UsageError("option window_batch > 1 needs the lean reference path (option "
                             "lean on)")
        if image_embeds is None:
            if reference is None:
                raise InputError("Animate Anyone conditions on the reference image through "
                                 "CLIP: pass the `reference` image or its `image_embeds`")
            image_embeds = self.image_embeds(reference)
        context = image_embeds.reshape(1, 1, -1).to(self.device, self.dtype)
        bank_dtype = None if reference_bank_dtype in (None, "none") else getattr(
            torch, reference_bank_dtype)
        return VideoState(ref_latents, controls, context,
                          ReferenceBank(bank_dtype=bank_dtype, lean=lean))

    def start_step(self, video: VideoState, model_input: torch.Tensor, t,
                   rows: GuidanceRows) -> StepState:
        """At the first step only: the reference UNet writes the bank (timestep 0)."""
        if not video.written:
            self.write_reference(video.ref_latents, video.image_embeds, video.bank, rows.cfg)
            video.written = True
        return StepState(video, model_input, t, rows)

    def frame_features(self, step: StepState, frames: list[int]) -> list[torch.Tensor]:
        """Pose-guider features ``(C0, h, w)`` of ``frames``, one per frame."""
        features = self.pose_features(step.video.controls, frames)
        return list(features.unbind(0))

    @torch.no_grad()
    def predict(self, step: StepState, features: list[list[torch.Tensor]],
                latents: torch.Tensor) -> torch.Tensor:
        """Prediction of ``k`` windows ``latents`` ``(k, C, f, h, w)`` -> ``(rows, C, f, h, w)``
        laid out by ``step.rows``; ``features[j]`` are window ``j``'s pose features."""
        pose = torch.stack([torch.stack(frames, dim=1) for frames in features])
        rows = step.rows.with_videos(latents.shape[0])
        return self.unet_window(latents, step.t, pose, step.video.bank,
                                step.video.image_embeds, rows)

    def end_video(self, video: VideoState) -> None:
        video.bank.clear()
        video.written = False

    # -- building blocks (each usable alone) ----------------------------------------------
    @torch.no_grad()
    def image_embeds(self, image: np.ndarray) -> torch.Tensor:
        """CLIP ``image_embeds`` ``(1, D)`` of a uint8 ``(H, W, 3)`` RGB image, squashed to the
        encoder's input size as the official pipeline does (:func:`.preprocess.clip_pixels`)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"reference must be a uint8 RGB image (H, W, 3), got {image.dtype} "
                             f"{image.shape}; convert it to RGB first")
        size = int(self.image_encoder.config.image_size)
        pixels = clip_pixels(image, size).to(self.device, self.dtype)
        return self.image_encoder(pixel_values=pixels).image_embeds

    def uncond_embeds(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """The unconditional CFG context: a zero embedding (not CLIP of a blank image)."""
        return torch.zeros_like(image_embeds)

    def control_tensor(self, controls: Sequence[np.ndarray], frames: list[int]) -> torch.Tensor:
        """Pose frames ``controls[i]`` (uint8 HWC RGB) -> ``(n, 3, H, W)`` in [0, 1]."""
        batch = np.stack([np.asarray(controls[i]) for i in frames])
        x = to_device(batch, self.device, self.dtype) / 255.0
        return rearrange(x, "n h w c -> n c h w")

    @torch.no_grad()
    def pose_features(self, controls: Sequence[np.ndarray], frames: list[int]) -> torch.Tensor:
        """Pose guider on ``frames`` -> ``(n, C0, H/8, W/8)``."""
        return self.pose_guider(self.control_tensor(controls, frames))

    @torch.no_grad()
    def write_reference(self, ref_latents: torch.Tensor, image_embeds: torch.Tensor,
                        bank: ReferenceBank, cfg: bool) -> ReferenceBank:
        """Reference UNet on the clean reference latent at timestep 0. Official path with CFG:
        batch 2 with ``[zeros; image_embeds]`` (the first row is never read); lean path or
        no CFG: batch 1."""
        if cfg and not bank.lean:
            latents = ref_latents.repeat(2, 1, 1, 1)
            context = torch.cat([self.uncond_embeds(image_embeds), image_embeds])
        else:
            latents, context = ref_latents, image_embeds
        t0 = torch.zeros((), dtype=torch.long, device=latents.device)
        return self.reference_unet.write(latents, t0, context, bank)

    @torch.no_grad()
    def unet_window(self, latents: torch.Tensor, t, pose: torch.Tensor, bank: ReferenceBank,
                    image_embeds: torch.Tensor, rows: GuidanceRows) -> torch.Tensor:
        """Denoising UNet on ``k`` windows ``(k, 4, f, h, w)`` with pose features
        ``(k, C0, f, h, w)`` (the same for both halves) -> ``(rows.rows, 4, f, h, w)``."""
        k, f = latents.shape[0], latents.shape[2]
        cond = image_embeds.expand(k, -1, -1)
        context = rows.stack(cond, self.uncond_embeds(cond))
        return self.unet(rows.stack(latents), t, context,
                         cross_attention_kwargs={"reference": bank.reader(f, rows.uncond_videos)},
                         conv_in_residual=rows.stack(pose))
