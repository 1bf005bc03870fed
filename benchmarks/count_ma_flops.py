"""Arithmetic of one MagicAnimate step at full size, counted on the meta device (no weights, no
memory): the appearance encoder once per step, the ControlNet per frame, the video UNet on one
window with classifier-free guidance (lean path), and what window-parallel sampling sends per
step (the all-reduced sums and counts). The paper figures of docs/engine.md, "Many GPUs".

    .venv/bin/python benchmarks/count_ma_flops.py                    # 512x512, 16-frame window
    .venv/bin/python benchmarks/count_ma_flops.py --frames 64 1024
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO.parent / "shared/reference/magicanimate/configs"


def main() -> None:
    from diffusers import ControlNetModel

    from kinemate.models import AppearanceEncoder, ReferenceBank, VideoUNet
    from kinemate.models.loading import build_on_meta
    from kinemate.pipeline.context import context_windows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="square size in pixels")
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--overlap", type=int, default=4)
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 64, 1024])
    args = ap.parse_args()
    load = lambda name: json.loads((CONFIGS / name).read_text())  # noqa: E731
    motion = load("magicanimate_inference.json")["unet_additional_kwargs"]
    unet = build_on_meta(lambda: VideoUNet.from_2d_config(load("sd15_unet_config.json"), motion))
    appearance = build_on_meta(lambda: AppearanceEncoder.from_unet_config(
        load("appearance_encoder_config.INFERRED.json")))
    controlnet = build_on_meta(lambda: ControlNetModel.from_config(
        load("densepose_controlnet_config.INFERRED.json")))
    h = w = args.size // 8
    f = args.window
    bank = ReferenceBank(lean=True)
    counts = {}
    with torch.device("meta"):
        text = torch.zeros(1, 77, 768)
        runs = (
            ("appearance encoder, per step", lambda: appearance.write(
                torch.zeros(1, 4, h, w), torch.tensor(999), text, bank)),
            ("ControlNet, per frame and step", lambda: controlnet(
                torch.zeros(1, 4, h, w), torch.tensor(999), encoder_hidden_states=text,
                controlnet_cond=torch.zeros(1, 3, args.size, args.size), return_dict=False)),
            ("video UNet with CFG, per window and step", lambda: unet(
                torch.zeros(2, 4, f, h, w), torch.tensor(999), text.expand(2, -1, -1),
                cross_attention_kwargs={"reference": bank.reader(f, 1)})),
        )
        for name, run in runs:
            with FlopCounterMode(display=False) as counter:
                run()
            counts[name] = counter.get_total_flops()
    for name, flops in counts.items():
        print(f"{name:45s} {flops / 1e12:8.3f} TFLOP")
    for n in args.frames:
        windows = len(context_windows(n, f, args.overlap))
        step = (counts["appearance encoder, per step"] + n * counts["ControlNet, per frame and step"]
                + windows * counts["video UNet with CFG, per window and step"])
        sent = (2 * 4 * n * h * w + n + 1) * 2  # float16 sums (2 halves), counts, a flag
        print(f"{n:5d} frames: {windows:3d} windows, {step / 1e15:7.3f} PFLOP per step, "
              f"{25 * step / 1e15:7.2f} PFLOP for 25 steps; all-reduce {sent / 2**20:7.2f} MiB "
              f"per step")


if __name__ == "__main__":
    main()
