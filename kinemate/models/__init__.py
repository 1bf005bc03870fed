"""Networks of the MagicAnimate architecture, built on diffusers, and their checkpoint loading.

* :class:`VideoUNet` — SD1.5 spatial layers + AnimateDiff-v1 motion modules + ControlNet
  residual inputs + reference-attention readers (``kinemate.models.unet3d``).
* :class:`AppearanceEncoder` — the SD1.5 2D UNet that writes the reference features.
* :class:`ReferenceBank` — the feature bank of one sampling call (``kinemate.models.reference``).
* diffusers' ``ControlNetModel`` and ``AutoencoderKL`` are used as they are;
  :class:`PatchAutoencoder` is a PCA-fitted linear patch autoencoder for small models.
* ``kinemate.models.loading`` — strict loading of the release layout and of kinemate's format.
"""

from kinemate.models.appearance import AppearanceEncoder
from kinemate.models.motion import MotionModule
from kinemate.models.patch_vae import PatchAutoencoder, latent_downsample
from kinemate.models.reference import ReferenceBank
from kinemate.models.unet3d import MAGICANIMATE_MOTION_KWARGS, VideoUNet

__all__ = ["AppearanceEncoder", "MAGICANIMATE_MOTION_KWARGS", "MotionModule", "PatchAutoencoder",
           "ReferenceBank", "VideoUNet", "latent_downsample"]
