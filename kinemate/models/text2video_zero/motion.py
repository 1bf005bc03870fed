"""Text mode's motion dynamics in the latents (Text2Video-Zero, SPEC §3): where the
schedule is cut, the global translation warp, and the DDPM forward jump.

The indices ``t0 < t1`` count from the **end** of the sampler's timesteps (diffusers
``TextToVideoZeroPipeline``; defaults 44 and 47 with 50 steps, i.e. timesteps 881 and 941):

* frame 1 runs ``timesteps[:-t1-1]`` (to ``T1 = timesteps[-t1-1]``), then
  ``timesteps[-t1-1:-t0-1]`` (to ``T0 = timesteps[-t0-1]``);
* its latent at ``T0`` is copied to frames 2..F, each copy translated by ``(dx, dy) * id``
  pixels of a 512x512 grid (:func:`warp_latents`), then noised back to ``T1`` in one jump
  with ``prod(alphas[T0:T1])`` (one index below the textbook product; kept for fidelity);
* all frames run ``timesteps[-t1-1:]``, frame 1 from its un-warped latent at ``T1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kinemate.errors import UsageError

FLOW_GRID = 512  # the motion field lives on a fixed 512x512 pixel grid, whatever the size


@dataclass(frozen=True)
class JumpSchedule:
    """The three slices of the timesteps and the two timesteps of the jump."""

    first: torch.Tensor  # frame 1 alone, to T1
    second: torch.Tensor  # frame 1 alone, T1 to T0
    rest: torch.Tensor  # every frame, from T1 to the end
    T1: int
    T0: int


def jump_schedule(timesteps: torch.Tensor, t0: int, t1: int) -> JumpSchedule:
    """Cut ``timesteps`` (descending, as a scheduler holds them) at the indices ``t0 < t1``
    counted from the end; ``0 <= t0 < t1 <= len - 2`` so that frame 1 runs at least one step
    before the jump (with ``t1 = len - 1`` diffusers runs no first loop and jumps from the
    initial noise's timestep)."""
    n = len(timesteps)
    if not 0 <= t0 < t1 <= n - 1:
        raise UsageError(f"`t0` {t0} and `t1` {t1} must satisfy 0 <= t0 < t1 <= steps - 1 = "
                         f"{n - 1}; with {n} steps the paper's 881/941 are t0 = {n - 6}, "
                         f"t1 = {n - 3}")
    return JumpSchedule(timesteps[:-t1 - 1], timesteps[-t1 - 1:-t0 - 1], timesteps[-t1 - 1:],
                        T1=int(timesteps[-t1 - 1]), T0=int(timesteps[-t0 - 1]))


def jump_alpha(alphas: torch.Tensor, T0: int, T1: int) -> torch.Tensor:
    """``prod(alphas[T0:T1])``: the signal share kept by the forward jump from T0 to T1."""
    return torch.prod(alphas[T0:T1])


def jump(latents: torch.Tensor, noise: torch.Tensor, alpha_prod: torch.Tensor) -> torch.Tensor:
    """DDPM forward jump ``sqrt(a) x + sqrt(1 - a) eps``."""
    return torch.sqrt(alpha_prod) * latents + torch.sqrt(1 - alpha_prod) * noise


def sampling_grid(dx: float, dy: float, frame_id: int, h: int, w: int, *,
                  device=None, dtype=torch.float32) -> torch.Tensor:
    """The ``grid_sample`` grid ``(1, h, w, 2)`` of a translation by ``(dx, dy) * frame_id``
    pixels on the 512x512 grid, resized to the latent's ``(h, w)`` bilinearly."""
    n = FLOW_GRID
    ys, xs = torch.meshgrid(torch.arange(n, device=device), torch.arange(n, device=device),
                            indexing="ij")
    pixel = torch.stack([xs, ys]).float()[None].to(dtype)  # (1, 2, n, n): x then y
    shift = torch.tensor([dx * frame_id, dy * frame_id], device=device, dtype=dtype)
    coords = pixel + shift.view(1, 2, 1, 1)
    coords[:, 0] /= n
    coords[:, 1] /= n
    coords = coords * 2.0 - 1.0
    coords = F.interpolate(coords, size=(h, w), mode="bilinear", align_corners=False)
    return coords.permute(0, 2, 3, 1)


def warp_latents(latents: torch.Tensor, frame_ids, dx: float, dy: float) -> torch.Tensor:
    """Translate latent ``i`` of ``(n, C, h, w)`` by ``(dx, dy) * frame_ids[i]`` pixels of the
    512 grid: nearest-neighbour sampling, reflected at the borders."""
    if len(frame_ids) != latents.shape[0]:
        raise ValueError("one frame id per latent")
    h, w = latents.shape[-2:]
    out = latents.clone()
    for i, frame_id in enumerate(frame_ids):
        grid = sampling_grid(dx, dy, frame_id, h, w, device=latents.device, dtype=latents.dtype)
        out[i] = F.grid_sample(latents[i:i + 1], grid, mode="nearest", padding_mode="reflection",
                               align_corners=False)[0]
    return out
