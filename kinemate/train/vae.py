"""Stage ``vae``: fit a small :class:`diffusers.AutoencoderKL` on training frames.

The published SD VAE cannot be downloaded here and is far too large for a tiny model, so the
tiny configuration fits its own autoencoder first: reconstruction loss (L1 + MSE) plus a small
KL term, posterior sampled with explicit noise (deterministic per step). At the end the latent
scaling factor is set to ``1 / std`` of the latents of a batch of frames, as SD does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [16, 32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 16,
    "norm_num_groups": 8,
    "sample_size": 64,
    # fully convolutional: it can be trained on small crops and used on whole frames
    "mid_block_add_attention": False,
}


def build_vae(config: dict | None = None):
    """An untrained autoencoder from ``model.arch.vae``: ``AutoencoderKL`` keys over
    :data:`DEFAULT_TINY_VAE`, or ``{"type": "patch", "patch_size": p, "latent_channels": k}``
    for a :class:`kinemate.models.PatchAutoencoder` (fitted in closed form, not trained)."""
    config = dict(config or {})
    kind = config.pop("type", "kl")
    if kind == "patch":
        from kinemate.models.patch_vae import PatchAutoencoder

        return PatchAutoencoder(**config)
    if kind != "kl":
        raise ValueError(f"model.arch.vae.type must be 'kl' (AutoencoderKL) or 'patch' "
                         f"(PCA patch autoencoder); got {kind!r}")
    from diffusers import AutoencoderKL

    cfg = dict(DEFAULT_TINY_VAE)
    cfg.update(config)
    return AutoencoderKL(**cfg)


def is_closed_form(vae) -> bool:
    """True for autoencoders fitted in one pass (no gradient steps)."""
    from kinemate.models.patch_vae import PatchAutoencoder

    return isinstance(vae, PatchAutoencoder)


class VAEObjective(nn.Module):
    """Wraps the autoencoder; ``forward(image, eps)`` returns the training loss.

    image: ``(B, 3, H, W)`` in [-1, 1]; eps: ``(B, C_lat, H/f, W/f)`` standard normal noise used
    to sample the posterior.
    """

    def __init__(self, vae, kl_weight: float = 1e-6, sample_posterior: bool = False,
                 decoder_only: bool = False):
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight
        self.sample_posterior = sample_posterior
        self.decoder_only = decoder_only

    def forward(self, image: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        if self.decoder_only:  # frozen encoder: decode its posterior means
            with torch.no_grad():
                z = self.vae.encode(image).latent_dist.mean
            rec = self.vae.decode(z).sample
            return F.l1_loss(rec, image) + F.mse_loss(rec, image)
        post = self.vae.encode(image).latent_dist
        # Sampling the posterior from its initial unit variance makes a short fit learn almost
        # nothing (the noise swamps the code until logvar has shrunk); the pipeline decodes
        # posterior means, so a short fit decodes the mean (a plain autoencoder with a small
        # KL pull towards N(0, 1)).
        z = post.mean + post.std * eps if self.sample_posterior else post.mean
        rec = self.vae.decode(z).sample
        rec_loss = F.l1_loss(rec, image) + F.mse_loss(rec, image)
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        return rec_loss + self.kl_weight * kl


@torch.no_grad()
def fit_scaling_factor(vae, images: torch.Tensor) -> float:
    """``1 / std`` of the posterior means of ``images`` ``(B, 3, H, W)`` in [-1, 1]."""
    z = vae.encode(images).latent_dist.mean
    return float(1.0 / z.float().std().clamp_min(1e-6))
