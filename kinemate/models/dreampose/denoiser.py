"""DreamPose's part of a sampling step (the engine's denoiser interface, docs/engine.md).

DreamPose generates every frame on its own: no temporal layers, so the engine runs it on
one-frame windows (the family's options: ``context_frames`` 1, overlap 0). What makes it
DreamPose (SPEC §4):

* once per video (:meth:`start_video`): CLIP and VAE of the reference photo; per frame, in the
  official order of the process-wide RNG draws (here a generator of its own seeded with
  ``seed``: the same numbers), a VAE ``sample()`` of the photo for the image condition, one of
  the transposed black image for the unconditional one, one of the photo in [-1, 1] for the
  start latent, and after frame 0's three draws the fixed noise every frame shares;
* the start (:meth:`initial_latents`, an engine hook): diffusers img2img at strength 1, i.e.
  the photo's latent noised to the first timestep with the fixed noise;
* per frame and step (:meth:`frame_features`): the UV maps of frames n-2 .. n+2 (a missing
  neighbour replaced by frame n itself), (x - 0.5) / 0.5, nearest-neighbour to latent size;
* the step (:meth:`predict`): one UNet call on three rows [uncond image + no pose, image +
  pose, image + no pose] ("no pose" = zeros), combined with the two scales:
  ``eps = e_u + image_guidance * (e_img - e_u) + pose_guidance * (e_img_pose - e_img)``
  (the official ``s1`` is ``image_guidance``, ``s2`` is ``pose_guidance``). The denoiser
  guides itself (``guides_itself``): the engine asks it for one row per window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kinemate.errors import UsageError
from kinemate.models.dreampose import preprocess
from kinemate.models.dreampose.networks import N_POSES

VAE_SCALE = 0.18215


def pose_window(n: int, count: int, poses: int = N_POSES) -> list[int]:
    """Pose-file indices of frame ``n``'s window ``n-2 .. n+2`` (for 5 poses), an index
    outside ``0 .. count-1`` replaced by ``n`` itself (test.py's rule, not the nearest
    existing frame)."""
    half = poses // 2
    return [i if 0 <= i < count else n for i in range(n - half, n + half + 1)]


def combine(e_uncond: torch.Tensor, e_image_pose: torch.Tensor, e_image: torch.Tensor,
            image_guidance: float, pose_guidance: float) -> torch.Tensor:
    """DreamPose's dual classifier-free guidance (the official s1 = image, s2 = pose)."""
    return (e_uncond + image_guidance * (e_image - e_uncond)
            + pose_guidance * (e_image_pose - e_image))


@dataclass
class DreamPoseVideo:
    """What one sampling call shares across its steps."""

    controls: Sequence[np.ndarray]  # N UV fields (H, W, 2) float in [0, 1]
    embeds_uncond: torch.Tensor  # (N, 50, D) adapter outputs
    embeds_cond: torch.Tensor  # (N, 50, D)
    start_latents: torch.Tensor  # (1, 4, N, h, w) VAE samples of the photo x 0.18215
    noise: torch.Tensor  # (1, 4, N, h, w) the start noise (one draw repeated, by default)
    image_guidance: float
    pose_guidance: float
    pose_downsample: str = "nearest"


