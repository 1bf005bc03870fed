"""The official pipeline's image preprocessing (cases.json ``preprocessing``, SPEC §2.5, §4).

Moore-AnimateAnyone resizes its inputs without keeping the aspect ratio:

* VAE: the reference photo is resized to the sampling size (W, H) with PIL's LANCZOS, then
  scaled to [-1, 1] (the engine's ``encode_reference`` does the scaling);
* pose frames: LANCZOS to (W, H), scaled to [0, 1];
* CLIP: the photo is squashed to 224 x 224 with PIL's default BICUBIC filter, then
  ``CLIPImageProcessor()``'s defaults, whose own resize and center crop are no-ops on a
  224 x 224 image: /255 and the OpenAI CLIP mean/std. Written out here (in float32, as
  transformers 4.30 computes it) because current transformers needs torchvision for that
  class.

Resizing is done in two explicit passes, horizontal then vertical, each rounded to 8 bits:
that is what the Pillow of the official environment (9.5) does inside one ``resize`` call;
newer Pillow versions may run the vertical pass first, which moves a third of the pixels of
the golden reference's CLIP input by up to 22 levels.

kinemate itself frames the photo and the controls with an aspect-preserving fit
(``kinemate.io.Framing``) before sampling, and gives CLIP that framed reference; these
functions reproduce the official inputs exactly (the golden tests use them).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def pil_resize(image: np.ndarray, width: int, height: int, resample: int) -> np.ndarray:
    """uint8 ``(h, w, 3)`` RGB -> ``(height, width, 3)`` with a PIL filter, the horizontal
    pass first (as Pillow 9.5)."""
    pil = Image.fromarray(np.asarray(image)).convert("RGB")
    if pil.width != width:
        pil = pil.resize((width, pil.height), resample)
    if pil.height != height:
        pil = pil.resize((width, height), resample)
    return np.array(pil)  # a writable copy


def official_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 ``(h, w, 3)`` RGB -> uint8 ``(height, width, 3)``, PIL LANCZOS when the size
    differs (VaeImageProcessor.preprocess, for the reference and for the pose frames)."""
    image = np.asarray(image)
    if image.shape[:2] == (height, width):
        return image
    return pil_resize(image, width, height, Image.LANCZOS)


def clip_pixels(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """uint8 ``(h, w, 3)`` RGB -> CLIP pixel values ``(1, 3, size, size)`` float32."""
    pixels = pil_resize(image, size, size, Image.BICUBIC)
    x = (pixels * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


__all__ = ["CLIP_MEAN", "CLIP_STD", "clip_pixels", "official_resize", "pil_resize"]
