"""The Animate Anyone family: Moore-AnimateAnyone's published checkpoints.

Reference UNet (written once per video at timestep 0) + pose guider (added after the
denoising UNet's ``conv_in``) + AnimateDiff-v2 motion modules + CLIP image conditioning on
SD1.5, sampled with DDIM v-prediction on zero-terminal-SNR betas with trailing timesteps.
What is the family's own lives here: its networks' configuration and the pose guider
(:mod:`.networks`), its release layout (:mod:`.checkpoint`), its step (:mod:`.denoiser`), the
official preprocessing (:mod:`.preprocess`) and its published files (:mod:`.weights`); the
video UNet, motion modules, reference attention, windows, fusion and decoding are the
engine's. Spec and golden vectors: ``../shared/reference/animate-anyone/``.
"""

from __future__ import annotations

from pathlib import Path

from kinemate.models.animate_anyone.denoiser import AnimateAnyoneDenoiser
from kinemate.models.registry import Family, LoadedModel

# The effective official scheduler (configs/ddim_scheduler_effective.json): DDIM, v-prediction,
# linear betas rescaled to zero terminal SNR, trailing timesteps.
ANIMATE_ANYONE_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "trained_betas": None,
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "timestep_spacing": "trailing",
    "rescale_betas_zero_snr": True,
}
# The official sampling defaults (scripts/pose2vid.py and Pose2VideoPipeline.__call__): what a
# release-layout model gets as its options (it has no kinemate.json).
DEFAULT_OPTIONS = {"steps": 30, "guidance": 3.5, "context_frames": 24, "context_overlap": 4,
                   "closed_loop": True}
DEFAULT_SIZE = (512, 768)  # W, H: the official app's portrait default (pose2vid.py: 512x784)
COMPONENTS = ("unet", "reference_unet", "pose_guider", "image_encoder")
CONTROL_KIND = "openpose"  # DWPose skeleton maps, drawn like OpenPose (docs/pose.md)


def assemble(components: dict, text_embeds_uncond=None, text_embeds_cond=None) -> AnimateAnyoneDenoiser:
    """The denoiser from the networks of a kinemate-format folder (no text embeddings)."""
    return AnimateAnyoneDenoiser(components["unet"], components["reference_unet"],
                                 components["pose_guider"], components["image_encoder"])


def is_release(root: Path) -> bool:
    from kinemate.models.animate_anyone.checkpoint import is_release_layout

    return is_release_layout(root)


def load_release(root: Path, *, device="cpu", dtype=None) -> LoadedModel:
    """The release layout (see :mod:`.checkpoint`), with the scheduler settings of an
    inference config found next to it and the official sampling defaults."""
    import torch

    from kinemate.models.animate_anyone.checkpoint import load_release as load_parts
    from kinemate.models.animate_anyone.checkpoint import read_inference_config

    parts = load_parts(root, dtype=dtype or torch.float32, device=device)
    scheduler = dict(ANIMATE_ANYONE_SCHEDULER)
    if parts.meta.get("inference_config"):
        scheduler.update(read_inference_config(parts.meta["inference_config"])
                         .get("noise_scheduler_kwargs") or {})
    denoiser = AnimateAnyoneDenoiser(parts.unet, parts.reference_unet, parts.pose_guider,
                                     parts.image_encoder)
    return LoadedModel(denoiser, parts.vae, scheduler, name="animate-anyone",
                       family="animate-anyone", control_kind=CONTROL_KIND,
                       default_size=DEFAULT_SIZE, options=dict(DEFAULT_OPTIONS))


def _weights():
    from kinemate.models.animate_anyone.weights import ANIMATE_ANYONE_WEIGHTS

    return (ANIMATE_ANYONE_WEIGHTS,)


FAMILIES = (
    Family(
        name="animate-anyone",
        summary="Animate Anyone (Moore-AnimateAnyone): reference UNet + pose guider + "
                "AnimateDiff-v2 motion modules + CLIP image conditioning on SD1.5, skeleton "
                "control, 512x768; the published checkpoints",
        control_kinds=(CONTROL_KIND,),
        components=COMPONENTS,
        assemble=assemble,
        load_release=load_release,
        detect=is_release,
        weight_sets=_weights(),
        weights_hint="download the release with 'kinemate weights download animate-anyone "
                     "--dir DIR' and pass `weights` DIR",
        scheduler=ANIMATE_ANYONE_SCHEDULER,
    ),
)

__all__ = ["ANIMATE_ANYONE_SCHEDULER", "AnimateAnyoneDenoiser", "DEFAULT_OPTIONS", "FAMILIES",
           "assemble", "load_release"]
