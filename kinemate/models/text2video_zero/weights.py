"""What ``kinemate weights download text2video-zero`` fetches: Stable Diffusion 1.5 (the same
files, pins and local layout as the MagicAnimate set, so one download can serve both) and the
OpenPose ControlNet v1.0 the diffusers docs recipe uses (``lllyasviel/sd-controlnet-openpose``;
the official code loads ``fusing/stable-diffusion-v1-5-controlnet-openpose``, a conversion of
the same ``control_sd15_openpose`` checkpoint). The ControlNet file is not pinned (the
reference kit gives no hash): its size is checked against a lower bound, the float32 size of
an SD1.5 ControlNet's tensors (the same architecture as MagicAnimate's DensePose ControlNet,
whose manifest gives 1,445,116,480 bytes), and the download prints the hash it computed.
"""

from __future__ import annotations

from kinemate.hub import WeightFile, WeightSet

_CN_REPO = "lllyasviel/sd-controlnet-openpose"


def _sd15_files() -> tuple[WeightFile, ...]:
    from kinemate.models.magicanimate.weights import MAGICANIMATE_WEIGHTS

    return tuple(f for f in MAGICANIMATE_WEIGHTS.files
                 if f.target.startswith("stable-diffusion-v1-5/"))


T2VZ_WEIGHTS = WeightSet(
    name="text2video-zero",
    description="Stable Diffusion 1.5 (UNet, VAE, CLIP text encoder, tokenizer) + the OpenPose "
    "ControlNet v1.0, for Text2Video-Zero (no trained weights of its own)",
    license="SD1.5: CreativeML OpenRAIL-M; sd-controlnet-openpose: OpenRAIL",
    usage='kinemate animate --model text2video-zero --weights {dir} --prompt "an astronaut '
          'dancing" dance.mp4 -o out.mp4',
    notes=(
        "The SD1.5 files are the MagicAnimate set's (same pins, same stable-diffusion-v1-5/ "
        "layout): downloading both sets into one folder fetches them once.",
        "sd-controlnet-openpose's weights are not pinned (no published hash in the reference "
        "kit): the size is checked against a lower bound and the computed sha256 is printed.",
    ),
    files=(
        *_sd15_files(),
        WeightFile(_CN_REPO, "config.json", "sd-controlnet-openpose/config.json"),
        WeightFile(_CN_REPO, "diffusion_pytorch_model.bin",
                   "sd-controlnet-openpose/diffusion_pytorch_model.bin",
                   min_size=1_445_116_480, approx_size=1_450_000_000,
                   source="lower bound: float32 tensor bytes of an SD1.5 ControlNet (the "
                          "MagicAnimate kit's densepose_controlnet manifest)"),
    ),
)
