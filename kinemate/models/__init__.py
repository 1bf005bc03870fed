"""Networks, checkpoint loading and the model-family registry.

Shared building blocks (used by more than one family):

* :class:`VideoUNet` — SD1.5 spatial layers + AnimateDiff motion modules + ControlNet
  residual inputs + reference-attention readers (``kinemate.models.unet3d``).
* :class:`AppearanceEncoder` — the SD1.5 2D UNet that writes the reference features
  (MagicAnimate's appearance encoder, Animate Anyone's reference UNet).
* :class:`ReferenceBank` — the feature bank of one sampling call (``kinemate.models.reference``),
  read and written through immutable views; :class:`GuidanceRows` — the row layout contract
  of classifier-free guidance (``kinemate.models.guidance``).
* diffusers' ``ControlNetModel`` and ``AutoencoderKL`` are used as they are;
  :class:`PatchAutoencoder` is a PCA-fitted linear patch autoencoder for small models.
* ``kinemate.models.loading`` — strict loading and kinemate's component format.

Families (``kinemate.models.registry``): one package each, e.g. ``kinemate.models.magicanimate``
and ``kinemate.models.animate_anyone`` (its release layout, its sampling step, its published
weights).

Names are imported on first use, so ``import kinemate.models.registry`` stays light.
"""

from __future__ import annotations

from kinemate.lazy import lazy_attributes

_LAZY = {
    "AppearanceEncoder": "kinemate.models.appearance",
    "GuidanceRows": "kinemate.models.guidance",
    "MAGICANIMATE_MOTION_KWARGS": "kinemate.models.unet3d",
    "MotionModule": "kinemate.models.motion",
    "PatchAutoencoder": "kinemate.models.patch_vae",
    "ReferenceBank": "kinemate.models.reference",
    "VideoUNet": "kinemate.models.unet3d",
    "latent_downsample": "kinemate.models.patch_vae",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_attributes("kinemate.models", _LAZY)
