"""The provenance marker: the object kinemate.io's writers call on every output.

It implements the io marker protocol: ``mark(frame)`` embeds the invisible watermark in each
uint8 ``(H, W, 3)`` RGB frame; ``finalize(path)`` embeds a signed C2PA manifest into the
finished temporary file (or into every PNG of a frames folder) before the writer renames it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kinemate.errors import UsageError
from kinemate.io.atomic import atomic_path

from .manifest import build_manifest, mime_for, sign_in_place
from .signing import SigningCredentials, load_credentials
from .watermark import DEFAULT_STRENGTH, Embedder, Payload

#: The model name marked on the pictures ``kinemate pose`` draws (previews, control maps):
#: no generative model made them, the pose estimator and kinemate's renderer did.
POSE_MODEL = "kinemate-pose"


class ProvenanceMarker:
    """Watermark every frame and sign the finished file. See :func:`make_marker`."""

    def __init__(
        self,
        model_name: str,
        settings: dict | None = None,
        *,
        watermark: bool = True,
        c2pa: bool = True,
        signer: SigningCredentials | None = None,
        strength: float = DEFAULT_STRENGTH,
    ) -> None:
        if not model_name or not isinstance(model_name, str):
            raise UsageError("make_marker needs the model name (a non-empty string).")
        self.model_name = model_name
        self.settings = dict(settings or {})
        self.watermark = bool(watermark)
        self.c2pa = bool(c2pa)
        self.payload = Payload.for_model(model_name)
        self._embedder = Embedder(self.payload, strength) if self.watermark else None
        # Resolve credentials now, so a bad configuration fails before any work is done.
        self.credentials = (signer or load_credentials()) if self.c2pa else None
        self.frames_marked = 0

    def mark(self, frame: np.ndarray) -> np.ndarray:
        if self._embedder is None:
            return frame
        self.frames_marked += 1
        return self._embedder.mark(np.asarray(frame))

    def manifest(self, title: str) -> dict:
        return build_manifest(
            self.model_name,
            self.settings,
            watermark=self.watermark,
            signing_kind=self.credentials.signing_kind if self.credentials else "none",
            title=title,
            watermark_strength=self._embedder.strength if self._embedder else None,
        )

    def finalize(self, path: Path) -> None:
        if not self.c2pa:
            return
        path = Path(path)
        if path.is_dir():
            for frame in sorted(path.glob("*.png")):
                sign_in_place(frame, self.manifest(frame.name), self.credentials)
            return
        # The writer's temporary name keeps the final suffix, so the type is known.
        title = _final_name(path)
        sign_in_place(path, self.manifest(title), self.credentials, mime=mime_for(path))


def _final_name(path: Path) -> str:
    """``out.kinemate-tmp-ab12.mp4`` -> ``out.mp4`` (the name the user will see)."""
    name = path.name
    if ".kinemate-tmp" in name:
        stem = name.split(".kinemate-tmp", 1)[0]
        return stem + path.suffix
    return name


def make_marker(
    model_name: str,
    settings: dict | None = None,
    *,
    watermark: bool = True,
    c2pa: bool = True,
    signer: SigningCredentials | None = None,
    strength: float = DEFAULT_STRENGTH,
) -> ProvenanceMarker:
    """A marker for kinemate.io writers: invisible watermark on every frame + C2PA manifest.

    ``watermark=False`` turns the watermark off (recorded as ``"watermark": false`` in the
    manifest); ``c2pa=False`` skips the manifest. ``signer``: credentials from
    :func:`kinemate.provenance.load_credentials` or your own; default: the configured ones,
    else a locally generated (untrusted) key. ``strength``: RMS of the watermark in 8-bit
    luminance levels (default 3.0, about 38.6 dB PSNR); lower is less visible and less robust.
    """
    return ProvenanceMarker(model_name, settings, watermark=watermark, c2pa=c2pa, signer=signer,
                            strength=strength)


def write_marked_image(path: str | Path, image: np.ndarray, marker: ProvenanceMarker) -> Path:
    """Write one image (PNG/JPEG/WebP) with the watermark and manifest, atomically."""
    from kinemate.io import write_image

    path = Path(path)
    if mime_for(path) is None or path.suffix.lower() in (".mp4", ".mov", ".gif", ".avi", ".m4v"):
        raise UsageError(f"{path}: give an image name ending in .png, .jpg or .webp.")
    with atomic_path(path) as tmp:  # keeps the suffix: the image and C2PA type
        write_image(tmp, marker.mark(image))
        marker.finalize(tmp)
    return path
