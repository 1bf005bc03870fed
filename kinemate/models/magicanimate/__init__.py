"""The MagicAnimate family (and kinemate-tiny, a kinemate-trained model of the same design).

What is MagicAnimate's own lives here: its release layout and key mapping
(:mod:`.checkpoint`), its sampling step (:mod:`.denoiser`), its published weights
(:mod:`.weights`) and its scheduler. The networks it shares with other families (video UNet
with motion modules, appearance encoder / reference attention) stay in ``kinemate.models``.

Two registry entries use it:

* ``magicanimate`` — the published checkpoints (release layout, DensePose control, 512 px);
* ``kinemate-tiny`` — the bundled 64 px model in kinemate's format (skeleton control).
"""

from __future__ import annotations

from pathlib import Path

from kinemate.models.magicanimate.denoiser import MagicAnimateDenoiser
from kinemate.models.registry import Family, LoadedModel

# The effective official scheduler (configs/magicanimate_ddim_scheduler_effective.json).
MAGICANIMATE_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "trained_betas": None,
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
}
COMPONENTS = ("unet", "appearance_encoder", "controlnet")
BUNDLED = Path(__file__).resolve().parents[2] / "assets" / "kinemate-tiny"


def assemble(components: dict, text_embeds_uncond=None, text_embeds_cond=None) -> MagicAnimateDenoiser:
    """The denoiser from the networks of a kinemate-format folder."""
    return MagicAnimateDenoiser(components["unet"], components["appearance_encoder"],
                                components["controlnet"], text_embeds_uncond=text_embeds_uncond,
                                text_embeds_cond=text_embeds_cond)


def is_release(root: Path) -> bool:
    from kinemate.models.magicanimate.checkpoint import is_release_layout

    return is_release_layout(root)


def load_release(root: Path, *, device="cpu", dtype=None) -> LoadedModel:
    """The release layout (see :mod:`.checkpoint`), with the scheduler settings of an
    inference config found next to it."""
    import torch

    from kinemate.models.magicanimate.checkpoint import load_release as load_parts
    from kinemate.models.magicanimate.checkpoint import read_inference_config

    parts = load_parts(root, dtype=dtype or torch.float32, device=device)
    scheduler = dict(MAGICANIMATE_SCHEDULER)
    if parts.meta.get("inference_config"):
        scheduler.update(read_inference_config(parts.meta["inference_config"])
                         .get("noise_scheduler_kwargs") or {})
    denoiser = MagicAnimateDenoiser(parts.unet, parts.appearance_encoder, parts.controlnet,
                                    text_embeds_uncond=parts.text_embeds_uncond,
                                    text_embeds_cond=parts.text_embeds_cond)
    return LoadedModel(denoiser, parts.vae, scheduler, name="magicanimate",
                       family="magicanimate", control_kind="densepose", default_size=(512, 512))


def _weights():
    from kinemate.models.magicanimate.weights import MAGICANIMATE_WEIGHTS

    return (MAGICANIMATE_WEIGHTS,)


FAMILIES = (
    Family(
        name="magicanimate",
        summary="MagicAnimate (CVPR 2024): appearance encoder + DensePose ControlNet + temporal "
                "attention on SD1.5, 512 px; the published checkpoints",
        control_kinds=("densepose",),
        components=COMPONENTS,
        assemble=assemble,
        load_release=load_release,
        detect=is_release,
        weight_sets=_weights(),
        weights_hint="download the release with 'kinemate weights download magicanimate "
                     "--dir DIR' and pass `weights` DIR",
        scheduler=MAGICANIMATE_SCHEDULER,
    ),
    Family(
        name="kinemate-tiny",
        summary="the bundled 64 px demonstration model of the MagicAnimate design, trained "
                "by kinemate on synthetic people (skeleton control); runs offline on a CPU",
        control_kinds=("openpose",),
        components=COMPONENTS,
        assemble=assemble,
        bundled=BUNDLED,
        scheduler=MAGICANIMATE_SCHEDULER,
    ),
)

__all__ = ["FAMILIES", "MAGICANIMATE_SCHEDULER", "MagicAnimateDenoiser", "assemble",
           "load_release"]