class DreamPoseDenoiser:
    """UNet (14 input channels) + adapter + CLIP vision + the VAE's encoder (for the image
    condition). ``vae`` is the pipeline's VAE (the same module; not listed twice)."""

    component_names = ("unet", "adapter", "image_encoder")
    guides_itself = True  # predict() returns the guided prediction, one row per window
    # options DreamPose does not use: a call must leave them at the model's values
    unused_options = ("guidance", "context_frames", "context_overlap", "closed_loop",
                      "context_stride", "pad_to", "reference_bank_dtype", "lean")

    def __init__(self, unet: nn.Module, adapter: nn.Module, image_encoder: nn.Module,
                 vae: nn.Module | None = None):
        self.unet, self.adapter, self.image_encoder = unet, adapter, image_encoder
        self.vae = vae

    # -- facts the engine asks for ----------------------------------------------------
    def components(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in self.component_names}

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.out_channels)

    @property
    def pose_channels(self) -> int:
        return int(self.unet.config.in_channels) - self.latent_channels

    @property
    def max_context_frames(self) -> int:
        return 1  # frames are independent

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    # -- building blocks (each usable alone; the golden tests use them) -----------------
    @torch.no_grad()
    def clip_hidden(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP ``last_hidden_state`` ``(B, 50, 768)`` of processed pixels."""
        out = self.image_encoder(pixel_values=pixels.to(self.device, self.dtype))
        return out.last_hidden_state

    @torch.no_grad()
    def vae_posterior(self, x: torch.Tensor):
        """The VAE's ``latent_dist`` (``mean``, ``std``) of ``x`` ``(1, 3, H, W)``."""
        return self.vae.encode(x.to(self.device, self.dtype)).latent_dist

    @torch.no_grad()
    def adapt(self, clip_hidden: torch.Tensor, vae_latent: torch.Tensor) -> torch.Tensor:
        """The adapter: CLIP tokens + VAE latent (``sample() * 0.18215``) -> context."""
        return self.adapter(clip_hidden.to(self.device, self.dtype),
                            vae_latent.to(self.device, self.dtype))

    def pose_latent(self, controls: Sequence[np.ndarray], n: int, size: tuple[int, int],
                    mode: str = "nearest") -> torch.Tensor:
        """Frame ``n``'s pose input ``(1, 2*poses, h, w)``: the window's UV fields (each
        ``(H, W, 2)`` in [0, 1]) as (x - 0.5) / 0.5, resized to the latent ``size`` (h, w)
        with ``mode`` (official: nearest)."""
        fields = [torch.from_numpy(np.ascontiguousarray(
            np.asarray(controls[i], dtype=np.float32).transpose(2, 0, 1)))
            for i in pose_window(n, len(controls), self.pose_channels // 2)]
        full = (torch.cat(fields)[None] - 0.5) / 0.5
        if mode == "nearest":
            small = F.interpolate(full, size)
        else:
            small = F.interpolate(full, size, mode=mode, align_corners=False, antialias=True)
        return small.to(self.device, self.dtype)

    @torch.no_grad()
    def unet_rows(self, latents: torch.Tensor, pose: torch.Tensor, t,
                  embeds_uncond: torch.Tensor, embeds_cond: torch.Tensor) -> torch.Tensor:
        """The UNet on the three rows of one frame: ``latents`` ``(1, 4, h, w)`` (scaled for
        the scheduler), ``pose`` ``(1, 2*poses, h, w)``; rows [uncond, image + pose, image]."""
        x = torch.cat([latents] * 3)
        zeros = torch.zeros_like(pose)
        x = torch.cat([x, torch.cat([zeros, pose, zeros])], dim=1)
        context = torch.cat([embeds_uncond, embeds_cond, embeds_cond])
        return self.unet(x, t, encoder_hidden_states=context).sample

    # -- the engine's calls ---------------------------------------------------------------
    @torch.no_grad()
    def start_video(self, ref_latents, controls, *, reference: np.ndarray, seed: int,
                    image_guidance: float, pose_guidance: float, noise_tiling: int = 1,
                    pose_downsample: str = "nearest", vae_input_range: str = "official",
                    reference_bank_dtype=None, lean: bool = True,
                    window_batch: int = 1) -> DreamPoseVideo:
        """Everything the frames share (see the module docstring). ``noise_tiling``: 1 = one
        noise draw for every frame (official), 0 = a draw per frame, N = N draws repeated.
        ``pose_downsample`` and ``vae_input_range`` ("official" raw 0-255, or "unit" [0, 1]
        as in training) exist to show what the official choices change; the engine leaves
        them at the official values. ``reference_bank_dtype``, ``lean``, ``window_batch``:
        the engine's, unused here."""
        if self.vae is None:
            raise UsageError("this DreamPose denoiser has no VAE; build it with vae=")
        reference = np.asarray(reference)
        height, width = reference.shape[:2]
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        h, w = height // f, width // f
        if (h // 2) * (w // 2) != self.adapter.vae_features:
            raise UsageError(
                f"DreamPose's adapter takes {self.adapter.vae_features} pooled VAE values per "
                f"channel, which fixes its images to 640x512 (H x W; `size` 512x640); got "
                f"{width}x{height}")
        num = len(controls)
        clip_c = self.clip_hidden(preprocess.clip_pixels(reference))
        clip_u = self.clip_hidden(preprocess.clip_uncond_pixels())
        official = vae_input_range == "official"
        dist_c = self.vae_posterior(preprocess.vae_embedding_input(reference, official_range=official))
        dist_u = self.vae_posterior(preprocess.vae_uncond_input(height, width))
        dist_i = self.vae_posterior(preprocess.init_image(reference))
        g = torch.Generator("cpu").manual_seed(int(seed))

        def sample(dist) -> torch.Tensor:
            eps = torch.randn(dist.mean.shape, generator=g, dtype=torch.float32)
            return (dist.mean + dist.std * eps.to(dist.mean.device, dist.mean.dtype)) * VAE_SCALE

        embeds_u, embeds_c, starts, noises = [], [], [], []
        for k in range(num):  # the official order of draws, frame by frame
            embeds_c.append(self.adapt(clip_c, sample(dist_c)))
            embeds_u.append(self.adapt(clip_u, sample(dist_u)))
            starts.append(sample(dist_i))
            if noise_tiling == 0 or k < noise_tiling:
                noises.append(torch.randn((self.latent_channels, h, w), generator=g)[None])
        noise = torch.cat(noises)
        if noise.shape[0] < num:  # one draw (official) or a tile of draws, repeated
            noise = noise.repeat(-(-num // noise.shape[0]), 1, 1, 1)[:num]
        return DreamPoseVideo(
            controls=controls, embeds_uncond=torch.cat(embeds_u), embeds_cond=torch.cat(embeds_c),
            start_latents=torch.cat(starts).permute(1, 0, 2, 3).unsqueeze(0),
            noise=noise.permute(1, 0, 2, 3).unsqueeze(0),
            image_guidance=float(image_guidance), pose_guidance=float(pose_guidance),
            pose_downsample=pose_downsample)

    def initial_latents(self, video: DreamPoseVideo, scheduler, timesteps: torch.Tensor, *,
                        steps: int, init_strength: float, **_):
        """diffusers img2img: the last ``init_strength`` share of the timesteps, the start latents
        noised to the first of them with the video's noise. Returns (latents, timesteps)."""
        timesteps = scheduler.timesteps
        keep = min(int(steps * init_strength), steps)
        start = max(steps - keep, 0) * scheduler.order
        timesteps = timesteps[start:]
        if len(timesteps) == 0:
            raise UsageError("`init_strength` leaves no denoising step; raise it or `steps`")
        start_latents = video.start_latents.float().cpu()
        noise = video.noise.float().cpu()
        t = timesteps[:1].cpu()
        frames = [scheduler.add_noise(start_latents[:, :, i], noise[:, :, i], t)
                  for i in range(start_latents.shape[2])]
        return torch.stack(frames, dim=2).to(self.device, self.dtype), timesteps

    def start_step(self, video: DreamPoseVideo, model_input, t, rows):
        return video, t, tuple(model_input.shape[-2:])

    def frame_features(self, step, frames: list[int]) -> list[tuple]:
        video, _, size = step
        return [(self.pose_latent(video.controls, n, size, video.pose_downsample),
                 video.embeds_uncond[n:n + 1], video.embeds_cond[n:n + 1]) for n in frames]

    @torch.no_grad()
    def predict(self, step, features: list[list[tuple]], latents: torch.Tensor) -> torch.Tensor:
        """``latents`` ``(k, 4, 1, h, w)``: k one-frame windows -> guided ``(k, 4, 1, h, w)``."""
        video, t, _ = step
        out = []
        for j, window in enumerate(features):
            (pose, e_u, e_c), = window
            rows = self.unet_rows(latents[j:j + 1, :, 0], pose, t, e_u, e_c)
            e_uncond, e_image_pose, e_image = rows.chunk(3)
            out.append(combine(e_uncond, e_image_pose, e_image, video.image_guidance,
                               video.pose_guidance))
        return torch.cat(out).unsqueeze(2)

    def end_video(self, video) -> None:
        pass


__all__ = ["DreamPoseDenoiser", "DreamPoseVideo", "VAE_SCALE", "combine", "pose_window"]
