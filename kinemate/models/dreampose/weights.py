"""DreamPose's files: what ``kinemate weights download dreampose`` fetches (CLIP, from the
hub) and what ``kinemate weights import dreampose`` takes (the Google Drive checkpoints).

The checkpoints themselves are on Google Drive (the README's links) without published hashes;
kinemate does not download from Drive. A user downloads them in a browser and imports them:
``kinemate weights import dreampose unet_epoch_499.pth adapter_499.pth vae_1499.pth
checkpoint-499/ --dir W`` checks every tensor's name and shape against the networks, records
each file's sha256 in ``W/dreampose-import.json`` and moves the files into place atomically.
"""

from __future__ import annotations

from kinemate.hub import WeightFile, WeightSet

CLIP_REPO = "openai/clip-vit-base-patch32"

DRIVE_LINKS = {
    "base model (UBC Fashion, phase 1): unet_epoch_20.pth + adapter_20.pth":
        "https://drive.google.com/file/d/10JjayW2mMqGxhUyM9ds_GHEvuqCTDaH3",
    "demo subject (custom-chkpts.zip): unet_epoch_499.pth, adapter_499.pth, vae_1499.pth, "
    "checkpoint-499/": "https://drive.google.com/drive/folders/15SaT3kZFRIjxuHT6UrGr6j0183clTK_D",
    "demo poses (poses.zip): frame_<n>_densepose.npy":
        "https://drive.google.com/drive/folders/1CjzcOp_ZUt-dyrzNAFE0T8bS3cbKTsVG",
}

DREAMPOSE_CLIP = WeightSet(
    name="dreampose",
    description="DreamPose's image encoder (openai/clip-vit-base-patch32, which the official "
                "pipeline loads from the hub). The UNet, adapter and VAE checkpoints are on "
                "Google Drive without hashes: download them in a browser and run 'kinemate "
                "weights import dreampose FILES... --dir DIR' (see the notes)",
    files=(
        WeightFile(CLIP_REPO, "config.json", "clip-vit-base-patch32/config.json",
                   approx_size=4_200),
        WeightFile(CLIP_REPO, "preprocessor_config.json",
                   "clip-vit-base-patch32/preprocessor_config.json", approx_size=320),
        # the whole CLIP (vision + text); the vision tower alone is 87.8 M float32 parameters
        WeightFile(CLIP_REPO, "pytorch_model.bin", "clip-vit-base-patch32/pytorch_model.bin",
                   min_size=351_000_000, approx_size=605_000_000,
                   source="lower bound: the vision tower's float32 tensors"),
    ),
    license="MIT (DreamPose code); CLIP: MIT; the checkpoints: see the DreamPose README",
    usage="kinemate animate --model dreampose --weights {dir} photo.png uv_frames/ -o out.mp4",
    notes=tuple(f"{what}: {url}" for what, url in DRIVE_LINKS.items()) + (
        "Drive files have no published hashes: 'kinemate weights import dreampose FILES... "
        "--dir DIR' checks their tensors' names and shapes and records their sha256",
        "a new person needs subject fine-tuning: 'kinemate finetune --model dreampose "
        "--weights DIR photo.png -o DIR_subject' (the demo checkpoints animate the demo "
        "subject only)"),
)

__all__ = ["CLIP_REPO", "DREAMPOSE_CLIP", "DRIVE_LINKS"]
