"""DreamPose's files: what ``kinemate weights download dreampose`` fetches (CLIP, from the
hub) and what ``kinemate weights import dreampose`` takes (the Google Drive checkpoints).

The checkpoints themselves are on Google Drive (the README's links) without published hashes;
kinemate does not download from Drive. A user downloads them in a browser and imports them:
``kinemate weights import dreampose unet_epoch_499.pth adapter_499.pth vae_1499.pth
checkpoint-499/ --dir W`` checks every tensor's name and shape against the networks, records
each file's sha256 in ``W/dreampose-import.json`` and moves the files into place atomically.
"""

from __future__ import annotations

from kinemate.hub import WeightFile, WeightSet

CLIP_REPO = "openai/clip-vit-base-patch32"

DRIVE_LINKS = {
    "base model (UBC Fashion, phase 1): unet_epoch_20.pth + adapter_20.pth":
        "https://drive.google.com/file/d/10JjayW2mMqGxhUyM9ds_GHEvuqCTDaH3",
    "demo subject (custom-chkpts.zip): unet_epoch_499.pth, adapter_499.pth, vae_1499.pth, "
    "checkpoint-499/": "https://drive.google.com/drive/folders/15SaT3kZFRIjxuHT6UrGr6j0183clTK_D",
    "demo poses (poses.zip): frame_<n>_densepose.npy":
        "https://drive.google.com/drive/folders/1CjzcOp_ZUt-dyrzNAFE0T8bS3cbKTsVG",
}

DREAMPOSE_CLIP = WeightSet(
    name="dreampose",
    description="DreamPose's image encoder (openai/clip-vit-base-patch32, which the official "
                "pipeline loads from the hub). The UNet, adapter and VAE checkpoints are on "
                "Google Drive without hashes: download them in a browser and run 'kinemate "
                "weights import dreampose FILES... --dir DIR' (see the notes)",
    files=(
        WeightFile(CLIP_REPO, "config.json", "clip-vit-base-patch32/config.json",
                   approx_size=4_200),
        WeightFile(CLIP_REPO, "preprocessor_config.json",
                   "clip-vit-base-patch32/preprocessor_config.json", approx_size=320),
        # the whole CLIP (vision + text); the vision tower alone is 87.8 M float32 parameters
        WeightFile(CLIP_REPO, "pytorch_model.bin", "clip-vit-base-patch32/pytorch_model.bin",
                   min_size=351_000_000, approx_size=605_000_000,
                   source="lower bound: the vision tower's float32 tensors"),
    ),
    license="MIT (DreamPose code); CLIP: MIT; the checkpoints: see the DreamPose README",
    usage="kinemate animate --model dreampose --weights {dir} photo.png uv_frames/ -o out.mp4",
    notes=tuple(f"{what}: {url}" for what, url in DRIVE_LINKS.items()) + (
        "Drive files have no published hashes: 'kinemate weights import dreampose FILES... "
        "--dir DIR' checks their tensors' names and shapes and records their sha256",
        "a new person needs subject fine-tuning: 'kinemate finetune --model dreampose "
        "--weights DIR photo.png -o DIR_subject' (the demo checkpoints animate the demo "
        "subject only)"),
)



# -- kinemate weights import dreampose ---------------------------------------------------------
IMPORT_RECORD = "dreampose-import.json"
PIPELINE_CONFIGS = ("model_index.json", "unet/config.json", "vae/config.json",
                    "scheduler/scheduler_config.json")
CLIP_FILES = ("config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin")


def _classify(path):
    """("unet"|"adapter"|"vae"|"pipeline"|"clip", path) for one input, or a UsageError."""
    from pathlib import Path

    from kinemate.errors import UsageError
    from kinemate.models.dreampose.checkpoint import (ADAPTER_PATTERN, CLIP_DIR, UNET_PATTERN,
                                                      VAE_PATTERN)

    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path} does not exist; give the downloaded DreamPose files")
    if path.is_dir():
        if path.name.startswith("checkpoint-"):
            return "pipeline", path
        if path.name == CLIP_DIR or (path / "config.json").is_file() and any(
                (path / n).is_file() for n in CLIP_FILES[2:]):
            return "clip", path
    else:
        for kind, pattern in (("unet", UNET_PATTERN), ("adapter", ADAPTER_PATTERN),
                              ("vae", VAE_PATTERN)):
            if pattern.match(path.name):
                return kind, path
    hint = " (unzip custom-chkpts.zip first)" if path.suffix == ".zip" else ""
    raise UsageError(f"{path.name} is not a DreamPose checkpoint file{hint}; expected "
                     "unet_epoch_<N>.pth, adapter_<N>.pth, vae_<N>.pth, a checkpoint-<N>/ "
                     "folder or clip-vit-base-patch32/, under their published names")


