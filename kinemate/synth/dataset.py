"""The kinemate dataset folder format: writer (synthetic clips) and reader (any dataset).

One folder per video, plus a ``dataset.json`` index at the top (docs/dataset-format.md)::

    DIR/
      dataset.json
      clip_000000/
        frames/000000.png ...   RGB frames (or a single video.mp4 instead of frames/)
        pose.json               kinemate pose track (OpenPose COCO-18 body), optional
        densepose/000000.png    DensePose control maps (RGB), optional
        mask/000000.png         person mask (0 / 255), optional
        parts/000000.png        DensePose part index 0..24 (synthetic data only), optional
        meta.json               free-form metadata (synthetic: seed, motion, appearance)

The reader also opens folders without ``dataset.json`` (it indexes the sub-folders) and
accepts the TikTok dataset's names: ``images/`` for ``frames/`` and ``masks/`` for ``mask/``.
Nothing here imports torch: the training package wraps :class:`VideoItem` in its datasets.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from kinemate.errors import InputError, UsageError
from kinemate.io.atomic import atomic_folder, write_text_atomic

FORMAT_NAME = "kinemate.dataset"
FORMAT_VERSION = 1
INDEX_NAME = "dataset.json"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_EXTS = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif")
# folder names the reader accepts for each stream (first match wins)
ALIASES = {
    "frames": ("frames", "images", "rgb"),
    "densepose": ("densepose", "dense_pose", "dp"),
    "mask": ("mask", "masks"),
    "parts": ("parts",),
}


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _list_images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS),
                  key=_natural_key)


def _read_png(path: Path, flags=cv2.IMREAD_COLOR) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise InputError(f"cannot read image {path}; the file is missing or corrupt — "
                         "re-create it or remove it from the dataset")
    if img.ndim == 3:
        img = np.ascontiguousarray(img[..., ::-1])
    return img


def _write_png(path: Path, image: np.ndarray) -> None:
    img = image[..., ::-1] if image.ndim == 3 else image
    if not cv2.imwrite(str(path), np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise InputError(f"cannot write {path}; check free disk space and permissions")


# ---------------------------------------------------------------------------------------
# Reading


@dataclass
class VideoItem:
    """One video of a dataset: where its streams are and how to load them."""

    name: str
    path: Path
    frames: Path  # a folder of images or a video file
    pose: Path | None = None
    densepose: Path | None = None
    mask: Path | None = None
    parts: Path | None = None
    fps: float = 25.0
    meta: dict = field(default_factory=dict)
    _frame_files: list[Path] | None = None

    # --- streams --------------------------------------------------------------------
    def frame_files(self) -> list[Path] | None:
        if self.frames.is_dir():
            if self._frame_files is None:
                self._frame_files = _list_images(self.frames)
            return self._frame_files
        return None

    @property
    def num_frames(self) -> int:
        files = self.frame_files()
        if files is not None:
            return len(files)
        if "num_frames" in self.meta:
            return int(self.meta["num_frames"])
        from kinemate.io import probe_video

        return int(probe_video(self.frames).num_frames or 0)

    def read_frames(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """RGB frames uint8 (F, H, W, 3) (all, or those at ``indices``)."""
        files = self.frame_files()
        if files is not None:
            sel = files if indices is None else [files[i] for i in indices]
            return np.stack([_read_png(p) for p in sel]) if sel else np.zeros((0, 1, 1, 3),
                                                                               np.uint8)
        from kinemate.io import read_video

        frames, _ = read_video(self.frames)
        return frames if indices is None else frames[list(indices)]

    def _read_folder(self, folder: Path | None, indices, flags) -> np.ndarray | None:
        if folder is None:
            return None
        files = _list_images(folder)
        if indices is not None:
            files = [files[i] for i in indices]
        return np.stack([_read_png(p, flags) for p in files])

    def read_densepose(self, indices: Sequence[int] | None = None) -> np.ndarray | None:
        """DensePose control maps uint8 (F, H, W, 3), or None if the video has none."""
        return self._read_folder(self.densepose, indices, cv2.IMREAD_COLOR)

    def read_mask(self, indices: Sequence[int] | None = None) -> np.ndarray | None:
        """Person masks bool (F, H, W), or None."""
        m = self._read_folder(self.mask, indices, cv2.IMREAD_GRAYSCALE)
        return None if m is None else m > 127

    def read_parts(self, indices: Sequence[int] | None = None) -> np.ndarray | None:
        """DensePose part indices uint8 (F, H, W) (synthetic data), or None."""
        return self._read_folder(self.parts, indices, cv2.IMREAD_GRAYSCALE)

    def read_pose(self):
        """The pose track (:class:`kinemate.pose.PoseTrack`), or None if the video has none."""
        if self.pose is None:
            return None
        from kinemate.pose.track import PoseTrack

        return PoseTrack.load(self.pose)

    # --- training view ------------------------------------------------------------------
    def load(self, size=None, control: str = "openpose", *, indices: Sequence[int] | None = None,
             fit: str = "crop", hands: bool = True, face: bool = True,
             ) -> tuple[np.ndarray, np.ndarray]:
        """``(frames, controls)`` uint8 (F, H, W, 3), framed onto ``size`` = (W, H) (None: as is).

        ``control="openpose"`` renders skeleton maps (body, plus ``hands`` and ``face`` where the
        track has them) from ``pose.json`` at the target size, keypoints carried through the
        same framing as the frames — the same drawing as for driving videos; ``"densepose"`` frames the
        DensePose maps with nearest-neighbour resampling.
        """
        frames = self.read_frames(indices)
        src = (frames.shape[2], frames.shape[1])
        dst = src if size is None else (int(size[0]), int(size[1]))
        framing = None
        if dst != src:
            from kinemate.io import Framing

            framing = Framing.compute(src, dst, fit)
            frames = np.stack([framing.apply(f, resample="bilinear") for f in frames])
        if control == "openpose":
            track = self.read_pose()
            if track is None:
                raise InputError(f"video {self.name} in {self.path.parent} has no pose.json; run "
                                 "'kinemate pose' on it or train with control 'densepose'")
            sel = slice(None) if indices is None else list(indices)
            pts = {name: arr[sel].copy() for name, arr in track.parts().items()}
            for arr in pts.values():
                if (track.width, track.height) != src:  # pose of another resolution: rescale
                    arr[..., 0] *= src[0] / track.width
                    arr[..., 1] *= src[1] / track.height
                if framing is not None:
                    arr[..., :2] = framing.map_points(arr[..., :2])
            from kinemate.synth.clip import render_skeleton_maps

            controls = render_skeleton_maps(
                pts["body"], dst, hand_left=pts["hand_left"] if hands else None,
                hand_right=pts["hand_right"] if hands else None,
                face=pts["face"] if face else None)
        elif control == "densepose":
            dp = self.read_densepose(indices)
            if dp is None:
                raise InputError(f"video {self.name} in {self.path.parent} has no densepose/ "
                                 "folder; add DensePose maps or train with control 'openpose'")
            if framing is not None:
                dp = np.stack([framing.apply(f, resample="nearest") for f in dp])
            controls = dp
        else:
            raise UsageError(f"unknown control {control!r}; use 'openpose' or 'densepose'")
        if len(controls) != len(frames):
            raise InputError(f"video {self.name}: {len(frames)} frames but {len(controls)} "
                             f"{control} maps; every frame needs one control map")
        return frames, controls


class Dataset(Sequence):
    """The videos of a dataset folder (a sequence of :class:`VideoItem`)."""

    def __init__(self, root: Path, items: list[VideoItem], info: dict):
        self.root = root
        self.items = items
        self.info = info

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):  # type: ignore[override]
        return self.items[i]

    def __iter__(self) -> Iterator[VideoItem]:
        return iter(self.items)

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, {len(self)} videos)"


def _find(folder: Path, kind: str) -> Path | None:
    for name in ALIASES[kind]:
        p = folder / name
        if p.is_dir():
            return p
    return None


def _scan_video(folder: Path) -> VideoItem | None:
    """Index one video folder by its contents (None if it holds no frames)."""
    frames = _find(folder, "frames")
    if frames is None:
        vids = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTS)
        if not vids:
            return None
        frames = vids[0]
    pose = folder / "pose.json"
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return VideoItem(
        name=folder.name, path=folder, frames=frames,
        pose=pose if pose.is_file() else None,
        densepose=_find(folder, "densepose"), mask=_find(folder, "mask"),
        parts=_find(folder, "parts"), fps=float(meta.get("fps", 25.0)), meta=meta,
    )


def open_dataset(root: str | os.PathLike) -> Dataset:
    """Open a dataset folder: with a ``dataset.json`` index, or by scanning its sub-folders
    (e.g. the TikTok dataset: ``00001/images``, ``00001/masks``, ``00001/densepose``)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist; check the path")
    index = root / INDEX_NAME
    if index.is_file():
        try:
            info = json.loads(index.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{index} is not valid JSON ({exc}); delete it to let kinemate "
                             "index the folder, or re-create the dataset") from None
        if info.get("format") != FORMAT_NAME:
            raise InputError(f"{index} is not a kinemate dataset index (format "
                             f"{info.get('format')!r}); delete it or fix 'format'")
        if int(info.get("version", 0)) > FORMAT_VERSION:
            raise InputError(f"{index} has version {info.get('version')}; this kinemate reads "
                             f"version {FORMAT_VERSION} — upgrade kinemate")
        items = []
        for v in info.get("videos", []):
            folder = root / v["path"]

            def rel(key, folder=folder, v=v):
                return folder / v[key] if v.get(key) else None

            frames = rel("frames")
            if frames is None or not frames.exists():
                raise InputError(f"{index}: video {v.get('name')} has no frames at {frames}; "
                                 "re-create the dataset or fix the index")
            items.append(VideoItem(
                name=v.get("name", folder.name), path=folder, frames=frames, pose=rel("pose"),
                densepose=rel("densepose"), mask=rel("mask"), parts=rel("parts"),
                fps=float(v.get("fps", 25.0)), meta=dict(v),
            ))
        return Dataset(root, items, info)
    items = []
    for sub in sorted((p for p in root.iterdir() if p.is_dir()), key=_natural_key):
        item = _scan_video(sub)
        if item is not None:
            items.append(item)
    if not items:
        item = _scan_video(root)  # a single video folder
        if item is not None:
            items.append(item)
    return Dataset(root, items, {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                                 "indexed": "scanned"})


