"""C2PA manifests on kinemate outputs (with c2pa-python).

Each output file gets a signed manifest with:

* ``c2pa.actions``: one ``c2pa.created`` action, ``digitalSourceType`` =
  IPTC ``trainedAlgorithmicMedia``, ``softwareAgent`` = kinemate and its version, and the
  model and settings as parameters;
* ``org.kinemate.generation``: model name, model id (the watermark's 24-bit id), settings,
  whether the invisible watermark was embedded (``watermark: true|false``) and its payload,
  and how the manifest was signed (``signing: "configured" | "local-untrusted"``).

Supported containers: MP4/MOV, PNG, JPEG, GIF and WebP (whatever the bundled c2pa library
supports; checked at run time). A folder of PNG frames gets a manifest in every frame.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinemate import __version__
from kinemate.errors import InputError
from kinemate.io.atomic import atomic_path

from .c2pa_lib import import_c2pa
from .signing import SigningCredentials, load_credentials
from .watermark import Payload, model_id

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
KINEMATE_ASSERTION = "org.kinemate.generation"

_MIME = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avi": "video/x-msvideo",
}


def mime_for(path: Path) -> str | None:
    return _MIME.get(path.suffix.lower())


def _jsonable(value: Any) -> Any:
    """Settings as plain JSON (paths and other objects become strings)."""
    return json.loads(json.dumps(value, default=str))


def build_manifest(
    model_name: str,
    settings: dict,
    *,
    watermark: bool,
    signing_kind: str,
    title: str,
    watermark_strength: float | None = None,
) -> dict:
    """The manifest definition (c2pa-python ``Builder`` JSON)."""
    settings = _jsonable(settings or {})
    payload = Payload.for_model(model_name)
    generation = {
        "generator": "kinemate",
        "generator_version": __version__,
        "model": model_name,
        "model_id": f"{model_id(model_name):06x}",
        "settings": settings,
        "watermark": bool(watermark),
        "signing": signing_kind,
    }
    if watermark:
        generation["watermark_scheme"] = f"kinemate-ss-v{payload.version}"
        generation["watermark_payload"] = "".join(map(str, payload.to_bits().tolist()))
        if watermark_strength is not None:
            generation["watermark_strength"] = float(watermark_strength)
    if signing_kind == "local-untrusted":
        generation["signing_note"] = (
            "signed with a key generated locally by kinemate; the signer's identity is not "
            "vouched for by any trusted authority"
        )
    return {
        "claim_generator_info": [{"name": "kinemate", "version": __version__}],
        "title": title,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                            "softwareAgent": {"name": "kinemate", "version": __version__},
                            "parameters": {
                                "model": model_name,
                                "watermark": bool(watermark),
                                "settings": settings,
                            },
                        }
                    ]
                },
            },
            {"label": KINEMATE_ASSERTION, "data": generation},
        ],
    }


def sign_in_place(
    path: Path,
    manifest: dict,
    credentials: SigningCredentials | None = None,
    *,
    mime: str | None = None,
) -> None:
    """Embed a signed manifest into ``path`` (rewritten through a temporary file)."""
    c2pa = import_c2pa()

    path = Path(path)
    mime = mime or mime_for(path)
    if mime is None:
        raise InputError(
            f"cannot embed a C2PA manifest in {path.name}: unsupported file type "
            f"{path.suffix!r}. Use .mp4, .mov, .png, .jpg, .gif or .webp."
        )
    credentials = credentials or load_credentials()
    signer = credentials.make_signer()
    try:
        with atomic_path(path) as tmp:
            with c2pa.Builder(manifest) as builder, open(path, "rb") as src, \
                    open(tmp, "w+b") as dst:
                builder.sign(signer, mime, src, dst)
            shutil.copymode(path, tmp)
    finally:
        signer.close()


@dataclass
class ManifestReport:
    """What a C2PA manifest store in a file says (the active manifest)."""

    present: bool
    validation_state: str | None = None  # "Valid" / "Trusted" / "Invalid" (c2pa's words)
    validation_errors: list[str] = field(default_factory=list)
    claim_generator: str | None = None
    title: str | None = None
    actions: list[dict] = field(default_factory=list)
    signer: dict | None = None
    kinemate: dict | None = None  # the org.kinemate.generation assertion
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.present and self.validation_state in ("Valid", "Trusted")

    @property
    def by_kinemate(self) -> bool:
        created_by_kinemate = any(
            a.get("action") == "c2pa.created"
            and (a.get("softwareAgent") or {}).get("name") == "kinemate"
            for a in self.actions
        )
        return self.valid and (self.kinemate is not None or created_by_kinemate)

    def to_dict(self) -> dict:
        return {
            "present": self.present,
            "valid": self.valid,
            "validation_state": self.validation_state,
            "validation_errors": self.validation_errors,
            "claim_generator": self.claim_generator,
            "title": self.title,
            "actions": self.actions,
            "signer": self.signer,
            "kinemate": self.kinemate,
            "error": self.error,
        }


# Codes that only say the signer is not in a trust list (expected for local keys).
_TRUST_ONLY = {"signingCredential.untrusted"}


def read_manifest(path: Path) -> ManifestReport:
    """Read and validate the C2PA manifest of a file; ``present=False`` if it has none."""
    c2pa = import_c2pa()

    path = Path(path)
    try:
        with c2pa.Reader(str(path)) as reader:
            store = json.loads(reader.json())
            state = reader.get_validation_state()
    except c2pa.C2paError as exc:
        msg = str(exc)
        if "ManifestNotFound" in type(exc).__name__ or "not found" in msg.lower() or (
            "JumbfNotFound" in msg
        ):
            return ManifestReport(present=False)
        if "NotSupported" in type(exc).__name__ or "unsupported" in msg.lower():
            return ManifestReport(present=False, error="C2PA is not supported for this file type")
        return ManifestReport(present=False, error=f"{type(exc).__name__}: {msg}")
    except Exception as exc:  # an unsupported or unreadable container
        return ManifestReport(present=False, error=f"{type(exc).__name__}: {exc}")
    label = store.get("active_manifest")
    active = (store.get("manifests") or {}).get(label) if label else None
    if active is None:
        return ManifestReport(present=False)
    errors = [
        f"{s.get('code')}: {s.get('explanation', '')}".strip()
        for s in store.get("validation_status") or []
        if s.get("code") not in _TRUST_ONLY
    ]
    actions: list[dict] = []
    kinemate = None
    for assertion in active.get("assertions") or []:
        lab = assertion.get("label", "")
        if lab.startswith("c2pa.actions"):
            actions.extend((assertion.get("data") or {}).get("actions") or [])
        elif lab == KINEMATE_ASSERTION:
            kinemate = assertion.get("data")
    gens = active.get("claim_generator_info") or []
    claim_generator = active.get("claim_generator") or (
        " ".join(f"{g.get('name', '')}/{g.get('version', '')}".strip("/") for g in gens[:1])
        or None
    )
    return ManifestReport(
        present=True,
        validation_state=state,
        validation_errors=errors,
        claim_generator=claim_generator,
        title=active.get("title"),
        actions=actions,
        signer=active.get("signature_info"),
        kinemate=kinemate,
    )