def import_files(files, dest, *, echo=print) -> dict:
    """Check DreamPose's downloaded files and lay them out in ``dest`` (the release layout
    :mod:`kinemate.models.dreampose.checkpoint` loads).

    Every tensor's name and shape is checked against the networks (built on the meta device:
    nothing is allocated) before anything is written; each file's sha256 is computed and
    recorded, with its size and origin, in ``dest/dreampose-import.json``. Files are copied
    under temporary names and renamed when complete; of a ``checkpoint-<N>/`` folder only its
    configs are kept (test.py replaces all of its weights with the .pth files). Returns the
    record."""
    import datetime
    import json
    import shutil
    from pathlib import Path

    from kinemate.errors import UsageError
    from kinemate.hub import sha256_file
    from kinemate.io.atomic import atomic_folder, atomic_path, write_json_atomic
    from kinemate.models.dreampose import checkpoint

    items = [_classify(f) for f in files]
    if not items:
        raise UsageError("give the DreamPose files to import (see 'kinemate weights list')")
    dest = Path(dest)
    pipeline = next((p for k, p in items if k == "pipeline"), None)
    if pipeline is None:
        existing = sorted(p for p in dest.glob("checkpoint-*") if p.is_dir()) if dest.is_dir() else []
        pipeline = existing[-1] if existing else None
    record = {"imported": [], "note": "sha256 computed at import: the Drive files have no "
                                      "published hashes"}
    if (dest / IMPORT_RECORD).is_file():
        record = json.loads((dest / IMPORT_RECORD).read_text())
    checks = {"unet": lambda p: checkpoint.load_unet(p, pipeline, device="meta"),
              "adapter": lambda p: checkpoint.load_adapter(p, device="meta"),
              "vae": lambda p: checkpoint.load_vae_file(p, pipeline, device="meta"),
              "clip": lambda p: checkpoint.load_clip(p, device="meta"),
              "pipeline": lambda p: [checkpoint.read_config(p / c) for c in PIPELINE_CONFIGS[1:]
                                     if (p / c).is_file()]}
    from kinemate.errors import WeightsError

    for kind, path in items:  # every check before anything is written
        try:
            checks[kind](path)
        except WeightsError as exc:
            if pipeline is None and kind in ("unet", "vae"):
                raise WeightsError(f"{exc} (checked against Stable Diffusion 1.4's "
                                   "architecture: give the checkpoint-<N>/ folder saved with "
                                   "it if the model has another)") from None
            raise
        echo(f"checked  {path.name} ({kind})")
    dest.mkdir(parents=True, exist_ok=True)
    for kind, path in items:
        if kind in ("unet", "adapter", "vae"):
            entries = [(path, dest / path.name)]
        elif kind == "pipeline":
            entries = [(path / c, dest / path.name / c) for c in PIPELINE_CONFIGS
                       if (path / c).is_file()]
        else:
            entries = [(path / c, dest / checkpoint.CLIP_DIR / c) for c in CLIP_FILES
                       if (path / c).is_file()]
        if kind in ("pipeline", "clip"):
            target = entries[0][1].parent if kind == "clip" else dest / path.name
            with atomic_folder(target) as tmp:
                for src, final in entries:
                    out = tmp / final.relative_to(target)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, out)
        else:
            for src, final in entries:
                with atomic_path(final) as tmp:
                    shutil.copyfile(src, tmp)
        for src, final in entries:
            digest = sha256_file(final)
            record["imported"] = [e for e in record["imported"]
                                  if e["file"] != str(final.relative_to(dest))]
            record["imported"].append({"file": str(final.relative_to(dest)), "kind": kind,
                                       "size": final.stat().st_size, "sha256": digest,
                                       "source": str(src.resolve()),
                                       "date": datetime.datetime.now(datetime.timezone.utc)
                                       .isoformat(timespec="seconds")})
            echo(f"imported {final.relative_to(dest)}  sha256 {digest}")
    write_json_atomic(dest / IMPORT_RECORD, record)
    return record


__all__ = ["CLIP_REPO", "DREAMPOSE_CLIP", "DRIVE_LINKS", "IMPORT_RECORD", "import_files"]
