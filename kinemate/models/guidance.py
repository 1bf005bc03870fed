"""The guidance contract: how the rows of one denoiser call are laid out.

A denoiser call runs ``k`` context windows (videos) at once. With classifier-free guidance
(a guidance scale above 1) the batch has ``2k`` rows, ``[uncond x k; cond x k]``; without it,
``k`` conditional rows. What makes a row unconditional is fixed here and nowhere else:

* unconditional rows do not read the reference (plain self-attention where conditional rows
  attend to the reference features too; zeros where a UNet takes the reference latent as
  input);
* both halves get the same control (ControlNet residuals) and the same text embedding.

The engine combines the two halves with :func:`kinemate.pipeline.context.guide`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GuidanceRows:
    """Row layout of one denoiser call on ``videos`` windows (see the module docstring)."""

    cfg: bool
    videos: int = 1

    @classmethod
    def for_scale(cls, scale: float, videos: int = 1) -> "GuidanceRows":
        """CFG exactly when ``scale > 1`` (1 would only cost a second pass)."""
        return cls(cfg=float(scale) > 1.0, videos=videos)

    def with_videos(self, videos: int) -> "GuidanceRows":
        return GuidanceRows(self.cfg, videos)

    @property
    def rows(self) -> int:
        return 2 * self.videos if self.cfg else self.videos

    @property
    def uncond_videos(self) -> int:
        """Videos in the unconditional half (they come first)."""
        return self.videos if self.cfg else 0

    @property
    def halves(self) -> int:
        return 2 if self.cfg else 1

    def stack(self, cond: torch.Tensor, uncond: torch.Tensor | None = None) -> torch.Tensor:
        """The batch of ``k`` conditional rows laid out as the call's rows; ``uncond`` (same
        shape) fills the unconditional half (default: a copy of ``cond``)."""
        if not self.cfg:
            return cond
        return torch.cat([cond if uncond is None else uncond, cond])

    def of_video(self, pred: torch.Tensor, j: int) -> torch.Tensor:
        """The rows of video ``j`` in order ``[uncond, cond]`` (or ``[cond]``)."""
        return pred[j::self.videos] if self.cfg else pred[j:j + 1]  # rows j and videos + j
