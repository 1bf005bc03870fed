"""kinemate.provenance — marks on every output, and checking them.

* :func:`make_marker` — the marker kinemate.io's writers call: an invisible watermark on every
  frame (:mod:`.watermark`) and a signed C2PA manifest in the finished file (:mod:`.manifest`,
  keys from :mod:`.signing`).
* :func:`verify` — look for both in an image, a video or a folder of frames.

See docs/provenance.md.
"""

from .manifest import ManifestReport, build_manifest, read_manifest, sign_in_place
from .marker import ProvenanceMarker, make_marker, write_marked_image
from .signing import SigningCredentials, config_dir, load_credentials, local_credentials
from .verify import KNOWN_MODELS, VerifyReport, verify
from .watermark import Detection, Detector, Embedder, Payload, detect, embed, model_id

__all__ = [
    "KNOWN_MODELS",
    "Detection",
    "Detector",
    "Embedder",
    "ManifestReport",
    "Payload",
    "ProvenanceMarker",
    "SigningCredentials",
    "VerifyReport",
    "build_manifest",
    "config_dir",
    "detect",
    "embed",
    "load_credentials",
    "local_credentials",
    "make_marker",
    "model_id",
    "read_manifest",
    "sign_in_place",
    "verify",
    "write_marked_image",
]
