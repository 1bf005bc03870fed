"""What the watermark survives, by frame size and by kind of output (real ffmpeg, real runs).

Run from the repository root:

    .venv/bin/python benchmarks/bench_watermark_robustness.py            # ~10 min on 2 cores
    .venv/bin/python benchmarks/bench_watermark_robustness.py --quick    # ~4 min
    .venv/bin/python benchmarks/bench_watermark_robustness.py --json out/wm_robustness.json

1. **By size** — generated-like clips (kinemate.synth people in front of static backgrounds,
   held-out seeds, 16 frames) at 64, 256 and 512 px, written with kinemate.io's VideoWriter
   and the provenance marker (H.264 CRF 18, the writer's default).
2. **By output** — what the commands write: ``kinemate animate --example`` (the bundled
   model's 64 px output and its ``--grid`` video, read in its result panel) and
   ``kinemate pose`` on the example dance (``--preview`` over the video, ``--controls``).

Each file is then changed with the bundled ffmpeg: none (as written), resize to 75 %
(re-encoded at CRF 18), and H.264 re-encodes at CRF 23 and CRF 30 (same size). For each
result, :func:`kinemate.provenance.verify` (the whole clip, up to 24 frames) reports:
detected = the payload was read and names the right model (magic + CRC-16 pass); bit
accuracy = payload bits right after error correction against the expected payload (50 % is
chance), with the raw coded-bit accuracy before correction in brackets.

Prints markdown tables (and writes JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("KINEMATE_HOME", tempfile.mkdtemp(prefix="kinemate-bench-home-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kinemate.io import ffmpeg_exe, write_video  # noqa: E402
from kinemate.provenance import make_marker, verify  # noqa: E402
from kinemate.provenance.marker import POSE_MODEL  # noqa: E402
from kinemate.provenance.watermark import Payload  # noqa: E402

MODEL = "kinemate-tiny"
SIZES = (64, 256, 512)
TRANSFORMS: dict[str, tuple[str, int] | None] = {
    # name: (ffmpeg -vf filter, crf) or None for the file as written
    "none (as written, CRF 18)": None,
    "resize 75 % (+ CRF 18)": ("scale=trunc(iw*0.75/2)*2:trunc(ih*0.75/2)*2", 18),
    "H.264 CRF 23": ("null", 23),
    "H.264 CRF 30": ("null", 30),
}


def transform(src: Path, dst: Path, spec: tuple[str, int] | None) -> Path:
    if spec is None:
        return src
    vf, crf = spec
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src),
                    "-vf", vf, "-c:v", "libx264", "-preset", "medium", "-crf", str(crf),
                    "-pix_fmt", "yuv420p", str(dst)], check=True)
    return dst


def measure(path: Path, model: str) -> dict:
    report = verify(path)
    wm = report.watermark
    expected = Payload.for_model(model)
    return {"detected": wm.payload == expected, "bit_acc": wm.bit_accuracy(expected),
            "coded_bit_acc": wm.coded_bit_accuracy(expected), "sync_z": round(wm.sync_z, 2),
            "region": report.region}


def by_size(work: Path, clips: int) -> list[dict]:
    from kinemate.synth import generate_clip

    marker = make_marker(MODEL, {"bench": "robustness"}, c2pa=False)
    rows = []
    for size in SIZES:
        results: dict[str, list[dict]] = {t: [] for t in TRANSFORMS}
        for i in range(clips):
            clip = generate_clip(seed=1_000_000 + i, num_frames=16, size=(size, size))
            src = write_video(work / f"s{size}_{i}.mp4", list(clip.frames), 25, marker=marker)
            for name, spec in TRANSFORMS.items():
                results[name].append(measure(transform(src, work / "t.mp4", spec), MODEL))
        for name, got in results.items():
            rows.append(_row(f"{size} px", name, got))
        print(f"  {size} px done", file=sys.stderr)
    return rows


def by_output(work: Path, frames: int) -> list[dict]:
    from kinemate.cli import main

    out = work / "outputs"
    out.mkdir()
    assert main(["animate", "--example", "-o", str(out / "result.mp4"), "--grid",
                 str(out / "grid.mp4"), "--max-frames", str(frames), "--no-progress"]) == 0
    example = REPO / "kinemate" / "assets" / "examples" / "dance.mp4"
    assert main(["pose", str(example), "-o", str(out / "dance.json"), "--preview",
                 str(out / "preview.mp4"), "--controls", str(out / "controls.mp4"),
                 "--max-frames", str(frames), "--quiet"]) == 0
    outputs = {
        "animate output (bundled model, 64 px)": (out / "result.mp4", MODEL),
        "animate --grid (3 x 64 px; result panel)": (out / "grid.mp4", MODEL),
        "pose --preview (256 px)": (out / "preview.mp4", POSE_MODEL),
        "pose --controls (256 px)": (out / "controls.mp4", POSE_MODEL),
    }
    rows = []
    for label, (path, model) in outputs.items():
        for name, spec in TRANSFORMS.items():
            rows.append(_row(label, name, [measure(transform(path, work / "t.mp4", spec), model)]))
    return rows


def _row(what: str, transform_name: str, got: list[dict]) -> dict:
    return {"what": what, "transform": transform_name, "files": len(got),
            "detected": int(sum(g["detected"] for g in got)),
            "bit_acc": float(np.mean([g["bit_acc"] for g in got])),
            "coded_bit_acc": float(np.mean([g["coded_bit_acc"] for g in got])),
            "min_sync_z": min(g["sync_z"] for g in got)}


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}\n")
    print("| marked | transform | detected | bit accuracy (raw coded bits) | lowest sync peak |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        yes = "yes" if r["detected"] == r["files"] else ("no" if r["detected"] == 0 else "partly")
        count = f" ({r['detected']}/{r['files']})" if r["files"] > 1 else ""
        print(f"| {r['what']} | {r['transform']} | {yes}{count} | {100 * r['bit_acc']:.1f} % "
              f"({100 * r['coded_bit_acc']:.1f} %) | {r['min_sync_z']:.1f} σ |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 clips per size instead of 6")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()
    clips = 3 if args.quick else 6
    work = Path(tempfile.mkdtemp(prefix="kinemate-bench-wm-"))
    t0 = time.time()
    try:
        sizes = by_size(work, clips)
        outputs = by_output(work, 24)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = {"clips_per_size": clips, "frames_per_clip": 16, "by_size": sizes,
           "by_output": outputs, "seconds": round(time.time() - t0, 1)}
    print_table(f"By frame size — kinemate.synth clips, {clips} per size, 16 frames each:", sizes)
    print_table("By output — real runs (24 frames):", outputs)
    print(f"\n({res['seconds']} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
