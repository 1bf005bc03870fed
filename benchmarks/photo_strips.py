"""Side-by-side strips of kinemate-photo on real photos (docs/images/photo_*.png).

Each strip is a few frames of ``kinemate animate --grid`` (reference | control | result),
small enough for the docs (panels scaled to ``--panel`` px high, PNG). The photos: the
bundled astronaut, the MagicAnimate demo photos (../shared/reference/magicanimate/
demo_inputs), a 1080x1920 portrait made by padding demo4.png, and the two-person photo
multi1_source.png; driven by the bundled dance.

    PYTHONPATH=$PWD python benchmarks/photo_strips.py --out docs/images
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT.parent / "shared" / "reference" / "magicanimate" / "demo_inputs"
EXAMPLES = ROOT / "kinemate" / "assets" / "examples"


def portrait(path: Path, out: Path) -> Path:
    """A 1080x1920 portrait: the photo scaled to 1080 wide, edges repeated above and below."""
    from kinemate.io import read_image, write_image

    image = read_image(path)
    image = cv2.resize(image, (1080, round(image.shape[0] * 1080 / image.shape[1])),
                       interpolation=cv2.INTER_AREA)
    pad = 1920 - image.shape[0]
    tall = cv2.copyMakeBorder(image, pad // 2, pad - pad // 2, 0, 0, cv2.BORDER_REPLICATE)
    return write_image(out, tall)


def strip(grid_path: Path, out: Path, frames: int, panel: int) -> None:
    from kinemate.io import read_video

    video = read_video(grid_path)[0]
    idx = np.linspace(len(video) // 6, len(video) - 1, frames).round().astype(int)
    rows = []
    for i in idx:
        frame = video[i]
        scale = panel / frame.shape[0]
        rows.append(cv2.resize(frame, (round(frame.shape[1] * scale), panel),
                               interpolation=cv2.INTER_AREA))
    picture = np.concatenate(rows, 0)
    cv2.imwrite(str(out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{out}: {out.stat().st_size // 1024} KB", file=sys.stderr)


def main(argv=None) -> int:
    from kinemate.errors import KinemateError
    from kinemate.pipeline import animate_file, load_pipeline

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/images")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--panel", type=int, default=150)
    ap.add_argument("--driving", default=str(EXAMPLES / "dance.mp4"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = {"astronaut": EXAMPLES / "astronaut.jpg", "demo4": DEMO / "demo4.png",
                  "monalisa": DEMO / "monalisa.png", "dalle2": DEMO / "dalle2.jpeg",
                  "dalle8": DEMO / "dalle8.jpeg", "two_people": DEMO / "multi1_source.png",
                  "portrait_1080x1920": portrait(DEMO / "demo4.png", tmp / "portrait.png")}
        for name, photo in photos.items():
            grid = tmp / f"{name}_grid.mp4"
            t0 = time.time()
            try:
                result = animate_file(photo, args.driving, tmp / f"{name}.mp4", pipe=pipe,
                                      grid_path=grid, progress=False)
            except KinemateError as exc:
                print(f"{name}: refused: {exc}", file=sys.stderr)
                continue
            print(f"{name}: {result.num_frames} frames at {result.size[0]}x{result.size[1]} in "
                  f"{time.time() - t0:.1f} s (pose extraction included)", file=sys.stderr)
            strip(grid, out / f"photo_{name}.png", args.frames, args.panel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
