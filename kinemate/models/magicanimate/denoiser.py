"""MagicAnimate's part of one sampling step (SPEC §7), behind the engine's denoiser interface.

The interface every family implements (see docs/engine.md, "Adding a model family"):

* ``start_video(ref_latents, controls, reference=, **options)`` — once per call: here the
  reference latent and the text embeddings (the empty prompt) are fixed and a
  :class:`~kinemate.models.ReferenceBank` is created;
* ``start_step(video, model_input, t, rows)`` — once per denoising step: the appearance
  encoder runs on the clean reference latent at ``t`` and fills the bank;
* ``frame_features(step, frames)`` — per-frame work of a step (ControlNet residuals), which
  the engine caches while windows still need a frame, so each frame runs once per step;
* ``predict(step, features, latents)`` — the denoiser on a group of windows, rows laid out by
  :class:`~kinemate.models.guidance.GuidanceRows` (the video UNet reads the bank through a
  read view);
* ``end_video(video)``, ``components()``, ``latent_channels``, ``max_context_frames``.

The engine (:class:`kinemate.pipeline.AnimationPipeline`) owns the rest: windows, fusion,
guidance arithmetic, scheduler, noise, decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from torch import nn

from kinemate.errors import UsageError, WeightsError
from kinemate.models.denoiser import VideoUNetDenoiser
from kinemate.models.frames import take_frames, to_device
from kinemate.models.guidance import GuidanceRows
from kinemate.models.reference import ReferenceBank


@dataclass
class VideoState:
    """What a sampling call fixes once: reference latent, text, controls, the bank."""

    ref_latents: torch.Tensor  # (1, C, h, w)
    controls: Sequence[np.ndarray]
    uncond: torch.Tensor  # (1, 77, D)
    cond: torch.Tensor
    bank: ReferenceBank


@dataclass
class StepState:
    """What one denoising step shares between its windows."""

    video: VideoState
    model_input: torch.Tensor  # (1, C, N, h, w), scaled for the scheduler
    t: torch.Tensor
    rows: GuidanceRows


class MagicAnimateDenoiser(VideoUNetDenoiser):
    """Video UNet + appearance encoder + pose ControlNet (+ fixed text embeddings).

    ``text_embeds_uncond``/``_cond``: ``(1, 77, D)``, the empty prompt's CLIP embedding for
    the release (uncond defaults to cond). ``controlnet_conditioning_scale`` scales the
    residuals as diffusers' ControlNet does.
    """

    default_max_context = 24  # positional table length of the MagicAnimate release
    component_names = ("unet", "appearance_encoder", "controlnet")

    def __init__(self, unet: nn.Module, appearance_encoder: nn.Module, controlnet: nn.Module, *,
                 text_embeds_uncond: torch.Tensor | None = None,
                 text_embeds_cond: torch.Tensor | None = None,
                 controlnet_conditioning_scale: float = 1.0):
        self.unet, self.appearance_encoder, self.controlnet = unet, appearance_encoder, controlnet
        self.text_embeds_uncond = text_embeds_uncond
        self.text_embeds_cond = text_embeds_cond
        self.controlnet_conditioning_scale = controlnet_conditioning_scale

    # -- what the engine asks of every family --------------------------------------------
    def start_video(self, ref_latents: torch.Tensor, controls: Sequence[np.ndarray], *,
                    reference: np.ndarray | None = None, reference_bank_dtype: str = "float16",
                    lean: bool = True, window_batch: int = 1,
                    text_embeds_uncond: torch.Tensor | None = None,
                    text_embeds_cond: torch.Tensor | None = None) -> VideoState:
        """Fix what a sampling call shares. ``text_embeds_*`` replace the stored ones;
        ``reference`` (the image) is not used: MagicAnimate sees the reference only through
        its latent."""
        if window_batch > 1 and not lean:
            raise UsageError("option window_batch > 1 needs the lean reference path (option "
                             "lean on)")
        uncond, cond = self.text(text_embeds_uncond, text_embeds_cond)
        bank_dtype = None if reference_bank_dtype in (None, "none") else getattr(
            torch, reference_bank_dtype)
        return VideoState(ref_latents, controls, uncond, cond,
                          ReferenceBank(bank_dtype=bank_dtype, lean=lean))

    def start_step(self, video: VideoState, model_input: torch.Tensor, t,
                   rows: GuidanceRows) -> StepState:
        """The appearance encoder writes the bank at ``t`` (once per step)."""
        self.write_reference(video.ref_latents, t, video.bank, video.uncond, video.cond, rows.cfg)
        return StepState(video, model_input, t, rows)

    def frame_features(self, step: StepState, frames: list[int]) -> list[list[torch.Tensor]]:
        """ControlNet residuals of ``frames`` of the step's input, one list of levels per
        frame (the engine caches them while windows need them: each frame once per step)."""
        video = step.video
        down, mid = self.controlnet_residuals(take_frames(step.model_input, frames), step.t,
                                              self.control_tensor(video.controls, frames),
                                              video.cond)
        return [[r[j] for r in down] + [mid[j]] for j in range(len(frames))]

    @torch.no_grad()
    def predict(self, step: StepState, features: list[list[list[torch.Tensor]]],
                latents: torch.Tensor) -> torch.Tensor:
        """Noise prediction of ``k`` windows ``latents`` ``(k, C, f, h, w)`` ->
        ``(rows, C, f, h, w)`` laid out by ``step.rows`` for ``k`` videos; ``features[j]``
        are the :meth:`frame_features` of window ``j``'s frames, in window order."""
        # window j: frames x levels -> levels of (1, C, f, h', w'); then windows batched
        levels = [[torch.stack([frame[k] for frame in frames], dim=1)[None]
                   for k in range(len(frames[0]))] for frames in features]
        stacked = [torch.cat(level) for level in zip(*levels)]
        rows = step.rows.with_videos(latents.shape[0])
        video = step.video
        return self.unet_window(latents, step.t, stacked[:-1], stacked[-1], video.bank,
                                video.uncond, video.cond, rows, video.ref_latents)

    def end_video(self, video: VideoState) -> None:
        video.bank.clear()

    # -- building blocks (each usable alone) ----------------------------------------------
    def text(self, uncond=None, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The (uncond, cond) text embeddings ``(1, 77, D)``; uncond defaults to cond when
        only cond is known (both are the empty prompt for MagicAnimate)."""
        cond = cond if cond is not None else self.text_embeds_cond
        uncond = uncond if uncond is not None else self.text_embeds_uncond
        if cond is None:
            raise WeightsError("this model has neither a CLIP text encoder nor stored text "
                               "embeddings; put SD1.5's text_encoder/ and tokenizer/ into "
                               "stable-diffusion-v1-5/ (or a text_embeddings.safetensors with "
                               "'uncond'/'cond' into the weights folder), or pass "
                               "text_embeds_cond= in Python")
        uncond = cond if uncond is None else uncond
        return (uncond.to(self.device, self.dtype), cond.to(self.device, self.dtype))

    def control_tensor(self, controls: Sequence[np.ndarray], frames: list[int]) -> torch.Tensor:
        """Control frames ``controls[i]`` (uint8 HWC RGB) -> ``(n, 3, H, W)`` in [0, 1]."""
        batch = np.stack([np.asarray(controls[i]) for i in frames])
        x = to_device(batch, self.device, self.dtype) / 255.0
        return rearrange(x, "n h w c -> n c h w")

    @torch.no_grad()
    def write_reference(self, ref_latents: torch.Tensor, t, bank: ReferenceBank,
                        uncond: torch.Tensor, cond: torch.Tensor, cfg: bool) -> ReferenceBank:
        """Appearance encoder on the clean reference latent at ``t``. Official path with CFG:
        batch 2 with ``[uncond; cond]`` text; lean path or no CFG: batch 1, cond text."""
        if cfg and not bank.lean:
            latents, text = ref_latents.repeat(2, 1, 1, 1), torch.cat([uncond, cond])
        else:
            latents, text = ref_latents, cond
        return self.appearance_encoder.write(latents, t, text, bank)

    @torch.no_grad()
    def controlnet_residuals(self, latents: torch.Tensor, t, control: torch.Tensor,
                             cond: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """ControlNet per frame: ``latents`` (1, 4, n, h, w), ``control`` (n, 3, H, W), cond
        text for every frame -> down residuals [(n, C, h', w')], mid (n, C, h', w')."""
        x = rearrange(latents, "b c f h w -> (b f) c h w")
        down, mid = self.controlnet(x, t, encoder_hidden_states=cond.expand(x.shape[0], -1, -1),
                                    controlnet_cond=control,
                                    conditioning_scale=self.controlnet_conditioning_scale,
                                    return_dict=False)
        return list(down), mid

    @torch.no_grad()
    def unet_window(self, latents: torch.Tensor, t, down: list[torch.Tensor], mid: torch.Tensor,
                    bank: ReferenceBank, uncond: torch.Tensor, cond: torch.Tensor,
                    rows: GuidanceRows, ref_latents: torch.Tensor | None = None) -> torch.Tensor:
        """Video UNet on ``k`` windows ``(k, 4, f, h, w)`` -> ``(rows.rows, 4, f, h, w)``.
        ControlNet residuals ``(k, C, f, h', w')`` and text are the same for both halves;
        ``ref_latents`` (1, C, h, w) reach UNets with ``reference_concat``/
        ``reference_residual`` (zeros in the unconditional rows)."""
        k, f = latents.shape[0], latents.shape[2]
        ref = None
        if ref_latents is not None:
            ref = ref_latents.expand(k, -1, -1, -1)
            ref = rows.stack(ref, torch.zeros_like(ref))
        text = rows.stack(cond.expand(k, -1, -1), uncond.expand(k, -1, -1))
        return self.unet(rows.stack(latents), t, text,
                         down_block_additional_residuals=[rows.stack(r) for r in down],
                         mid_block_additional_residual=rows.stack(mid),
                         cross_attention_kwargs={"reference": bank.reader(f, rows.uncond_videos)},
                         reference_latents=ref)
