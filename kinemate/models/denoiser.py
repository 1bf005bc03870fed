"""What every family's denoiser built around a video UNet (``self.unet``) answers the same
way: its networks by name, latent channels, the longest window, device and dtype. A family's
denoiser subclasses :class:`VideoUNetDenoiser`, sets ``component_names`` and
``default_max_context``, and writes only its own step (see docs/engine.md, "Model families")."""

from __future__ import annotations

import torch
from torch import nn


class VideoUNetDenoiser:
    component_names: tuple[str, ...] = ("unet",)
    default_max_context = 24  # the motion modules' positional table when the config omits it

    def components(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in self.component_names}

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def max_context_frames(self) -> int | None:
        """Longest window the temporal positional tables allow (None: no temporal layers)."""
        if not self.unet.config.use_motion_module:
            return None
        kwargs = self.unet.config.motion_module_kwargs or {}
        return int(kwargs.get("temporal_position_encoding_max_len", self.default_max_context))

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype
