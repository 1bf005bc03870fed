"""``kinemate eval`` — evaluate generated videos; compare runs; show the PSNR trap.

    kinemate eval videos --generated GEN/ --ground-truth GT/ -o report/
    kinemate eval dataset DATA/ -o report/ [--weights W/ | --command "prog {reference} {driving} {output}"]
    kinemate eval compare report_a/ report_b/ -o comparison/
    kinemate eval psnr A.mp4 B.mp4
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from kinemate.errors import UsageError


def _size(text: str):
    if text.lower() in ("native", "gt", "none"):
        return None
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"size must be WxH, N or 'native', got {text!r}")
    w = int(m.group(1))
    return (w, int(m.group(2) or w))


def _protocol_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("protocol (written into the report)")
    g.add_argument("--size", type=_size, default=(256, 256), metavar="WxH",
                   help="resolution every video is framed to (default 256x256; 'native' = ground truth's size)")
    g.add_argument("--fit", choices=("crop", "letterbox"), default="crop", help="aspect-preserving fit (default crop)")
    g.add_argument("--start", type=int, default=0, help="first frame (default 0)")
    g.add_argument("--stride", type=int, default=1, help="use every N-th frame (default 1)")
    g.add_argument("--max-frames", type=int, default=None, metavar="N", help="frames per video (default all)")
    g.add_argument("--clip-len", type=int, default=16, metavar="N", help="frames per FVD/FID-VID clip (default 16)")
    g.add_argument("--pck-alpha", type=float, default=0.1, help="PCK threshold as a fraction of body size (default 0.1)")
    g.add_argument("--flow", choices=("self", "ground-truth"), default="self",
                   help="which video the flicker flow is computed on (default: the evaluated one)")
    g.add_argument("--no-pose", action="store_true", help="skip pose re-detection (faster)")
    n = p.add_argument_group("metric networks (local files only; see docs/evaluation.md)")
    n.add_argument("--metric-weights", metavar="DIR",
                   help="folder holding the published LPIPS / Inception / I3D / 3D-ResNet files")
    n.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex", help="LPIPS backbone (default alex)")
    n.add_argument("--random-networks", action="store_true",
                   help="tiny RANDOM networks instead (plumbing test; LPIPS/FID/FVD values meaningless)")
    n.add_argument("--device", default="cpu", help="torch device for the metric networks (default cpu)")
    n.add_argument("--identity-embedding", metavar="MODULE:FUNC",
                   help="identity embedding function (uint8 HxWx3 -> vector), e.g. a face network wrapper; "
                        "default: the weight-free appearance proxy")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="report folder")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate generated videos (PSNR, SSIM, LPIPS, FID, FVD, flicker, pose, identity)",
        description="Evaluate generated videos against ground truth with a declared protocol; write a "
                    "Markdown + JSON + PNG report; compare runs. See docs/evaluation.md.",
    )
    sub = p.add_subparsers(dest="eval_command", metavar="MODE")

    v = sub.add_parser("videos", help="generated videos vs. ground-truth videos (matched by file name)",
                       description="Evaluate every video of --generated against the ground-truth video of the "
                                   "same name in --ground-truth.")
    v.add_argument("--generated", required=True, metavar="DIR", help="folder of generated videos")
    v.add_argument("--ground-truth", "--gt", required=True, metavar="DIR", help="folder of ground-truth videos")
    v.add_argument("--references", metavar="DIR",
                   help="reference photos (same names) for identity drift (default: each ground truth's first frame)")
    v.add_argument("--driving", metavar="DIR", help="driving videos (same names); unused when ground truth exists")
    _protocol_args(v)
    v.set_defaults(func=run_videos)

    d = sub.add_parser("dataset", help="generate a dataset's samples, then evaluate them",
                       description="DIR holds one folder per sample with reference.<image>, driving.<video> and "
                                   "optionally ground_truth.<video>. Each is generated into OUT/generated/ with "
                                   "the kinemate pipeline (--weights) or any --command, then evaluated.")
    d.add_argument("dataset", metavar="DIR")
    d.add_argument("--weights", metavar="DIR", help="kinemate pipeline weights (default: the default model, "
                                                         "kinemate-photo, which needs none)")
    d.add_argument("--command", metavar="TEMPLATE",
                   help='generate with another program: "prog --ref {reference} --drive {driving} --out {output}"')
    d.add_argument("--steps", type=int, default=None, help="sampler steps for the kinemate pipeline")
    d.add_argument("--guidance", type=float, default=None, help="guidance scale for the kinemate pipeline")
    d.add_argument("--seed", type=int, default=0, help="seed for the kinemate pipeline (default 0)")
    d.add_argument("--regenerate", action="store_true", help="regenerate videos already in OUT/generated/")
    _protocol_args(d)
    d.set_defaults(func=run_dataset)

    c = sub.add_parser("compare", help="put several report folders side by side",
                       description="Compare report folders (written by 'eval videos' / 'eval dataset'); warns when "
                                   "protocols or metric networks differ.")
    c.add_argument("reports", nargs="+", metavar="REPORT_DIR")
    c.add_argument("--names", nargs="+", help="column names (default: folder names)")
    c.add_argument("-o", "--output", required=True, metavar="DIR")
    c.set_defaults(func=run_compare)

    s = sub.add_parser("psnr", help="float PSNR next to the uint8-overflow PSNR of the widely copied script",
                       description="Print, per frame and on average, the correct PSNR of two videos/images and the "
                                   "value the uint8-overflow script would report.")
    s.add_argument("a")
    s.add_argument("b")
    s.add_argument("--size", type=_size, default=None, metavar="WxH", help="frame both to this size (default: b's)")
    s.add_argument("--max-frames", type=int, default=None)
    s.set_defaults(func=run_psnr)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _protocol(args):
    from kinemate.eval.runner import Protocol

    return Protocol(size=args.size, fit=args.fit, start=args.start, stride=args.stride, max_frames=args.max_frames,
                    clip_len=args.clip_len, pck_alpha=args.pck_alpha, flow=args.flow, pose=not args.no_pose)


def _networks(args):
    from kinemate.eval.networks import load_embedding, networks_from_dir, random_networks

    if args.random_networks and args.metric_weights:
        raise UsageError("use either --metric-weights or --random-networks, not both")
    embed = load_embedding(args.identity_embedding) if args.identity_embedding else (None, None)
    if args.random_networks:
        nets = random_networks(device=args.device)
    else:
        nets = networks_from_dir(args.metric_weights, lpips_net=args.lpips_net, device=args.device)
    nets.identity, nets.identity_name = embed
    return nets


def _finish(report: dict, args) -> int:
    from kinemate.eval.report import summary_lines, write_report

    md = write_report(report, args.output, plots=not args.no_plots)
    if args.json:
        print(json.dumps({"summary": report["summary"],
                          "set_metrics": {k: v.get("value") for k, v in report["set_metrics"].items()}},
                         default=str, indent=1))
    else:
        for line in summary_lines(report["summary"]):
            print(line)
        for k, d in report["set_metrics"].items():
            print(f"{k}: {'n/a (' + d.get('why', '') + ')' if d.get('value') is None else format(d['value'], '.3f')}")
        for note in report["notes"]:
            print(f"note: {note}", file=sys.stderr)
    print(f"report: {md}", file=sys.stderr)
    return 0


def run_videos(args) -> int:
    from kinemate.eval.runner import evaluate_videos

    report = evaluate_videos(args.generated, args.ground_truth, protocol=_protocol(args), networks=_networks(args),
                             references=args.references, driving=args.driving)
    return _finish(report, args)


def run_dataset(args) -> int:
    from kinemate.eval.runner import command_generator, evaluate_dataset, pipeline_generator

    protocol = _protocol(args)
    if args.command and args.weights:
        raise UsageError("use either --weights (kinemate pipeline) or --command (another program), not both")
    if args.command:
        generator = command_generator(args.command)
    else:
        try:
            from kinemate.pipeline import load_pipeline
        except ImportError as exc:
            raise UsageError("the kinemate pipeline is not available in this install; use --command") from exc
        pipe = load_pipeline(args.weights)
        kw = {"seed": args.seed}
        if args.steps is not None:
            kw["steps"] = args.steps
        if args.guidance is not None:
            kw["guidance"] = args.guidance
        if protocol.size:
            kw["size"] = protocol.size
        if protocol.max_frames:  # generate only the frames the protocol will read
            kw["max_frames"] = protocol.start + protocol.stride * (protocol.max_frames - 1) + 1
        generator = pipeline_generator(pipe, weights=args.weights, fit=protocol.fit, **kw)
    report = evaluate_dataset(args.dataset, args.output, generator=generator, protocol=protocol,
                              networks=_networks(args), skip_existing=not args.regenerate)
    return _finish(report, args)


def run_compare(args) -> int:
    from kinemate.eval.report import compare_reports

    md = compare_reports(args.reports, args.output, names=args.names)
    print(md.read_text(encoding="utf-8").split("\n\nProtocol")[0])
    print(f"comparison: {md}", file=sys.stderr)
    return 0


def run_psnr(args) -> int:
    import numpy as np

    from kinemate.eval import metrics as M
    from kinemate.eval.runner import IMAGE_SUFFIXES, Protocol, load_frames
    from kinemate.io import fit_image, read_image
    from pathlib import Path

    def frames(path, size):
        if Path(path).suffix.lower() in IMAGE_SUFFIXES:
            img = read_image(path)
            return (fit_image(img, size) if size else img)[None]
        return load_frames(Path(path), Protocol(size=size, max_frames=args.max_frames, pose=False), size)

    b = frames(args.b, args.size)
    a = frames(args.a, (b.shape[2], b.shape[1]))
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    good, bad = np.atleast_1d(M.psnr(a, b)), np.atleast_1d(M.psnr_uint8_overflow(a, b))
    print("frame  PSNR(float)  PSNR(uint8-overflow script)")
    for i in range(n):
        print(f"{i:5d}  {good[i]:11.2f}  {bad[i]:11.2f}")
    fin = lambda x: float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else float("inf")  # noqa: E731
    print(f"mean   {fin(good):11.2f}  {fin(bad):11.2f}   <- report the float PSNR")
    return 0
