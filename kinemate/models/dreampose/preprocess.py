"""The official pipeline's inputs from the reference photo (cases.json ``preprocessing``,
SPEC §4), written out so that they do not depend on the installed transformers/diffusers:

* CLIP (``CLIPProcessor`` of transformers 4.28.1 with openai/clip-vit-base-patch32's config):
  shortest edge to 224 with PIL BICUBIC, centre crop 224, /255, CLIP mean/std;
* the unconditional CLIP input: a black image, i.e. ``-mean/std`` in every pixel;
* the VAE embedding input: the uint8 pixels as float, **0-255** (SPEC Q2: training used [0, 1]);
* the unconditional VAE input: zeros of the **transposed** size ``(1, 3, W, H)`` (SPEC Q4);
* the init image: ``/255 * 2 - 1`` in float32 (diffusers 0.15 ``preprocess``; its resize to a
  multiple of 32 is a no-op at 640x512).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from kinemate.models.animate_anyone.preprocess import CLIP_MEAN, CLIP_STD, pil_resize

CLIP_SIZE = 224


def clip_pixels(image: np.ndarray, size: int = CLIP_SIZE, *, rescaled_twice: bool = False) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` RGB -> ``(1, 3, size, size)`` float32, as CLIPProcessor does.
    ``rescaled_twice``: the official training scripts give the processor [0, 1] tensors,
    which transformers 4.28 divides by 255 once more (SPEC Q3: an almost black input)."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    pixels = pil_resize(image, new_w, new_h, Image.BICUBIC)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    pixels = pixels[top:top + size, left:left + size]
    x = (pixels * (1 / 255)).astype(np.float32)
    if rescaled_twice:
        x = (x * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def clip_uncond_pixels(size: int = CLIP_SIZE) -> torch.Tensor:
    """The processed black image: ``(0 - mean) / std`` per channel, ``(1, 3, size, size)``."""
    value = (np.zeros(3, np.float32) - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return torch.from_numpy(value).view(1, 3, 1, 1).expand(1, 3, size, size).contiguous()


def vae_embedding_input(image: np.ndarray, *, official_range: bool = True) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> ``(1, 3, H, W)`` float: raw 0-255 (official inference), or in
    [0, 1] as in training when ``official_range`` is False."""
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))).float()[None]
    return x if official_range else x / 255


def vae_uncond_input(height: int, width: int) -> torch.Tensor:
    """The unconditional VAE input: zeros ``(1, 3, width, height)`` (the official code builds
    the black image from PIL's ``size`` = (W, H) as if it were (H, W))."""
    return torch.zeros((1, 3, width, height))


def init_image(image: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> ``(1, 3, H, W)`` in [-1, 1] (diffusers 0.15 ``preprocess``)."""
    x = np.asarray(image).astype(np.float32) / 255.0
    x = 2.0 * x - 1.0
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


__all__ = ["CLIP_SIZE", "clip_pixels", "clip_uncond_pixels", "init_image", "vae_embedding_input",
           "vae_uncond_input"]
