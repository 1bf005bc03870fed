"""The published Animate Anyone files: what ``kinemate weights download animate-anyone``
fetches (the files Moore-AnimateAnyone's ``tools/download_weights.py`` fetches, minus the
DWPose detector and the SD1.5 UNet weights, which kinemate does not use).

Pins: the reference kit (``../shared/reference/animate-anyone``) gives no hashes and could not
inspect the release files, so the four Animate Anyone files and the image encoder are
**not pinned** (no sha256, no exact size): each is checked against a lower bound, the float16
size of its tensors from the kit's manifests (the files are believed float32; the bound holds
either way), and the download prints the hash it computed. The sd-vae-ft-mse weights are the
same file the MagicAnimate set pins (sha256 and size from the hub's file page), taken as
``.safetensors`` where the official script takes the ``.bin`` of the same weights.
"""

from __future__ import annotations

from kinemate.hub import WeightFile, WeightSet

_AA_REPO = "patrolli/AnimateAnyone"
_CLIP_REPO = "lambdalabs/sd-image-variations-diffusers"
_SD_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # community mirror of runwayml's repo
_MANIFESTS = "lower bound: float16 tensor bytes from the reference kit's manifests/_summary.json"


def _vae_files() -> tuple[WeightFile, ...]:
    """sd-vae-ft-mse, exactly as the MagicAnimate set pins it."""
    from kinemate.models.magicanimate.weights import MAGICANIMATE_WEIGHTS

    return tuple(f for f in MAGICANIMATE_WEIGHTS.files if f.target.startswith("sd-vae-ft-mse/"))


ANIMATE_ANYONE_WEIGHTS = WeightSet(
    name="animate-anyone",
    description="Moore-AnimateAnyone release checkpoints (denoising UNet, reference UNet, "
    "motion modules, pose guider) + the CLIP image encoder of sd-image-variations-diffusers + "
    "sd-vae-ft-mse + SD1.5's UNet config, in the official pretrained_weights/ layout",
    license="Moore-AnimateAnyone: Apache-2.0; sd-image-variations-diffusers: CreativeML "
    "OpenRAIL-M; SD1.5: CreativeML OpenRAIL-M; sd-vae-ft-mse: MIT",
    usage="kinemate animate --model animate-anyone --weights {dir} ref.png dance.mp4 -o out.mp4",
    notes=(
        "The four patrolli/AnimateAnyone files and the image encoder are not pinned (no "
        "published hash in the reference kit): their sizes are checked against a lower bound "
        "and the computed sha256 is printed.",
        "Only stable-diffusion-v1-5/unet/config.json is fetched: the official loader "
        "overwrites every tensor of the SD1.5 UNet weights with denoising_unet.pth and "
        "reference_unet.pth, so kinemate never reads them (3.4 GB saved).",
        "DWPose's ONNX files are not fetched: kinemate draws the skeleton maps from its own "
        "pose tracks (docs/pose.md).",
    ),
    files=(
        WeightFile(_AA_REPO, "denoising_unet.pth", "denoising_unet.pth",
                   min_size=1_719_041_928, approx_size=3_438_083_856, source=_MANIFESTS),
        WeightFile(_AA_REPO, "reference_unet.pth", "reference_unet.pth",
                   min_size=1_719_017_600, approx_size=3_438_035_200, source=_MANIFESTS),
        WeightFile(_AA_REPO, "motion_module.pth", "motion_module.pth",
                   min_size=908_835_200, approx_size=1_817_670_400, source=_MANIFESTS),
        WeightFile(_AA_REPO, "pose_guider.pth", "pose_guider.pth",
                   min_size=2_172_960, approx_size=4_345_920, source=_MANIFESTS),
        WeightFile(_CLIP_REPO, "image_encoder/config.json", "image_encoder/config.json"),
        WeightFile(_CLIP_REPO, "image_encoder/pytorch_model.bin", "image_encoder/pytorch_model.bin",
                   min_size=607_932_930, approx_size=1_215_865_860, source=_MANIFESTS),
        *_vae_files(),
        WeightFile(_SD_REPO, "unet/config.json", "stable-diffusion-v1-5/unet/config.json"),
    ),
)
