"""The Text2Video-Zero family (Khachatryan et al., ICCV 2023): a frozen Stable Diffusion 1.5
(+ the OpenPose ControlNet v1.0) made into a video generator without training, by
cross-frame attention and, for text-only video, motion dynamics in the latents.

No reference photo: appearance comes from the text prompt. Pose mode follows a driving video
(kinemate's pose extraction and skeleton maps); text mode makes ``frames`` frames from the
prompt alone. The numerical reference is diffusers 0.42.1's own (deprecated) implementation;
spec, checks and golden vectors: ``../shared/reference/text2video-zero/``. kinemate's code is
its own (:mod:`.attention`, :mod:`.motion`, :mod:`.denoiser`) on diffusers' UNet, ControlNet,
VAE and schedulers and transformers' CLIP.

Two presets (SPEC §6-7), chosen with ``load_pipeline(..., preset=NAME)`` / ``--preset``:

* ``official`` (default): the reference code (Picsart-AI-Research/Text2Video-Zero) — DDIM,
  pose 20 steps at guidance 9, text 50 steps at 7.5, its prompt suffixes and negative prompt,
  chunks of 8 frames (frame 0 + 7 new), seed 42;
* ``diffusers-docs``: diffusers' documented recipes — SD1.5's PNDM scheduler, 50 steps at
  7.5, no suffix or negative prompt, all frames in one call (up to 64 frames), seed 42.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kinemate.errors import UsageError
from kinemate.models.registry import Family, LoadedModel
from kinemate.models.text2video_zero.denoiser import T2VZDenoiser, chunk_windows

NAME = "text2video-zero"
CONTROL_KIND = "openpose"  # lllyasviel's OpenPose renders (docs/pose.md)
SD15_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
              "beta_schedule": "scaled_linear", "set_alpha_to_one": False, "steps_offset": 1}
# SD1.5's scheduler_config.json is PNDM; the official code makes DDIM from that config
DDIM_SD15 = {"_class_name": "DDIMScheduler", **SD15_BETAS, "clip_sample": False}
PNDM_SD15 = {"_class_name": "PNDMScheduler", **SD15_BETAS, "skip_prk_steps": True}


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    scheduler: dict
    pose_options: dict
    text_options: dict
    prompt_suffix: dict = field(default_factory=dict)  # mode -> text appended to the prompt
    negative_prompt: dict = field(default_factory=dict)  # mode -> default negative prompt


_SHARED = {"eta": 0.0, "seed": 42, "noise_tiling": 1, "context_overlap": 0,
           "closed_loop": False}
PRESETS = {
    "official": Preset(
        "official",
        "Picsart-AI-Research/Text2Video-Zero @ fd76734 (process_controlnet_pose, "
        "process_text2video): DDIM; pose 20 steps, guidance 9; text 50 steps, 7.5; chunks of "
        "8 frames; its prompt suffixes and negative prompt",
        DDIM_SD15,
        pose_options={**_SHARED, "steps": 20, "guidance": 9.0, "context_frames": 8},
        text_options={**_SHARED, "steps": 50, "guidance": 7.5, "context_frames": 8},
        prompt_suffix={
            "pose": ", best quality, extremely detailed, HD, ultra-realistic, 8K, HQ, "
                    "masterpiece, trending on artstation, art, smooth",
            "text": ", high quality, HD, 8K, trending on artstation, high focus, dramatic "
                    "lighting"},
        negative_prompt={
            "pose": "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, "
                    "fewer difits, cropped, worst quality, low quality, deformed body, "
                    "bloated, ugly, unrealistic"}),
    "diffusers-docs": Preset(
        "diffusers-docs",
        "diffusers docs (text_to_video_zero.md): SD1.5's PNDM scheduler, 50 steps, guidance "
        "7.5, no prompt suffix or negative prompt, all frames in one call",
        PNDM_SD15,
        pose_options={**_SHARED, "steps": 50, "guidance": 7.5, "context_frames": 64},
        text_options={**_SHARED, "steps": 50, "guidance": 7.5, "context_frames": 64}),
}
DEFAULT_PRESET = "official"
DEFAULT_SIZE = (512, 512)


def apply_preset(loaded: LoadedModel, name: str | None) -> LoadedModel:
    """``loaded`` with preset ``name``'s scheduler, options (pose and text mode), prompt
    suffixes and negative prompts; the preset is named in ``loaded.index["preset"]``."""
    name = name or DEFAULT_PRESET
    preset = PRESETS.get(name)
    if preset is None:
        raise UsageError(f"unknown `preset` {name!r} for {NAME}; choose one of "
                         f"{', '.join(PRESETS)}")
    loaded.scheduler = dict(preset.scheduler)
    loaded.options = dict(preset.pose_options)
    loaded.text_options = dict(preset.text_options)
    loaded.denoiser.prompt_suffix = dict(preset.prompt_suffix)
    loaded.denoiser.negative_prompt = dict(preset.negative_prompt)
    loaded.denoiser.preset = name
    loaded.index = {**loaded.index, "preset": name}
    return loaded


def assemble(components: dict, text_embeds_uncond=None, text_embeds_cond=None):
    raise UsageError("Text2Video-Zero models are read from the SD1.5 + ControlNet layout "
                     "(see 'kinemate weights download text2video-zero'), not from a kinemate "
                     "model folder")


def is_layout(root: Path) -> bool:
    from kinemate.models.text2video_zero.checkpoint import is_layout as check

    return check(root)


def load_release(root: Path, *, device="cpu", dtype=None, preset: str | None = None) -> LoadedModel:
    """SD1.5 (+ ControlNet) from ``root`` (either layout, :mod:`.checkpoint`), with a preset."""
    import torch

    from kinemate.models.patch_vae import latent_downsample
    from kinemate.models.text2video_zero.checkpoint import load_parts

    parts = load_parts(root, dtype=dtype or torch.float32, device=device)
    denoiser = T2VZDenoiser(parts.unet, parts.controlnet, parts.text_encoder, parts.tokenizer)
    denoiser.latent_factor = latent_downsample(parts.vae)
    loaded = LoadedModel(denoiser, parts.vae, dict(DDIM_SD15), name=NAME, family=NAME,
                         control_kind=CONTROL_KIND, default_size=DEFAULT_SIZE,
                         vae_scaling_factor=parts.vae_scaling_factor)
    return apply_preset(loaded, preset)


def _weights():
    from kinemate.models.text2video_zero.weights import T2VZ_WEIGHTS

    return (T2VZ_WEIGHTS,)


FAMILIES = (
    Family(
        name=NAME,
        summary="Text2Video-Zero (ICCV 2023): frozen SD1.5 + OpenPose ControlNet with "
                "cross-frame attention, no training; appearance from a text prompt (no "
                "reference photo); pose mode from a driving video, text mode from the prompt "
                "alone",
        control_kinds=(CONTROL_KIND,),
        components=("unet", "controlnet", "text_encoder"),
        assemble=assemble,
        load_release=load_release,
        detect=is_layout,
        weight_sets=_weights(),
        weights_hint="download SD1.5 + the OpenPose ControlNet with 'kinemate weights download "
                     "text2video-zero --dir DIR' and pass `weights` DIR",
        scheduler=DDIM_SD15,
        presets=tuple(PRESETS),
        apply_preset=apply_preset,
    ),
)

__all__ = ["DDIM_SD15", "FAMILIES", "PNDM_SD15", "PRESETS", "T2VZDenoiser", "apply_preset",
           "chunk_windows", "load_release"]
