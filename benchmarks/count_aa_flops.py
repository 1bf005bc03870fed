"""Arithmetic of Animate Anyone's networks at full size, counted on the meta device (no weights,
no memory): the pose guider per frame, the reference UNet once per video, the denoising UNet
per frame of a window with classifier-free guidance (lean path). This is the figure behind
running the pose guider per frame and step instead of once per video (docs/engine.md).

    .venv/bin/python benchmarks/count_aa_flops.py                     # 512x768, 24-frame window
    .venv/bin/python benchmarks/count_aa_flops.py --size 512x512 --window 16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO.parent / "shared/reference/animate-anyone/configs/sd15_unet_config.json"


def main() -> None:
    from kinemate.io.framing import parse_size
    from kinemate.models.animate_anyone import networks
    from kinemate.models.loading import build_on_meta
    from kinemate.models.reference import ReferenceBank

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512x768", help="W x H in pixels")
    parser.add_argument("--window", type=int, default=24, help="frames per window")
    args = parser.parse_args()
    width, height = parse_size(args.size)
    config = json.loads(CONFIG.read_text())
    unet = build_on_meta(lambda: networks.denoising_unet(config))
    reference = build_on_meta(lambda: networks.reference_unet(config))
    guider = build_on_meta(lambda: networks.pose_guider(config))
    h, w, f = height // 8, width // 8, args.window
    bank = ReferenceBank()
    with torch.device("meta"):
        counts = {}
        for name, run in (
            ("pose guider, per frame", lambda: guider(torch.zeros(1, 3, height, width))),
            ("reference UNet, once per video", lambda: reference.write(
                torch.zeros(1, 4, h, w), torch.zeros((), dtype=torch.long),
                torch.zeros(1, 1, 768), bank)),
            ("denoising UNet with CFG, per frame", lambda: unet(
                torch.zeros(2, 4, f, h, w), torch.tensor(999), torch.zeros(2, 1, 768),
                cross_attention_kwargs={"reference": bank.reader(f, 1)},
                conv_in_residual=torch.zeros(2, 320, f, h, w)))):
            with FlopCounterMode(display=False) as counter:
                run()
            counts[name] = counter.get_total_flops() / (f if "per frame" in name and "UNet"
                                                        in name else 1)
    for name, flops in counts.items():
        print(f"{name:40s} {flops / 1e9:10.1f} GFLOP")
    share = counts["pose guider, per frame"] / counts["denoising UNet with CFG, per frame"]
    print(f"pose guider / denoising UNet per frame and step: {100 * share:.2f} %")


if __name__ == "__main__":
    main()
