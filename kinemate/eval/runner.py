"""Evaluation runs: generated vs. ground-truth videos, or a dataset generated on the spot.

Two entry points, both ending in the same per-video evaluation and the same report:

* :func:`evaluate_videos` — folders of generated and ground-truth videos (matched by file
  stem; a video is a file or a folder of frames);
* :func:`evaluate_dataset` — a dataset folder with one sub-folder per sample holding
  ``reference.<image>``, ``driving.<video>`` and optionally ``ground_truth.<video>`` (or
  ``gt.<video>``); each sample is first generated with a *generator* (the kinemate pipeline, or
  any command), written to ``<out>/generated/<name>.mp4``, then evaluated.

Every run follows a declared :class:`Protocol` (resolution, fit, frames, stride, clip length)
that is written into the report, so two reports can be compared only when they measured the
same thing (:func:`kinemate.eval.report.compare_reports` checks this).
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from kinemate import __version__
from kinemate.errors import InputError, NoPersonError, UsageError
from kinemate.eval import metrics as M
from kinemate.eval.fid import frechet_from_features, image_features
from kinemate.eval.flicker import warping_error
from kinemate.eval.identity import identity_drift
from kinemate.eval.lpips import lpips_frames
from kinemate.eval.networks import Networks
from kinemate.eval.pose_metrics import pose_accuracy

__all__ = ["Protocol", "Sample", "evaluate_videos", "evaluate_dataset", "evaluate_samples",
           "find_video_pairs", "find_dataset_samples", "command_generator", "pipeline_generator",
           "load_frames"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif"}


@dataclass
class Protocol:
    """What is measured: every report states it; compare mode refuses to hide differences.

    ``size`` (W, H) every video is framed to (None: the ground truth's own size); ``fit`` how
    (aspect-preserving "crop" or "letterbox", never a stretch); frames ``start``,
    ``start + stride``, … up to ``max_frames``; clips of ``clip_len`` frames (non-overlapping) for
    FVD / FID-VID; ``pck_alpha`` the PCK threshold; ``flow`` which video the flicker flow comes
    from ("self": the evaluated video; "ground-truth").
    """

    size: tuple[int, int] | None = (256, 256)
    fit: str = "crop"
    start: int = 0
    stride: int = 1
    max_frames: int | None = None
    clip_len: int = 16
    pck_alpha: float = 0.1
    flow: str = "self"
    pose: bool = True

    def __post_init__(self):
        if self.fit not in ("crop", "letterbox"):
            raise UsageError(f"fit must be 'crop' or 'letterbox', got {self.fit!r}")
        if self.stride < 1 or self.start < 0:
            raise UsageError(f"stride must be >= 1 and start >= 0 (got stride={self.stride}, start={self.start})")
        if self.max_frames is not None and self.max_frames < 2:
            raise UsageError("max_frames must be at least 2 (flicker needs two frames)")
        if self.clip_len < 2:
            raise UsageError("clip_len must be at least 2")
        if self.flow not in ("self", "ground-truth"):
            raise UsageError(f"flow must be 'self' or 'ground-truth', got {self.flow!r}")
        if self.size is not None:
            self.size = (int(self.size[0]), int(self.size[1]))
            if min(self.size) < 16:
                raise UsageError(f"evaluation size {self.size} is too small; use at least 16x16")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size) if self.size else None
        return d


@dataclass
class Sample:
    name: str
    generated: Path
    ground_truth: Path | None = None
    reference: Path | None = None
    driving: Path | None = None


# ----------------------------------------------------------------------------------- discovery

def _is_video(p: Path) -> bool:
    if p.is_dir():
        return any(c.suffix.lower() in IMAGE_SUFFIXES for c in p.iterdir())
    return p.suffix.lower() in VIDEO_SUFFIXES and ".kinemate-tmp-" not in p.name


def _by_stem(folder: Path | None, kind: str) -> dict[str, Path]:
    if folder is None:
        return {}
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; pass a folder of {kind}")
    test = _is_video if kind == "videos" else (lambda p: p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return {p.stem: p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and test(p)}


def find_video_pairs(generated: Path, ground_truth: Path, *, references: Path | None = None,
                     driving: Path | None = None) -> tuple[list[Sample], list[str]]:
    """Match generated and ground-truth videos by file stem. Returns (samples, notes)."""
    gen, gt = _by_stem(generated, "videos"), _by_stem(ground_truth, "videos")
    refs, drv = _by_stem(references, "images"), _by_stem(driving, "videos")
    names = sorted(set(gen) & set(gt))
    notes = []
    if only := sorted(set(gen) - set(gt)):
        notes.append(f"{len(only)} generated video(s) without ground truth were skipped: {', '.join(only[:5])}")
    if only := sorted(set(gt) - set(gen)):
        notes.append(f"{len(only)} ground-truth video(s) without a generated video were skipped: {', '.join(only[:5])}")
    if not names:
        raise UsageError(
            f"no generated video in {generated} has a ground-truth video of the same name in {ground_truth}; "
            "name them alike (e.g. 001.mp4 in both folders)"
        )
    return [Sample(n, gen[n], gt[n], refs.get(n), drv.get(n)) for n in names], notes


def _one(folder: Path, stems: tuple[str, ...], suffixes: set[str]) -> Path | None:
    for stem in stems:
        for p in sorted(folder.glob(stem + ".*")):
            if p.suffix.lower() in suffixes:
                return p
        if (folder / stem).is_dir() and suffixes is VIDEO_SUFFIXES:
            return folder / stem
    return None


def find_dataset_samples(dataset: Path) -> list[tuple[str, Path, Path, Path | None]]:
    """(name, reference image, driving video, ground truth or None) for each sample folder."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise UsageError(f"dataset folder {dataset} does not exist")
    out = []
    for sub in sorted(p for p in dataset.iterdir() if p.is_dir() and not p.name.startswith(".")):
        ref = _one(sub, ("reference",), IMAGE_SUFFIXES)
        drv = _one(sub, ("driving",), VIDEO_SUFFIXES)
        gt = _one(sub, ("ground_truth", "gt"), VIDEO_SUFFIXES)
        if ref is None or drv is None:
            log.warning("skipping %s: needs reference.<image> and driving.<video>", sub)
            continue
        out.append((sub.name, ref, drv, gt))
    if not out:
        raise UsageError(
            f"{dataset} has no sample folders; each sample is a folder holding reference.png, "
            "driving.mp4 and (optionally) ground_truth.mp4 — see docs/evaluation.md"
        )
    return out


# ----------------------------------------------------------------------------------- frames

def load_frames(path: Path, protocol: Protocol, size: tuple[int, int] | None = None) -> np.ndarray:
    """The protocol's frames of one video, framed to ``size`` (W, H) (default: protocol.size or
    the video's own size): uint8 (F, H, W, 3)."""
    from kinemate.io import Framing, open_video

    frames = []
    with open_video(path) as reader:
        dst = size or protocol.size or (reader.width, reader.height)
        framing = Framing.compute((reader.width, reader.height), dst, protocol.fit)
        for i, frame in enumerate(reader):
            if i < protocol.start or (i - protocol.start) % protocol.stride:
                continue
            if frame.shape[1] != framing.src_wh[0] or frame.shape[0] != framing.src_wh[1]:
                framing = Framing.compute((frame.shape[1], frame.shape[0]), dst, protocol.fit)
            frames.append(framing.apply(frame))
            if protocol.max_frames and len(frames) >= protocol.max_frames:
                break
    if not frames:
        raise InputError(f"{path} has no frames at start={protocol.start}, stride={protocol.stride}; "
                         "lower --start or check the video")
    return np.stack(frames)


def _load_reference(path: Path, size: tuple[int, int], fit: str) -> np.ndarray:
    from kinemate.io import fit_image, read_image

    return fit_image(read_image(path), size, fit)


def _clips(frames: np.ndarray, clip_len: int) -> list[np.ndarray]:
    return [frames[i : i + clip_len] for i in range(0, len(frames) - clip_len + 1, clip_len)]


def _pose_of(frames: np.ndarray):
    from kinemate.pose import extract_pose  # noqa: PLC0415 - optional dependency path

    return extract_pose(frames, progress=False, require_person=False, smooth=False, max_people=1)


def _pose_available() -> str | None:
    try:
        from kinemate.pose import extract_pose  # noqa: F401
    except ImportError as exc:
        return f"not available: kinemate.pose.extract_pose cannot be imported ({exc})"
    return None


# ----------------------------------------------------------------------------------- evaluation

def _evaluate_one(s: Sample, protocol: Protocol, nets: Networks, feats: dict, notes: list[str]) -> dict:
    gt = load_frames(s.ground_truth, protocol) if s.ground_truth else None
    size = (gt.shape[2], gt.shape[1]) if gt is not None else protocol.size
    gen = load_frames(s.generated, protocol, size)
    if gt is not None and len(gt) != len(gen):
        n = min(len(gt), len(gen))
        notes.append(f"{s.name}: generated has {len(gen)} frames and ground truth {len(gt)}; compared the first {n}")
        gen, gt = gen[:n], gt[:n]
    per_frame: dict[str, list] = {}
    summary: dict[str, float] = {}
    if gt is not None:
        per_frame["l1"] = M.l1(gen, gt)
        per_frame["psnr"] = M.psnr(gen, gt)
        per_frame["psnr_uint8_trap"] = M.psnr_uint8_overflow(gen, gt)
        per_frame["ssim"] = M.ssim(gen, gt)
        if nets.lpips is not None:
            per_frame["lpips"] = lpips_frames(nets.lpips, gen, gt)
        # PSNR over the whole video from the pooled MSE (not the mean of per-frame dB values)
        mse = M.mse(gen, gt)
        summary["psnr_pooled"] = float(M._psnr_from_mse(np.atleast_1d(np.mean(mse)))[0])
    # flicker of the generated video, and of the ground truth as the natural level
    fl = warping_error(gen, flow_from=gt if (protocol.flow == "ground-truth" and gt is not None) else None)
    per_frame["warp_mae"] = fl.warp_mae
    per_frame["warp_mse"] = fl.warp_mse
    summary.update({f"flicker_{k}": v for k, v in fl.summary().items()})
    if gt is not None:
        summary["gt_flicker_warp_mae"] = warping_error(gt).summary()["warp_mae"]
    # pose
    gen_pose = drv_pose = None
    if protocol.pose and "pose" not in nets.missing:
        target = gt if gt is not None else (load_frames(s.driving, protocol, size) if s.driving else None)
        if target is not None:
            n = min(len(target), len(gen))
            drv_pose = _pose_of(target[:n])
            gen_pose = _pose_of(gen[:n])
            pr = pose_accuracy(gen_pose, drv_pose, alpha=protocol.pck_alpha)
            per_frame["pck"] = pr.pck
            per_frame["mke_norm"] = pr.mke_norm
            summary.update(pr.summary())
    # identity drift against the reference photo (or the first ground-truth frame)
    if s.reference is not None:
        ref, ref_box, ref_src = _load_reference(s.reference, (gen.shape[2], gen.shape[1]), protocol.fit), None, "reference photo"
    elif gt is not None:
        ref, ref_box, ref_src = gt[0], None, "first ground-truth frame"
    else:
        ref = None
    if ref is not None:
        boxes = None
        if gen_pose is not None:  # person boxes on both sides, so like regions are compared
            boxes = [gen_pose.bbox(i, 0.3) for i in range(len(gen_pose))]
            if s.reference is None and drv_pose is not None:
                ref_box = drv_pose.bbox(0, 0.3)
            else:
                ref_box = _pose_of(ref[None]).bbox(0, 0.3)
        idr = identity_drift(gen, ref, boxes=boxes, reference_box=ref_box, embed=nets.identity,
                             embedding_name=nets.identity_name)
        per_frame["identity"] = idr.similarity
        summary.update(idr.summary())
        summary_ref = ref_src
    else:
        summary_ref = None
    # set-level features
    if nets.inception is not None and gt is not None:
        feats["fid_gen"].append(image_features(nets.inception, gen))
        feats["fid_gt"].append(image_features(nets.inception, gt))
    for key, net in (("fvd", nets.i3d), ("fid_vid", nets.resnet3d)):
        if net is not None and gt is not None:
            cg, ct = _clips(gen, protocol.clip_len), _clips(gt, protocol.clip_len)
            if cg:
                feats[f"{key}_gen"].append(net(cg))
                feats[f"{key}_gt"].append(net(ct))
    for k in ("l1", "psnr", "psnr_uint8_trap", "ssim", "lpips"):
        if k in per_frame:  # plain mean: one identical frame makes the mean PSNR inf (see psnr_pooled)
            summary[k] = float(np.mean(per_frame[k]))
    return {
        "name": s.name,
        "generated": str(s.generated),
        "ground_truth": str(s.ground_truth) if s.ground_truth else None,
        "reference": str(s.reference) if s.reference else None,
        "identity_reference": summary_ref,
        "frames": int(len(gen)),
        "size": [int(gen.shape[2]), int(gen.shape[1])],
        "per_frame": {k: [float(x) for x in np.asarray(v, np.float64)] for k, v in per_frame.items()},
        "summary": summary,
    }


def _set_metric(feats: dict, key: str, nets_missing: str | None, unit: str) -> dict:
    g, t = feats.get(f"{key}_gen"), feats.get(f"{key}_gt")
    if not g:
        return {"value": None, "why": nets_missing or "no ground truth / not enough frames"}
    g, t = np.concatenate(g), np.concatenate(t)
    if len(g) < 2 or len(t) < 2:
        return {"value": None, "why": f"needs at least 2 {unit} per set, got {len(g)}"}
    out = {"value": frechet_from_features(g, t), "n_generated": int(len(g)), "n_ground_truth": int(len(t)),
           "feature_dim": int(g.shape[1]), "unit": unit}
    if len(g) <= g.shape[1]:
        out["warning"] = (f"only {len(g)} {unit} for {g.shape[1]}-d features: the covariance is rank-deficient "
                          "and the value is biased upwards; compare only with runs of the same size")
    return out


def evaluate_samples(samples: list[Sample], *, protocol: Protocol, networks: Networks,
                     notes: list[str] | None = None, mode: str = "videos", inputs: dict | None = None,
                     progress: bool = True) -> dict:
    """Evaluate samples and return the report dict (see :func:`kinemate.eval.report.write_report`)."""
    notes = list(notes or [])
    if protocol.pose and (why := _pose_available()):
        networks.missing["pose"] = why
    if networks.i3d is not None and networks.i3d.info.pretrained and protocol.clip_len < 10:
        # the Kinetics I3D's temporal kernels/pools need at least ~10 frames
        networks.missing["fvd"] = f"not computed: the I3D needs clips of at least 10 frames (--clip-len {protocol.clip_len})"
        networks.i3d = None
    feats = {k: [] for k in ("fid_gen", "fid_gt", "fvd_gen", "fvd_gt", "fid_vid_gen", "fid_vid_gt")}
    videos = []
    t0 = time.time()
    for s in tqdm(samples, desc="evaluating", unit="video", file=sys.stderr, disable=not progress):
        videos.append(_evaluate_one(s, protocol, networks, feats, notes))
    # frame-weighted means over all videos
    keys = sorted({k for v in videos for k in v["summary"]})
    summary = {}
    for k in keys:
        vals = [(v["summary"][k], v["frames"]) for v in videos if k in v["summary"]]
        vals = [(x, w) for x, w in vals if x is not None and not np.isnan(x)]
        summary[k] = float(sum(x * w for x, w in vals) / sum(w for _, w in vals)) if vals else None
    # the dataset's PSNR from the MSE pooled over every frame
    set_metrics = {
        "fid": _set_metric(feats, "fid", networks.missing.get("fid"), "frames"),
        "fvd": _set_metric(feats, "fvd", networks.missing.get("fvd"), "clips"),
        "fid_vid": _set_metric(feats, "fid_vid", networks.missing.get("fid_vid"), "clips"),
    }
    net_desc = networks.describe()
    if not protocol.pose:
        net_desc["pose"] = {"available": False, "why": "off in this protocol (--no-pose)"}
    elif "pose" in networks.missing:
        net_desc["pose"] = {"available": False, "why": networks.missing["pose"]}
    else:
        net_desc["pose"] = {"available": True, "text": "kinemate.pose.extract_pose (MediaPipe bundled models, "
                            "OpenPose COCO-18 body keypoints), on generated and ground-truth/driving frames"}
    from kinemate.eval.identity import DEFAULT_EMBEDDING_NAME

    net_desc["identity"] = {"available": True, "text": networks.identity_name or (
        DEFAULT_EMBEDDING_NAME if networks.identity is None else "custom embedding")}
    if networks.any_random:
        notes.insert(0, "RANDOM metric networks were used (plumbing test): LPIPS/FID/FVD/FID-VID values are meaningless.")
    return {
        "kinemate_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": mode,
        "inputs": inputs or {},
        "protocol": protocol.to_dict(),
        "networks": net_desc,
        "num_videos": len(videos),
        "num_frames": int(sum(v["frames"] for v in videos)),
        "summary": summary,
        "set_metrics": set_metrics,
        "videos": videos,
        "notes": notes,
        "seconds": round(time.time() - t0, 2),
    }


def evaluate_videos(generated: str | Path, ground_truth: str | Path, *, protocol: Protocol | None = None,
                    networks: Networks | None = None, references: str | Path | None = None,
                    driving: str | Path | None = None, progress: bool = True) -> dict:
    """Evaluate a folder of generated videos against a folder of ground-truth videos."""
    protocol = protocol or Protocol()
    networks = networks or Networks(missing={m: "no metric weights given" for m in ("lpips", "fid", "fvd", "fid_vid")})
    samples, notes = find_video_pairs(Path(generated), Path(ground_truth),
                                      references=Path(references) if references else None,
                                      driving=Path(driving) if driving else None)
    inputs = {"generated": str(generated), "ground_truth": str(ground_truth),
              "references": str(references) if references else None, "driving": str(driving) if driving else None}
    return evaluate_samples(samples, protocol=protocol, networks=networks, notes=notes, mode="videos",
                            inputs=inputs, progress=progress)


# ----------------------------------------------------------------------------------- generators

Generator = Callable[[Path, Path, Path], None]


def command_generator(template: str, *, timeout: float | None = None) -> Generator:
    """A generator running an external command, e.g. another method to compare against:
    ``"python their_infer.py --ref {reference} --drive {driving} --out {output}"`` (no shell)."""
    if not all(k in template for k in ("{reference}", "{driving}", "{output}")):
        raise UsageError("the generator command must contain {reference}, {driving} and {output}")

    def run(reference: Path, driving: Path, output: Path) -> None:
        argv = [a.format(reference=reference, driving=driving, output=output) for a in shlex.split(template)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not output.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise InputError(f"generator command failed for {reference.parent.name} (exit {proc.returncode}): "
                             f"{' | '.join(tail) or 'no output file written'}; run it by hand to see why")

    run.description = f"command: {template}"  # type: ignore[attr-defined]
    return run


def pipeline_generator(pipe, *, weights: str | None = None, **animate_kwargs) -> Generator:
    """A generator using a kinemate pipeline through :func:`kinemate.pipeline.animate_file`
    (``animate_kwargs``: its options, e.g. ``steps``, ``seed``, ``size``, ``fit``)."""
    from kinemate.pipeline import animate_file  # noqa: PLC0415

    def run(reference: Path, driving: Path, output: Path) -> None:
        animate_file(reference, driving, output, pipe=pipe, **animate_kwargs)

    opts = ", ".join(f"{k}={v}" for k, v in sorted(animate_kwargs.items()))
    run.description = (f"kinemate pipeline {getattr(pipe, 'name', type(pipe).__name__)} "  # type: ignore[attr-defined]
                       f"(weights {weights or 'bundled'}; {opts})")
    return run


def evaluate_dataset(dataset: str | Path, out_dir: str | Path, *, generator: Generator,
                     protocol: Protocol | None = None, networks: Networks | None = None,
                     skip_existing: bool = True, progress: bool = True) -> dict:
    """Generate every sample of ``dataset`` into ``<out_dir>/generated/`` and evaluate it
    (against its ground truth when present; otherwise flicker, identity and pose only)."""
    protocol = protocol or Protocol()
    networks = networks or Networks(missing={m: "no metric weights given" for m in ("lpips", "fid", "fvd", "fid_vid")})
    entries = find_dataset_samples(Path(dataset))
    gen_dir = Path(out_dir) / "generated"
    gen_dir.mkdir(parents=True, exist_ok=True)
    samples, notes = [], []
    # reuse earlier generated videos only if the same generator made them
    stamp = gen_dir / "generator.json"
    desc = {"generator": getattr(generator, "description", repr(generator)), "dataset": str(Path(dataset).resolve())}
    if skip_existing and stamp.is_file():
        try:
            same = json.loads(stamp.read_text(encoding="utf-8")) == desc
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            notes.append("generated/ held videos of another generator or dataset: all were regenerated")
            skip_existing = False
    elif skip_existing and any(gen_dir.glob("*.mp4")):
        notes.append("generated/ held videos of unknown origin: all were regenerated")
        skip_existing = False
    stamp.unlink(missing_ok=True)
    reused = 0
    for name, ref, drv, gt in tqdm(entries, desc="generating", unit="video", file=sys.stderr, disable=not progress):
        out = gen_dir / f"{name}.mp4"
        if skip_existing and out.is_file():
            reused += 1
        else:
            out.unlink(missing_ok=True)  # never evaluate a stale video if generation fails now
            try:
                generator(ref, drv, out)
            except NoPersonError as exc:
                notes.append(f"{name}: not generated ({exc})")
                continue
        samples.append(Sample(name, out, gt, ref, drv))
    stamp.write_text(json.dumps(desc), encoding="utf-8")
    if reused:
        notes.append(f"{reused} video(s) generated earlier by the same generator were reused (--regenerate to redo)")
    if not samples:
        raise InputError(f"no sample of {dataset} could be generated; see the notes above")
    inputs = {"dataset": str(dataset), "generator": getattr(generator, "description", repr(generator)),
              "generated": str(gen_dir)}
    return evaluate_samples(samples, protocol=protocol, networks=networks, notes=notes, mode="dataset",
                            inputs=inputs, progress=progress)
