"""The DreamPose family: johannakarras/DreamPose's published checkpoints (ICCV 2023).

Stable Diffusion 1.4 turned into a single-frame generator conditioned on the reference photo
(CLIP ViT-B/32 tokens + a VAE latent through an adapter, in place of the text) and on five
DensePose UV maps (frames n-2 .. n+2) stacked on the noisy latent (14 input channels), with
dual classifier-free guidance (image and pose scales). Every frame is generated on its own
(one-frame windows in the engine). What is the family's own lives here: its networks
(:mod:`.networks`), its release layout and strict loading (:mod:`.checkpoint`), the official
input preprocessing (:mod:`.preprocess`) and its step (:mod:`.denoiser`). Spec and golden
vectors: ``../shared/reference/dreampose/``.

A new person needs subject fine-tuning (``kinemate finetune``, SPEC §3.2): the published
demo checkpoints animate only the demo subject.
"""

from __future__ import annotations

from pathlib import Path

from kinemate.models.dreampose.denoiser import DreamPoseDenoiser
from kinemate.models.registry import Family, LoadedModel

# Stable Diffusion 1.4's scheduler (the checkpoint folder's scheduler_config.json): PNDM
DREAMPOSE_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}
# The official sampling (README demo: test.py --n_steps 100 --s1 8 --s2 3): 100 PNDM steps,
# image scale 8, pose scale 3, one fixed noise for every frame, each frame on its own,
# test.py's per-frame min-max stretch of the output. `guidance` only switches the official
# pipeline's CFG on (7.5 is passed); DreamPose always runs its three guidance rows.
DEFAULT_OPTIONS = {"steps": 100, "guidance": 7.5, "image_guidance": 8.0, "pose_guidance": 3.0,
                   "context_frames": 1, "context_overlap": 0, "closed_loop": False,
                   "noise_tiling": 1, "stretch": True}
DEFAULT_SIZE = (512, 640)  # W, H: the adapter hard-codes 640x512 (H x W) images
CONTROL_KIND = "densepose_uv"  # DensePose U,V fields (docs/dreampose.md), not renders
COMPONENTS = ("unet", "adapter", "image_encoder")


def is_release(root: Path) -> bool:
    from kinemate.models.dreampose.checkpoint import is_release_layout

    return is_release_layout(root)


def load_release(root: Path, *, device="cpu", dtype=None) -> LoadedModel:
    """The release layout (see :mod:`.checkpoint`) with the official sampling defaults."""
    import torch

    from kinemate.models.dreampose.checkpoint import load_release as load_parts

    parts = load_parts(root, default_scheduler=DREAMPOSE_SCHEDULER,
                       dtype=dtype or torch.float32, device=device)
    denoiser = DreamPoseDenoiser(parts.unet, parts.adapter, parts.image_encoder, parts.vae)
    return LoadedModel(denoiser, parts.vae, parts.scheduler, name="dreampose",
                       family="dreampose", control_kind=CONTROL_KIND,
                       default_size=DEFAULT_SIZE, options=dict(DEFAULT_OPTIONS),
                       index={"release": parts.meta})


def assemble(components: dict, text_embeds_uncond=None, text_embeds_cond=None,
             vae=None) -> DreamPoseDenoiser:
    return DreamPoseDenoiser(components["unet"], components["adapter"],
                             components["image_encoder"], vae or components.get("vae"))


def _weights():
    from kinemate.models.dreampose.weights import DREAMPOSE_CLIP

    return (DREAMPOSE_CLIP,)


def _import_files(files, dest, *, echo=print):
    from kinemate.models.dreampose.weights import import_files

    return import_files(files, dest, echo=echo)


FAMILIES = (
    Family(
        name="dreampose",
        summary="DreamPose (johannakarras/DreamPose): SD1.4 UNet with 5 DensePose UV maps "
                "stacked on the latent, CLIP-image + VAE adapter in place of text, dual "
                "image/pose guidance, every frame on its own, 640x512; the published "
                "checkpoints (Google Drive, imported with 'kinemate weights import dreampose')",
        control_kinds=(CONTROL_KIND,),
        components=COMPONENTS,
        assemble=assemble,
        load_release=load_release,
        detect=is_release,
        weight_sets=_weights(),
        weights_hint="import the checkpoints with 'kinemate weights import dreampose FILES... "
                     "--dir DIR', then 'kinemate weights download dreampose --dir DIR' for CLIP, "
                     "and pass `weights` DIR (see 'kinemate weights list')",
        scheduler=DREAMPOSE_SCHEDULER,
        import_files=_import_files,
    ),
)

__all__ = ["COMPONENTS", "CONTROL_KIND", "DEFAULT_OPTIONS", "DEFAULT_SIZE", "DREAMPOSE_SCHEDULER",
           "DreamPoseDenoiser", "FAMILIES", "assemble", "load_release"]
