"""Check a file for kinemate's provenance marks: the invisible watermark and a C2PA manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kinemate.errors import InputError, UsageError

from .manifest import ManifestReport, read_manifest
from .marker import POSE_MODEL
from .watermark import CODED_BITS, PAYLOAD_BITS, Detection, Detector, Payload, model_id

#: Model names whose watermark id ``verify`` can name without a manifest.
KNOWN_MODELS = ("kinemate-photo", "kinemate-tiny", "magicanimate", "kinemate", POSE_MODEL)

DEFAULT_MAX_FRAMES = 24


def model_name_for(model_id_value: int, hint: str | None = None) -> str | None:
    """The model name whose 24-bit id is ``model_id_value``, if known (``hint`` first)."""
    for name in ([hint] if hint else []) + list(KNOWN_MODELS):
        if model_id(name) == model_id_value:
            return name
    return None


@dataclass
class VerifyReport:
    path: Path
    kind: str  # "image" | "video" | "frames"
    watermark: Detection
    manifest: ManifestReport
    #: where the watermark was read: None for the whole frame, ``"grid result panel"`` for
    #: the right third of a reference | control | result grid (``kinemate animate --grid``)
    region: str | None = None

    @property
    def generated(self) -> bool:
        """True if kinemate's watermark or a valid kinemate C2PA manifest was found."""
        return self.watermark.detected or self.manifest.by_kinemate

    @property
    def model(self) -> str | None:
        hint = (self.manifest.kinemate or {}).get("model") if self.manifest.kinemate else None
        if self.watermark.payload is not None:
            return model_name_for(self.watermark.payload.model_id, hint)
        return hint

    def bit_report(self) -> dict | None:
        """How many watermark bits read right, against the payload read, else against the
        payload of the manifest's model or (without one) of the closest known model."""
        wm = self.watermark
        if wm.bits is None:
            return None
        if wm.payload is not None:
            expected, against = wm.payload, "the payload read"
        else:
            hint = (self.manifest.kinemate or {}).get("model") if self.manifest.kinemate else None
            names = [hint] if hint else list(KNOWN_MODELS)
            against = max(names, key=lambda n: wm.bit_accuracy(Payload.for_model(n)))
            expected = Payload.for_model(against)
            against = f"the payload of {against}" + ("" if hint else " (the closest known model)")
        acc, coded = wm.bit_accuracy(expected), wm.coded_bit_accuracy(expected)
        return {
            "compared_with": against,
            "bit_accuracy": round(acc, 4),
            "bits_right": int(round(acc * PAYLOAD_BITS)),
            "bits": PAYLOAD_BITS,
            "coded_bit_accuracy": round(coded, 4),
            "coded_bits_right": int(round(coded * CODED_BITS)),
            "coded_bits": CODED_BITS,
        }

    def to_dict(self) -> dict:
        wm = self.watermark
        return {
            "path": str(self.path),
            "kind": self.kind,
            "generated_by_kinemate": self.generated,
            "watermark": {
                "detected": wm.detected,
                "payload_read": wm.payload is not None,
                "model_id": wm.payload.model_id_hex if wm.payload else None,
                "model": self.model if wm.payload else None,
                "scheme_version": wm.payload.version if wm.payload else None,
                "confidence": round(wm.confidence, 12),
                "sync_z": round(wm.sync_z, 2),
                "p_value": float(f"{wm.p_value:.3g}"),
                "p_value_threshold": Detector.SYNC_ONLY_P,
                "bits": self.bit_report(),
                "frames_checked": wm.frames_checked,
                "scale": list(wm.scale) if wm.scale and wm.detected else None,
                "region": self.region or "whole frame",
            },
            "c2pa": self.manifest.to_dict(),
        }


def _frames(path: Path, max_frames: int):
    from kinemate.io import IMAGE_SUFFIXES, open_video, read_image

    if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
        with open_video(path) as reader:
            for i, frame in enumerate(reader):
                if i >= max_frames:
                    break
                yield frame
    else:
        yield read_image(path)


def verify(path: str | Path, *, max_frames: int = DEFAULT_MAX_FRAMES) -> VerifyReport:
    """Look for the watermark (in up to ``max_frames`` frames) and a C2PA manifest."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist — give the path of an image or video to check.")
    if max_frames < 1:
        raise UsageError(f"max_frames must be at least 1, got {max_frames}.")
    from kinemate.io import IMAGE_SUFFIXES

    if path.is_dir():
        kind = "frames"
        pngs = sorted(path.glob("*.png"))
        manifest = read_manifest(pngs[0]) if pngs else ManifestReport(present=False)
    else:
        kind = "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"
        manifest = read_manifest(path)
    det = Detector(keep_frames=max_frames)
    shape = None
    for frame in _frames(path, max_frames):
        shape = shape or frame.shape[:2]
        det.add(frame)
    watermark, region = det.result(), None
    if watermark.payload is None and shape is not None and shape[1] >= 1.2 * shape[0]:
        # A grid written by `kinemate animate --grid` is marked in its result panel only (the
        # output's own mark); it counts only with a payload read (magic + CRC).
        panel = Detector(keep_frames=max_frames)
        for frame in _frames(path, max_frames):
            panel.add(grid_result_panel(frame))
        found = panel.result()
        if found.payload is not None:
            watermark, region = found, "grid result panel"
    return VerifyReport(path=path, kind=kind, watermark=watermark, manifest=manifest,
                        region=region)


def grid_result_panel(frame):
    """The right third of a frame: the result panel of a reference | control | result grid."""
    width = frame.shape[1]
    return frame[:, int(round(width * 2 / 3)):]
