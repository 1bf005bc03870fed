"""``kinemate train``: train a model (VAE, stage 1, stage 2) from a config file.

Single process: ``kinemate train --config configs/kinemate-tiny.yaml``. Several GPUs:
``accelerate launch -m kinemate train --config FILE`` (the same code; accelerate starts one
process per GPU).
"""

from __future__ import annotations

import json

from kinemate.errors import UsageError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model (VAE, appearance encoder + ControlNet, temporal modules)",
        description=(
            "Train the stages listed in a config file (JSON or YAML; see docs/training.md): "
            "'vae' (a small autoencoder), 'stage1' (appearance encoder + pose ControlNet on "
            "frame pairs) and 'stage2' (temporal modules on clips). Outputs, checkpoints, loss "
            "curves and sample videos go to the config's output_dir. For several GPUs run "
            "'accelerate launch -m kinemate train --config FILE'."
        ),
    )
    p.add_argument("--config", required=True, help="training config file (.json, .yaml)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in output_dir: skip finished stages, resume the "
                        "unfinished one from its newest checkpoint")
    p.add_argument("--only", metavar="STAGE", action="append", default=None,
                   help="run only this stage (its name, else its kind: vae, stage1, stage2); repeatable")
    p.add_argument("--output-dir", help="override the config's output_dir")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="stop after N optimizer steps in this call (checkpointed; continue "
                        "later with --resume)")
    p.add_argument("--no-export", action="store_true", help="do not copy the result to export_dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from kinemate.train.config import load_config
    from kinemate.train.trainer import stage_summary, train

    overrides: dict = {}
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.no_export:
        overrides["export_dir"] = None
    cfg = load_config(args.config, overrides)
    if args.only:
        names = [s.id for s in cfg.stages]
        bad = [k for k in args.only if k not in names]
        if bad:
            raise UsageError(f"--only {bad[0]}: the config has no such stage (it has {', '.join(names)})")
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError("--max-steps must be at least 1")
    result = train(cfg, resume=args.resume, progress=not args.no_progress,
                   stop_after_steps=args.max_steps, only=args.only)
    print(json.dumps({"output_dir": cfg.output_dir, "result": str(result),
                      "stages": stage_summary(cfg)}, indent=2))
    return 0