load_dataset = open_dataset


def index_entry(item: VideoItem, root: Path) -> dict:
    """The ``dataset.json`` entry of one video (paths relative to the video folder)."""
    def rel(p):
        return None if p is None else p.relative_to(item.path).as_posix()

    files = item.frame_files()
    if files:
        h, w = _read_png(files[0]).shape[:2]
    else:
        from kinemate.io import probe_video

        info = probe_video(item.frames)
        w, h = info.width, info.height
    entry = {
        "name": item.name, "path": item.path.relative_to(root).as_posix(),
        "frames": rel(item.frames), "num_frames": item.num_frames, "fps": item.fps,
        "width": int(w), "height": int(h), "pose": rel(item.pose),
        "densepose": rel(item.densepose), "mask": rel(item.mask),
    }
    if item.parts is not None:
        entry["parts"] = rel(item.parts)
    return entry


def write_index(root: str | os.PathLike, *, name: str | None = None, extra: dict | None = None,
                ) -> Path:
    """Scan a folder of videos (e.g. your own footage, or the TikTok dataset) and write its
    ``dataset.json`` (atomically)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist; check the path")
    tmp_ds = [it for sub in sorted((p for p in root.iterdir() if p.is_dir()), key=_natural_key)
              if (it := _scan_video(sub)) is not None]
    if not tmp_ds:
        raise InputError(f"{root} holds no video folders (each needs frames/, images/ or a "
                         "video file); see docs/dataset-format.md")
    info = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "name": name or root.name,
            **(extra or {}), "videos": [index_entry(it, root) for it in tmp_ds]}
    return write_text_atomic(root / INDEX_NAME, json.dumps(info, indent=1))


# ---------------------------------------------------------------------------------------
# Writing synthetic clips


def clip_name(seed: int) -> str:
    return f"clip_{seed:07d}"


def write_clip(folder: Path, clip, *, densepose: bool = True, mask: bool = True,
               parts: bool = True, uv: bool = True) -> dict:
    """Write one :class:`kinemate.synth.Clip` into ``folder`` (created); returns its index entry
    (paths relative to ``folder``). ``uv``: also the exact DensePose UV fields, one
    ``uv/frame_<n>_densepose.npy`` (2, H, W) float32 per frame (kinemate.pose.uv's format)."""
    folder.mkdir(parents=True, exist_ok=False)
    streams = {"frames": clip.frames}
    if densepose and clip.densepose is not None:
        streams["densepose"] = clip.densepose
    if mask:
        streams["mask"] = clip.mask.astype(np.uint8) * 255
    if parts:
        streams["parts"] = clip.parts
    for key, arr in streams.items():
        (folder / key).mkdir()
        for i, img in enumerate(arr):
            _write_png(folder / key / f"{i:06d}.png", img)
    has_uv = uv and getattr(clip, "uv", None) is not None
    if has_uv:
        (folder / "uv").mkdir()
        for i, field in enumerate(clip.uv):
            np.save(folder / "uv" / f"frame_{i}_densepose.npy", np.ascontiguousarray(field))
    clip.pose_track().save(folder / "pose.json")
    meta = {**clip.meta, "num_frames": clip.num_frames}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    w, h = clip.size
    return {
        "frames": "frames", "num_frames": clip.num_frames, "fps": clip.fps, "width": w,
        "height": h, "pose": "pose.json", "densepose": "densepose" if "densepose" in streams
        else None, "mask": "mask" if mask else None, **({"parts": "parts"} if parts else {}),
        **({"uv": "uv"} if has_uv else {}),
        "seed": clip.meta["seed"], "motion": clip.meta["motion"],
    }


def write_dataset(out_dir: str | os.PathLike, clips: Iterable, *, total: int | None = None,
                  info: dict | None = None, force: bool = False, progress: bool = True,
                  densepose: bool = True, mask: bool = True, parts: bool = True,
                  uv: bool = True) -> Path:
    """Write clips as a dataset folder, atomically: everything goes to a temporary sibling
    folder that is renamed to ``out_dir`` only when complete.

    ``out_dir`` must not exist (or be an empty folder) unless ``force`` replaces it.
    """
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not force:
        raise UsageError(f"{out} already exists and is not empty; choose another output "
                         "folder or pass --force to replace it")
    from tqdm import tqdm

    with atomic_folder(out) as tmp:
        videos = []
        for clip in tqdm(clips, total=total, desc="synth", unit="clip", disable=not progress):
            name = clip_name(clip.meta["seed"])
            entry = write_clip(tmp / name, clip, densepose=densepose, mask=mask, parts=parts,
                               uv=uv)
            videos.append({"name": name, "path": name, **entry})
        index = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **(info or {}),
                 "videos": videos}
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=1))
    return out


__all__ = [
    "Dataset", "VideoItem", "open_dataset", "load_dataset", "write_dataset", "write_clip",
    "write_index", "FORMAT_NAME", "FORMAT_VERSION", "INDEX_NAME",
]
