"""A linear patch autoencoder fitted by PCA: the "VAE" of small models.

At 64x64 pixels a learned 8x AutoencoderKL trained for minutes on a CPU is the weakest part of a
tiny latent-diffusion model (kinemate-tiny's first VAE plateaued near 17 dB PSNR), and every
error it makes is an error no diffusion model can undo. This autoencoder is the opposite trade:

* encode: cut the image into ``patch_size`` x ``patch_size`` patches (space-to-depth), subtract
  the data mean of a patch and project on the first ``latent_channels`` principal components of
  the patches (fitted once, in closed form, on training frames);
* decode: the transpose, then depth-to-space.

With ``latent_channels = 3 * patch_size**2`` the map is orthogonal, hence lossless; with fewer
channels it is the best linear code of that size (in mean squared error) for the fitted data.
The latents are an orthogonal rotation of the pixels, so the diffusion loss on them is the pixel
loss. It mimics the parts of ``diffusers.AutoencoderKL`` that the pipeline and the trainer use:
``encode(x).latent_dist.mean``, ``decode(z).sample``, ``config.scaling_factor`` and
:func:`latent_downsample`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin


@dataclass
class _Code:
    """Stands in for diffusers' ``DiagonalGaussianDistribution``: the code is deterministic."""

    mean: torch.Tensor

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator=None) -> torch.Tensor:
        return self.mean


@dataclass
class _EncoderOutput:
    latent_dist: _Code


class PatchAutoencoder(ModelMixin, ConfigMixin):
    """Linear patch autoencoder (see the module docstring). Random (identity-like) until
    :meth:`fit` is called or weights are loaded."""

    @register_to_config
    def __init__(self, in_channels: int = 3, patch_size: int = 4, latent_channels: int | None = None,
                 scaling_factor: float = 1.0):
        super().__init__()
        dim = in_channels * patch_size * patch_size
        k = dim if latent_channels is None else int(latent_channels)
        if not 1 <= k <= dim:
            raise ValueError(f"latent_channels must be in 1..{dim} for patch_size {patch_size} "
                             f"and {in_channels} channels; got {k}")
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("basis", torch.eye(dim)[:, :k].contiguous())  # (dim, k), orthonormal

    @property
    def downsample(self) -> int:
        return int(self.config.patch_size)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """``(B, C, H, W)`` in [-1, 1] -> latents ``(B, k, H/p, W/p)`` (H, W multiples of p)."""
        p = self.config.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the patch "
                             f"size {p}")
        patches = F.pixel_unshuffle(x, p)  # (B, C*p*p, h, w)
        centred = patches - self.mean.to(x.dtype).view(1, -1, 1, 1)
        z = torch.einsum("bdhw,dk->bkhw", centred, self.basis.to(x.dtype))
        code = _Code(z)
        return _EncoderOutput(code) if return_dict else (code,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        p = self.config.patch_size
        patches = torch.einsum("bkhw,dk->bdhw", z, self.basis.to(z.dtype))
        patches = patches + self.mean.to(z.dtype).view(1, -1, 1, 1)
        image = F.pixel_shuffle(patches, p)
        return DecoderOutput(sample=image) if return_dict else (image,)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        return self.decode(self.encode(sample).latent_dist.mean, return_dict=return_dict)

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> "PatchAutoencoder":
        """Fit mean and principal components on ``images`` ``(N, C, H, W)`` in [-1, 1], and the
        scaling factor to ``1 / std`` of the resulting latents (as SD's VAE does)."""
        p = self.config.patch_size
        patches = F.pixel_unshuffle(images.double(), p)  # (N, D, h, w)
        rows = patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1])
        mean = rows.mean(0)
        cov = (rows - mean).T @ (rows - mean) / max(rows.shape[0] - 1, 1)
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)
        k = self.basis.shape[1]
        basis = evecs[:, order[:k]]
        # a fixed sign per component, so the same data always gives the same basis
        flip = torch.sign(basis[basis.abs().argmax(0), torch.arange(k)])
        basis = basis * torch.where(flip == 0, torch.ones_like(flip), flip)
        self.mean.copy_(mean.float())
        self.basis.copy_(basis.float())
        z = self.encode(images.float()).latent_dist.mean
        self.register_to_config(scaling_factor=float(1.0 / z.std().clamp_min(1e-6)),
                                latent_channels=k)
        return self


def latent_downsample(vae) -> int:
    """Pixels per latent along each side for a diffusers ``AutoencoderKL`` (``2**(levels-1)``: 8
    for SD's VAE) or a :class:`PatchAutoencoder` (its patch size)."""
    if isinstance(vae, PatchAutoencoder):
        return vae.downsample
    return 2 ** (len(vae.config.block_out_channels) - 1)
