"""``kinemate finetune``: fine-tune a model on one subject's photos (DreamPose's recipe)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a model on photos of one person (DreamPose needs it for a new subject)",
        description=(
            "Fine-tune DreamPose's UNet and adapter, then its VAE decoder, on PHOTOS of one "
            "person with the official recipe (500 epochs at lr 1e-5; 1500 epochs at lr 5e-5, "
            "batch 4, 4 accumulated). Each photo needs its DensePose UV field beside it: "
            "NAME_densepose.npy (2, H, W) in [0, 1]. The result (-o) is a weights folder for "
            "'kinemate animate --model dreampose --weights OUT'. An interrupted run continues "
            "with --resume. See docs/dreampose.md."),
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="photos of the subject")
    p.add_argument("--model", default="dreampose", help="model family (dreampose)")
    p.add_argument("--weights", required=True, help="the DreamPose weights folder to start from")
    p.add_argument("-o", "--output", required=True, help="new weights folder to write")
    p.add_argument("--unet-epochs", type=int, default=500, metavar="N",
                   help="UNet + adapter epochs over the photos, batch 1 (official 500)")
    p.add_argument("--vae-epochs", type=int, default=1500, metavar="N",
                   help="VAE decoder epochs (official 1500)")
    p.add_argument("--vae-batch", type=int, default=4, metavar="N", help="VAE batch (official 4)")
    p.add_argument("--vae-accumulation", type=int, default=4, metavar="N",
                   help="VAE batches per optimiser step (official 4)")
    p.add_argument("--fixes", action="store_true",
                   help="fix the official training quirks (CLIP sees the photo, not an almost "
                        "black image; the target is cropped with the pose); the released "
                        "weights were trained without them")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (0)")
    p.add_argument("--checkpoint-every", type=int, default=50, metavar="N",
                   help="save the resumable state every N optimiser steps (50)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no",
                   help="accelerate's mixed precision (default no)")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="stop after N optimiser steps in this call (continue with --resume)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted fine-tune writing the same -o")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kinemate.errors import UsageError
    from kinemate.models.registry import get_family

    family = get_family(args.model)
    if family.name != "dreampose":
        raise UsageError(f"--model {family.name}: subject fine-tuning exists for dreampose only "
                         "(train other models with 'kinemate train')")
    from kinemate.train.dreampose import FinetuneConfig, finetune

    cfg = FinetuneConfig(unet_epochs=args.unet_epochs, vae_epochs=args.vae_epochs,
                         vae_batch=args.vae_batch, vae_accumulation=args.vae_accumulation,
                         fixes=args.fixes, seed=args.seed, checkpoint_every=args.checkpoint_every,
                         mixed_precision=args.mixed_precision)
    record = finetune(args.weights, args.photos, args.output, config=cfg, device=args.device,
                      resume=args.resume, progress=not args.no_progress, max_steps=args.max_steps)
    if "stopped" in record:
        stop = record["stopped"]
        print(f"stopped after {stop['phase']} step {stop['step']}; continue with the same "
              "command and --resume")
        return 0
    rates = ", ".join(f"{k} {v:.3g} steps/s" for k, v in (
        ("UNet + adapter", record.get("unet_steps_per_s")),
        ("VAE decoder", record.get("vae_steps_per_s"))) if v)
    print(f"wrote {args.output} ({rates}; loss curves in loss.png)")
    print(f"use:   kinemate animate --model dreampose --weights {args.output} PHOTO UV_FOLDER "
          "-o out.mp4")
    return 0
