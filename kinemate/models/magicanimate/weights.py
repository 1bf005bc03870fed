"""The published MagicAnimate weights: what ``kinemate weights download magicanimate`` fetches.

Declared here, with the family, and found by ``kinemate weights`` through the family registry.
"""

from __future__ import annotations

from kinemate.hub import WeightFile, WeightSet

# MagicAnimate release layout (what the official code and kinemate.load_pipeline read):
#   DIR/stable-diffusion-v1-5/{unet,vae,text_encoder,tokenizer,scheduler}/...
#   DIR/sd-vae-ft-mse/{config.json,diffusion_pytorch_model.safetensors}
#   DIR/MagicAnimate/{appearance_encoder,densepose_controlnet}/...,
#   DIR/MagicAnimate/temporal_attention/temporal_attention.ckpt
#
# Pinned sha256 values are the Git LFS object ids shown on the hub's file pages (noted per
# file). Sizes: exact when known; otherwise ``min_size`` is the float32 tensor payload from
# ../shared/reference/magicanimate/manifests/_summary.json (a file holding those tensors is at
# least that large) and ``approx_size`` the size the hub displays.

_MA_REPO = "zcxu-eric/MagicAnimate"
# Commit of the repository's main branch holding the release files (uploaded in 0aac567,
# unchanged since; 3d80ae8 only edited the README).
_MA_REV = "3d80ae8c50b289e55ee68deecc83afaab9c6a382"
_MA_SRC = "huggingface.co/zcxu-eric/MagicAnimate file page (Git LFS details), files of commit 0aac567"
_SD_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # community mirror of runwayml's repo
_VAE_REPO = "stabilityai/sd-vae-ft-mse"

MAGICANIMATE_WEIGHTS = WeightSet(
    name="magicanimate",
    description="MagicAnimate release checkpoints (appearance encoder, DensePose ControlNet, "
    "temporal attention) + Stable Diffusion 1.5 + sd-vae-ft-mse, in the release layout",
    license="MagicAnimate: BSD-3-Clause; SD1.5: CreativeML OpenRAIL-M; sd-vae-ft-mse: MIT",
    usage="kinemate animate --model magicanimate --weights {dir} ref.png densepose.mp4 -o out.mp4",
    notes=(
        "temporal_attention.ckpt is 5.11 GB on the hub: the size of the full 3D UNet state "
        "dict in float32 (1246 tensors, 5,110,013,456 bytes in the manifests), not only the "
        "motion modules (1.67 GB).",
    ),
    files=(
        # --- MagicAnimate ------------------------------------------------------------------
        WeightFile(_MA_REPO, "appearance_encoder/config.json",
                   "MagicAnimate/appearance_encoder/config.json", _MA_REV),
        WeightFile(_MA_REPO, "appearance_encoder/diffusion_pytorch_model.safetensors",
                   "MagicAnimate/appearance_encoder/diffusion_pytorch_model.safetensors", _MA_REV,
                   sha256="cb2e8f281d73eff5f9b7f0c94118496607cf5f29fc5b56535a19a8b68e79b619",
                   min_size=3_428_266_240, approx_size=3_430_000_000, source=_MA_SRC),
        WeightFile(_MA_REPO, "densepose_controlnet/config.json",
                   "MagicAnimate/densepose_controlnet/config.json", _MA_REV),
        WeightFile(_MA_REPO, "densepose_controlnet/diffusion_pytorch_model.safetensors",
                   "MagicAnimate/densepose_controlnet/diffusion_pytorch_model.safetensors", _MA_REV,
                   sha256="f5e06b41bd614e84eba294ebf2fa868ef31ffc88fca33987938fde3ec0eb67a4",
                   min_size=1_445_116_480, approx_size=1_450_000_000, source=_MA_SRC),
        WeightFile(_MA_REPO, "temporal_attention/temporal_attention.ckpt",
                   "MagicAnimate/temporal_attention/temporal_attention.ckpt", _MA_REV,
                   sha256="5e14b488d09569ddf5524cf6d671413b6fa6cf13ba2b1f304e5e965d2b997125",
                   min_size=1_671_929_600, approx_size=5_110_000_000, source=_MA_SRC),
        # --- Stable Diffusion 1.5 ----------------------------------------------------------
        WeightFile(_SD_REPO, "model_index.json", "stable-diffusion-v1-5/model_index.json"),
        WeightFile(_SD_REPO, "unet/config.json", "stable-diffusion-v1-5/unet/config.json"),
        WeightFile(_SD_REPO, "unet/diffusion_pytorch_model.bin",
                   "stable-diffusion-v1-5/unet/diffusion_pytorch_model.bin",
                   sha256="c7da0e21ba7ea50637bee26e81c220844defdf01aafca02b2c42ecdadb813de4",
                   min_size=3_438_083_856, approx_size=3_440_000_000,
                   source="Git LFS id of runwayml/stable-diffusion-v1-5 unet/diffusion_pytorch_model.bin "
                          "(commit 'add diffusers weights'), as shown on the file pages of its duplicates"),
        WeightFile(_SD_REPO, "vae/config.json", "stable-diffusion-v1-5/vae/config.json"),
        WeightFile(_SD_REPO, "vae/diffusion_pytorch_model.safetensors",
                   "stable-diffusion-v1-5/vae/diffusion_pytorch_model.safetensors",
                   sha256="a2b5134f4dbc140d9c11f11cba3233099e00af40f262f136c691fb7d38d2194c",
                   size=334_643_276, min_size=334_615_452,
                   source="Git LFS id and size of runwayml/stable-diffusion-v1-5 vae/diffusion_pytorch_model"
                          ".safetensors, as shown on the file pages and pointers of several duplicates"),
        WeightFile(_SD_REPO, "text_encoder/config.json", "stable-diffusion-v1-5/text_encoder/config.json"),
        WeightFile(_SD_REPO, "text_encoder/model.safetensors",
                   "stable-diffusion-v1-5/text_encoder/model.safetensors", approx_size=492_000_000),
        *(
            WeightFile(_SD_REPO, f"tokenizer/{n}", f"stable-diffusion-v1-5/tokenizer/{n}")
            for n in ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")
        ),
        WeightFile(_SD_REPO, "scheduler/scheduler_config.json",
                   "stable-diffusion-v1-5/scheduler/scheduler_config.json"),
        # --- sd-vae-ft-mse -----------------------------------------------------------------
        WeightFile(_VAE_REPO, "config.json", "sd-vae-ft-mse/config.json"),
        WeightFile(_VAE_REPO, "diffusion_pytorch_model.safetensors",
                   "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
                   sha256="a1d993488569e928462932c8c38a0760b874d166399b14414135bd9c42df5815",
                   size=334_643_276, min_size=334_615_452,
                   source="huggingface.co/stabilityai/sd-vae-ft-mse file page (Git LFS details, commit "
                          "651c6dc); the size is that of the same LFS object in other repositories' pointers"),
    ),
)
