"""Text2Video-Zero's part of a sampling step, behind the engine's denoiser interface.

Frozen Stable Diffusion 1.5 (+ the OpenPose ControlNet v1.0 in pose mode) with cross-frame
attention on every attention layer of the UNet **and** the ControlNet
(:mod:`.attention`): in each guidance branch, every frame attends to the keys/values of
frame 0 of its video. There is no reference photo: appearance comes from the text prompt.

Two modes, chosen by the input:

* **pose** (controls given): all frames start from the same initial latent (the engine's
  ``noise_tiling=1``) and the ControlNet gives each frame its pose;
* **text** (no controls): :meth:`T2VZDenoiser.initial_latents` runs frame 1 alone to ``T1`` and
  ``T0``, warps copies of it by the motion field, jumps them back to ``T1`` and hands the
  engine the whole video at ``T1`` with the rest of the schedule (:mod:`.motion`).

Long videos: the engine's windows are the family's chunks (:func:`chunk_windows`); a window
that is not the whole video gets frame 0 prepended as its anchor (its prediction dropped), as
the reference code's ``frame_ids = [0] + chunk``. Because every frame attends only to itself
and frame 0, a frame's result does not depend on the chunking (up to batch-size float noise),
and the networks hold one chunk's activations at a time: memory is flat in video length.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from torch import nn

from kinemate.errors import InputError, NumericsError, UsageError
from kinemate.models.guidance import GuidanceRows
from kinemate.models.text2video_zero.attention import check_installed, install
from kinemate.models.text2video_zero.motion import (jump, jump_alpha, jump_schedule,
                                                    warp_latents)


def chunk_windows(num_frames: int, chunk_size: int) -> list[list[int]]:
    """The frames each network call denoises. One window of the whole video when it fits in
    ``chunk_size`` frames; otherwise the reference chunks ``arange(0, F, chunk_size - 1)``,
    each of ``chunk_size - 1`` new frames (frame 0 is prepended as the anchor when the
    window runs, so a call holds ``chunk_size`` frames)."""
    if num_frames < 1:
        raise UsageError("need at least one frame")
    if chunk_size < 2 and num_frames > chunk_size:
        raise UsageError("`context_frames` (the chunk size) must be at least 2: frame 0 plus "
                         "one new frame")
    if num_frames <= chunk_size:
        return [list(range(num_frames))]
    step = chunk_size - 1
    return [list(range(s, min(s + step, num_frames))) for s in range(0, num_frames, step)]


@dataclass
class VideoState:
    """What a sampling call fixes once."""

    controls: Sequence | None  # None: text mode
    num_frames: int
    height: int  # pixels
    width: int
    uncond: torch.Tensor  # (1, 77, D)
    cond: torch.Tensor
    anchor_control: torch.Tensor | None  # (1, 3, H, W): frame 0's pose map
    controlnet_scale: float
    motion: tuple[float, float]
    t0: int | None
    t1: int | None


@dataclass
class StepState:
    video: VideoState
    anchor: torch.Tensor  # (1, C, h, w): frame 0's model input at this step
    t: torch.Tensor
    rows: GuidanceRows


class T2VZDenoiser:
    """SD1.5 UNet + OpenPose ControlNet + CLIP text encoder, with cross-frame attention.

    ``prompt_suffix`` / ``negative_prompt``: per mode (``"pose"``, ``"text"``), what the preset
    adds to every prompt and uses when the call gives no negative prompt (``official``: the
    reference code's; the ``diffusers-docs`` recipe: none). ``cross_frame=False`` puts plain attention back (an
    ablation, as the reference code's ``use_cf_attn``)."""

    component_names = ("unet", "controlnet", "text_encoder")
    latent_factor = 8  # pixels per latent; the family sets it from the VAE (SD's VAE: 8)

    def __init__(self, unet: nn.Module, controlnet: nn.Module | None, text_encoder: nn.Module,
                 tokenizer, *, prompt_suffix: dict | None = None,
                 negative_prompt: dict | None = None,
                 preset: str | None = None, cross_frame: bool = True,
                 motion_field: tuple[float, float] = (12.0, 12.0)):
        self.unet, self.controlnet = unet, controlnet
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.prompt_suffix = dict(prompt_suffix or {})
        self.negative_prompt = dict(negative_prompt or {})
        self.preset, self.cross_frame = preset, cross_frame
        self.motion_field = tuple(motion_field)
        for model in self._attention_models():
            install(model, cross_frame)

    uses_reference = False  # appearance comes from the text prompt
    # the maps OpenPose ControlNet v1.0 was trained on: body only, v1.0 drawing (docs/pose.md)
    pose_render = {"hands": False, "face": False, "style": "v1.0"}
    accepts_no_controls = True  # text mode

    def _attention_models(self):
        return [m for m in (self.unet, self.controlnet) if m is not None]

    def components(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in self.component_names
                if getattr(self, name) is not None}

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def max_context_frames(self) -> int | None:
        return None  # no temporal layers: any chunk length

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def window_schedule(self, num_frames: int, options) -> list[list[int]]:
        """The engine's windows: :func:`chunk_windows` with ``context_frames`` as the chunk
        size (``context_overlap``, ``closed_loop`` and ``context_stride`` do not apply)."""
        return chunk_windows(num_frames, options.context_frames)

    # -- what the engine asks of every family --------------------------------------------
    def start_video(self, ref_latents, controls: Sequence | None, *, reference=None,
                    reference_bank_dtype=None, lean: bool = True, window_batch: int = 1,
                    prompt: str | None = None, negative_prompt: str | None = None,
                    text_embeds_cond: torch.Tensor | None = None,
                    text_embeds_uncond: torch.Tensor | None = None,
                    num_frames: int | None = None, size: tuple[int, int] | None = None,
                    t0: int | None = None, t1: int | None = None,
                    motion_field: tuple[float, float] | None = None,
                    controlnet_scale: float = 1.0) -> VideoState:
        """Fix the text embeddings (``prompt`` + the preset's suffix, the negative prompt or
        the preset's; or ``text_embeds_*`` ``(1, 77, D)`` as given) and frame 0's pose map.
        ``controls`` None is text mode: then ``num_frames`` and ``size`` (W, H) say what to
        make; ``t0``/``t1`` (default: steps - 6 and steps - 3, the paper's 881 and 941 with 50
        steps; at least 0 and 1) and ``motion_field`` (dx, dy pixels per frame on a 512 grid) its dynamics."""
        if reference is not None or ref_latents is not None:
            raise UsageError("Text2Video-Zero takes no reference photo: appearance comes from "
                             "the text `prompt`; leave the reference out")
        for name, model in (("UNet", self.unet), ("ControlNet", self.controlnet)):
            if model is not None:
                check_installed(model, name, self.cross_frame)
        mode = "text" if controls is None else "pose"
        if text_embeds_cond is None:
            if not prompt or not str(prompt).strip():
                raise UsageError("Text2Video-Zero needs a `prompt`: the text describes the "
                                 "person and the scene (there is no reference photo)")
            text_embeds_cond = self.encode_text(str(prompt).strip() + self.prompt_suffix.get(mode, ""))
        if text_embeds_uncond is None:
            neg = self.negative_prompt.get(mode, "") if negative_prompt is None else negative_prompt
            text_embeds_uncond = self.encode_text(neg)
        if controls is None:
            if not num_frames or size is None:
                raise UsageError("text mode (no driving video) needs the number of `frames` "
                                 "and a `size`")
            width, height = size
            anchor = None
            frames = int(num_frames)
        else:
            if self.controlnet is None:
                raise UsageError("this Text2Video-Zero model has no ControlNet, so it cannot "
                                 "follow a driving video; leave the driving video out (text "
                                 "mode) or load the OpenPose ControlNet")
            frames = len(controls)
            anchor = self.control_tensor(controls, [0])
            height, width = anchor.shape[-2:]
        dev, dt = self.device, self.dtype
        return VideoState(controls, frames, int(height), int(width),
                          text_embeds_uncond.to(dev, dt), text_embeds_cond.to(dev, dt), anchor,
                          float(controlnet_scale),
                          tuple(motion_field) if motion_field is not None else self.motion_field,
                          t0, t1)

    def start_step(self, video: VideoState, model_input: torch.Tensor, t,
                   rows: GuidanceRows) -> StepState:
        """Keep frame 0's model input: the anchor every chunk prepends."""
        return StepState(video, model_input[:, :, 0], t, rows)

    def frame_features(self, step: StepState, frames: list[int]) -> list:
        """Pose maps ``(3, H, W)`` in [0, 1] of ``frames`` (None each in text mode). The
        ControlNet itself runs in :meth:`predict`: its attention is cross-frame too."""
        if step.video.controls is None:
            return [None] * len(frames)
        return list(self.control_tensor(step.video.controls, frames).unbind(0))

    @torch.no_grad()
    def predict(self, step: StepState, features: list[list], latents: torch.Tensor) -> torch.Tensor:
        """``k`` windows ``(k, C, f, h, w)`` -> ``(rows, C, f, h, w)`` laid out by
        ``step.rows``; a window shorter than the video gets the anchor (frame 0) prepended."""
        video = step.video
        k, _, f = latents.shape[:3]
        x = rearrange(latents, "k c f h w -> k f c h w")
        pose = None
        if video.controls is not None:
            pose = torch.stack([torch.stack(frames) for frames in features])  # (k, f, 3, H, W)
        anchored = f < video.num_frames
        if anchored:
            x = torch.cat([step.anchor[:, None].expand(k, 1, *x.shape[2:]), x], dim=1)
            if pose is not None:
                pose = torch.cat([video.anchor_control[:, None].expand(k, 1, *pose.shape[2:]),
                                  pose], dim=1)
        frames = x.shape[1]
        eps = self.denoise(rearrange(x, "k f c h w -> (k f) c h w"), step.t,
                           None if pose is None else rearrange(pose, "k f c h w -> (k f) c h w"),
                           video, step.rows.with_videos(k), frames)
        eps = rearrange(eps, "(r f) c h w -> r c f h w", f=frames)
        return eps[:, :, 1:] if anchored else eps

    def end_video(self, video: VideoState) -> None:
        pass

    # -- text mode: the engine starts from the latents this returns ------------------------
    @torch.no_grad()
    def initial_latents(self, video: VideoState, scheduler, timesteps: torch.Tensor, *,
                        seed: int, guidance: float, step_kwargs: dict,
                        **_) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Pose mode: None (the engine's own initial noise, one draw for every frame). Text
        mode (SPEC §3): returns the video latent ``(1, C, F, h, w)`` at ``T1`` and the
        timesteps still to run (``timesteps[-t1-1:]``). One CPU generator seeded with the
        call's seed draws the initial latent ``(1, C, h, w)`` and then the jump noise
        ``(F-1, C, h, w)``, nothing else. ``scheduler`` is left as it was after the first
        loop (the second loop runs on a copy), as the reference restores it."""
        if video.controls is not None:
            return None
        n = len(timesteps)
        t0 = max(0, n - 6) if video.t0 is None else video.t0
        t1 = max(1, n - 3) if video.t1 is None else video.t1
        cut = jump_schedule(timesteps, t0, t1)
        h, w = video.height // self.latent_factor, video.width // self.latent_factor
        generator = torch.Generator("cpu").manual_seed(int(seed))
        c = self.latent_channels
        x = torch.randn((1, c, h, w), generator=generator, dtype=torch.float32)
        # frame 1 as a one-frame video (1, C, 1, h, w): a multistep scheduler's history
        # (PNDM) then broadcasts over all frames in the last loop, as in the reference
        x = (x * scheduler.init_noise_sigma).to(self.device, self.dtype)[:, :, None]
        rows = GuidanceRows.for_scale(guidance)
        x_t1 = self._frame_one(video, x, cut.first, scheduler, rows, guidance, step_kwargs)
        x_t0 = self._frame_one(video, x_t1, cut.second, copy.deepcopy(scheduler), rows,
                               guidance, step_kwargs)
        others = video.num_frames - 1
        warped = warp_latents(x_t0[:, :, 0].repeat(others, 1, 1, 1),
                              list(range(1, video.num_frames)), *video.motion)
        noise = torch.randn((others, c, h, w), generator=generator, dtype=torch.float32)
        alpha = jump_alpha(scheduler.alphas, cut.T0, cut.T1).to(self.device)
        moved = jump(warped, noise.to(self.device, self.dtype), alpha).to(x_t1.dtype)
        latents = torch.cat([x_t1, rearrange(moved, "f c h w -> 1 c f h w")], dim=2)
        return latents, cut.rest

    def _frame_one(self, video, x, timesteps, scheduler, rows, guidance, step_kwargs):
        """Frame 1 alone, ``(1, C, 1, h, w)``, through ``timesteps`` (guided, one scheduler
        step each)."""
        for t in timesteps:
            model_input = scheduler.scale_model_input(x, t)
            eps = self.denoise(model_input[:, :, 0], t, None, video, rows, 1)
            if rows.cfg:
                uncond, cond = eps.chunk(2)
                eps = uncond + guidance * (cond - uncond)
            eps = eps[:, :, None]
            x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
            if not bool(torch.isfinite(x).all()):
                fix = ("run again with `dtype` bfloat16 or float32" if self.dtype != torch.float32
                       else "the weights hold inf/NaN or do not fit this architecture")
                raise NumericsError(f"text mode: the sampler produced non-finite values "
                                    f"(inf/NaN) in {self.dtype} while denoising frame 1; {fix}")
        return x

    # -- building blocks (each usable alone) ----------------------------------------------
    @torch.no_grad()
    def denoise(self, x: torch.Tensor, t, pose: torch.Tensor | None, video: VideoState,
                rows: GuidanceRows, frames: int) -> torch.Tensor:
        """UNet (+ ControlNet) on ``rows.videos`` videos of ``frames`` frames, ``x``
        ``(videos*frames, C, h, w)`` and ``pose`` ``(videos*frames, 3, H, W)`` or None ->
        noise ``(rows.rows*frames, C, h, w)``, rows ``[uncond videos; cond videos]``."""
        n = x.shape[0]
        context = rows.stack(video.cond.expand(n, -1, -1), video.uncond.expand(n, -1, -1))
        model_input = rows.stack(x)
        kwargs = {"video_length": frames}
        residuals = {}
        if pose is not None:
            down, mid = self.controlnet(model_input, t, encoder_hidden_states=context,
                                        controlnet_cond=rows.stack(pose.to(self.dtype)),
                                        conditioning_scale=video.controlnet_scale,
                                        guess_mode=False, cross_attention_kwargs=kwargs,
                                        return_dict=False)
            residuals = {"down_block_additional_residuals": down,
                         "mid_block_additional_residual": mid}
        return self.unet(model_input, t, encoder_hidden_states=context,
                         cross_attention_kwargs=kwargs, **residuals).sample

    @torch.no_grad()
    def encode_text(self, text: str) -> torch.Tensor:
        """CLIP last hidden state ``(1, 77, D)`` of ``text`` (padded to the tokenizer's length,
        truncated beyond it, as diffusers' ``encode_prompt``)."""
        ids = self.tokenizer([text], padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device))[0]

    def control_tensor(self, controls: Sequence, frames: list[int]) -> torch.Tensor:
        """Pose frames (uint8 ``(H, W, 3)`` RGB, or float in [0, 1]) -> ``(n, 3, H, W)``."""
        batch = np.stack([np.asarray(controls[i]) for i in frames])
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise InputError(f"pose maps must be RGB frames (H, W, 3), got {batch.shape[1:]}")
        x = torch.from_numpy(np.ascontiguousarray(batch))
        x = x.float() / 255.0 if batch.dtype == np.uint8 else x.float()
        return rearrange(x, "n h w c -> n c h w").to(self.device, self.dtype)
