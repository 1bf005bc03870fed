"""Published weights kinemate can download — only when a user asks (``kinemate weights``).

A registry maps a name (``magicanimate``, ...) to the files it needs: the hub repository, the
file's path and revision there, where it goes in the local layout, and — where known — its exact
size and sha256. :func:`download` fetches each file with ``huggingface_hub.hf_hub_download`` (or
copies it from a local mirror folder laid out as ``<folder>/<repo_id>/<filename>``), verifies it,
and only then moves it to its final place, so a folder never holds a half-downloaded or corrupt
file under a final name. Files already present and valid are skipped; interrupted hub downloads
resume (huggingface_hub keeps the partial file in ``DIR/.kinemate-download/``).

Hashes are recorded only where they were read from the hub's own file pages (Git LFS details);
a file whose hash is not pinned is checked for size (exact or a lower bound from the tensor
manifests) and the command says plainly that its hash is not pinned, printing the hash it
computed so it can be recorded. Nothing here runs at import time or in tests against the network.

This module imports only :mod:`kinemate.errors` and the standard library at import time
(``huggingface_hub`` and :mod:`kinemate.io.atomic` are imported when a download starts), so
any layer may use it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from kinemate.errors import UsageError, WeightsError

log = logging.getLogger(__name__)

STAGING = ".kinemate-download"


@dataclass(frozen=True)
class WeightFile:
    """One published file and where it goes locally."""

    repo_id: str  #: hub repository, e.g. "zcxu-eric/MagicAnimate"
    filename: str  #: path inside the repository
    target: str  #: path relative to the download folder
    revision: str | None = None  #: commit sha (pinned) or branch; None = the repo's default
    sha256: str | None = None  #: lower-case hex; None = not pinned (then size only)
    size: int | None = None  #: exact size in bytes, when known
    min_size: int | None = None  #: lower bound in bytes (e.g. tensor payload from manifests)
    approx_size: int | None = None  #: for display only
    source: str = ""  #: where the pinned values come from
    url: str | None = None  #: direct https URL for a file published outside the hub (repo_id then names the host)
    #: leading hex digits of the sha256 when only those are published (torch.hub-style names
    #: ``name-<hex>.ext``); for files with ``url`` it is read from the name when not given
    sha256_prefix: str | None = None

    @property
    def expected_prefix(self) -> str | None:
        """The sha256 prefix to check when no full hash is pinned (see ``sha256_prefix``)."""
        if self.sha256:
            return None
        if self.sha256_prefix:
            return self.sha256_prefix.lower()
        if self.url:
            m = re.search(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$", self.filename)
            return m.group(1) if m else None
        return None

    @property
    def display_size(self) -> int | None:
        return self.size or self.approx_size or self.min_size


@dataclass(frozen=True)
class WeightSet:
    """A named set of files downloaded together into one folder."""

    name: str
    description: str
    files: tuple[WeightFile, ...]
    license: str = ""
    usage: str = ""  #: how to use the folder once downloaded
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def approx_bytes(self) -> int:
        return sum(f.display_size or 0 for f in self.files)


REGISTRY: dict[str, WeightSet] = {}


def register(weight_set: WeightSet) -> WeightSet:
    """Add (or replace) a weight set in the registry. Other packages may call this for their
    own networks (e.g. evaluation backbones) in their own module."""
    REGISTRY[weight_set.name] = weight_set
    return weight_set


def _all_sets() -> dict[str, WeightSet]:
    """The registered sets and those the model families declare (imported on first use)."""
    from kinemate.models.registry import families

    declared = {ws.name: ws for family in families() for ws in family.weight_sets}
    return {**declared, **REGISTRY}


def get(name: str) -> WeightSet:
    sets = _all_sets()
    try:
        return sets[name]
    except KeyError:
        known = ", ".join(sorted(sets)) or "(none)"
        raise UsageError(f"unknown weights {name!r}; known: {known} (see 'kinemate weights list').") from None


def default_dir(name: str) -> Path:
    """Where ``kinemate weights download NAME`` puts files without ``--dir``:
    ``$KINEMATE_WEIGHTS_DIR/NAME``, default ``~/.cache/kinemate/weights/NAME``."""
    root = os.environ.get("KINEMATE_WEIGHTS_DIR") or Path.home() / ".cache" / "kinemate" / "weights"
    return Path(root).expanduser() / name


# ---------------------------------------------------------------------------------------------
# The registry. Model weights are declared by their family (e.g. kinemate/models/magicanimate/
# weights.py) and found through the family registry on first use; other packages register
# their own sets here (the evaluation networks below).

# --- Evaluation networks (owner: evaluation engineer) -----------------------------------------
# Files published outside the hub, fetched from their original URLs (``url``); ``repo_id`` names
# the host (a --from-folder mirror is laid out as <mirror>/<host>/<filename>). No full sha256 is
# pinned (none was verified here); torchvision / pytorch-fid file names carry the first 8 hex
# digits of the sha256, which kinemate.eval checks and records with the full hash in every report.
# min_size = float32 parameter bytes of the architecture (the file holds at least these tensors).
# The 3D ResNet-50 for FID-VID (resnet-50-kinetics.pth) has no stable URL: see docs/evaluation.md.
_EVAL_USAGE = "kinemate eval videos --generated GEN --ground-truth GT --metric-weights {dir} -o report/"
_TV = "download.pytorch.org/models"
_LPIPS = "github.com/richzhang/PerceptualSimilarity"
_LPIPS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/"

register(
    WeightSet(
        name="eval-metrics",
        description="metric networks for kinemate eval: LPIPS (AlexNet backbone + v0.1 heads), FID "
        "InceptionV3 (pytorch-fid), FVD I3D (TorchScript)",
        license="torchvision AlexNet: BSD-3-Clause; LPIPS: BSD-2-Clause; pytorch-fid: Apache-2.0; "
        "I3D: Apache-2.0 (DeepMind kinetics-i3d)",
        usage=_EVAL_USAGE,
        notes=("FID-VID needs resnet-50-kinetics.pth (kenshohara/3D-ResNets-PyTorch), downloaded by hand.",),
        files=(
            WeightFile(_TV, "alexnet-owt-7be5be79.pth", "alexnet-owt-7be5be79.pth",
                       url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                       min_size=61_100_840 * 4, source="torchvision model zoo (sha256 prefix 7be5be79 in the name)"),
            WeightFile(_LPIPS, "alex.pth", "alex.pth", url=_LPIPS_URL + "alex.pth", min_size=1152 * 4,
                       source="richzhang/PerceptualSimilarity lpips/weights/v0.1"),
            WeightFile("github.com/mseitzer/pytorch-fid", "pt_inception-2015-12-05-6726825d.pth",
                       "pt_inception-2015-12-05-6726825d.pth",
                       url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                           "pt_inception-2015-12-05-6726825d.pth",
                       source="pytorch-fid release fid_weights (sha256 prefix 6726825d in the name)"),
            WeightFile("www.dropbox.com", "i3d_torchscript.pt", "i3d_torchscript.pt",
                       url="https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
                       source="StyleGAN-V / universome/fvd-comparison TorchScript I3D"),
        ),
    )
)
register(
    WeightSet(
        name="eval-lpips-vgg",
        description="LPIPS with the VGG16 backbone (kinemate eval --lpips-net vgg); download into the same "
        "folder as eval-metrics",
        license="torchvision VGG16: BSD-3-Clause; LPIPS: BSD-2-Clause",
        usage=_EVAL_USAGE + " --lpips-net vgg",
        files=(
            WeightFile(_TV, "vgg16-397923af.pth", "vgg16-397923af.pth",
                       url="https://download.pytorch.org/models/vgg16-397923af.pth",
                       min_size=138_357_544 * 4, source="torchvision model zoo (sha256 prefix 397923af in the name)"),
            WeightFile(_LPIPS, "vgg.pth", "vgg.pth", url=_LPIPS_URL + "vgg.pth", min_size=1472 * 4,
                       source="richzhang/PerceptualSimilarity lpips/weights/v0.1"),
        ),
    )
)


# ---------------------------------------------------------------------------------------------
# Verification


def sha256_file(path: Path, progress: Callable[[int], None] | None = None, chunk: int = 8 << 20) -> str:
    """Hex sha256 of a file, read in chunks (``progress(nbytes)`` after each)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
            if progress:
                progress(len(block))
    return h.hexdigest()


@dataclass
class FileResult:
    file: WeightFile
    path: Path
    status: str  #: "downloaded", "present" (already there and valid), "missing", "bad"
    sha256: str | None = None  #: computed
    message: str = ""


def check_file(wf: WeightFile, path: Path, *, hash_progress: Callable[[int], None] | None = None) -> tuple[bool, str, str | None]:
    """Check a local file against its record. Returns ``(ok, message, computed_sha256)``."""
    if not path.is_file():
        return False, "missing", None
    size = path.stat().st_size
    if wf.size is not None and size != wf.size:
        return False, f"size {size:,} bytes, expected exactly {wf.size:,}", None
    if wf.min_size is not None and size < wf.min_size:
        return False, f"size {size:,} bytes, expected at least {wf.min_size:,} (incomplete?)", None
    if size == 0:
        return False, "empty file", None
    digest = sha256_file(path, hash_progress)
    if wf.sha256 is not None and digest != wf.sha256.lower():
        return False, f"sha256 {digest}, expected {wf.sha256}", digest
    prefix = wf.expected_prefix
    if prefix and not digest.startswith(prefix):
        return False, f"sha256 {digest} does not start with {prefix} (published in the file name)", digest
    return True, "ok", digest


def how_checked(wf: WeightFile) -> str:
    """What verification a file gets: full sha256, a published sha256 prefix, or size only."""
    if wf.sha256:
        return "sha256"
    if wf.expected_prefix:
        return f"sha256 prefix {wf.expected_prefix} + size"
    return "size only: hash not pinned"


# ---------------------------------------------------------------------------------------------
# Download


def _fetch_from_folder(wf: WeightFile, mirror: Path, staging: Path) -> Path:
    src = mirror / wf.repo_id / wf.filename
    if not src.is_file():
        raise WeightsError(
            f"{src} not found in the local mirror {mirror} — lay it out as <mirror>/<repo_id>/<filename>."
        )
    dst = staging / wf.repo_id / wf.filename
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def _fetch_from_hub(wf: WeightFile, staging: Path, endpoint: str | None, token: str | None) -> Path:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub import errors as hf_errors
    except ImportError as exc:  # pragma: no cover - it is a base requirement
        raise WeightsError("huggingface_hub is not installed — pip install -r requirements/base.txt") from exc
    local = staging / wf.repo_id
    try:
        got = hf_hub_download(
            wf.repo_id, wf.filename, revision=wf.revision, local_dir=local,
            endpoint=endpoint, token=token,
        )
    except hf_errors.LocalEntryNotFoundError as exc:
        raise WeightsError(
            f"cannot download {wf.repo_id}/{wf.filename}: the hub is unreachable or offline mode is on "
            "(HF_HUB_OFFLINE=1) — check the network / unset HF_HUB_OFFLINE, or use --from-folder with a "
            "local copy."
        ) from exc
    except hf_errors.GatedRepoError as exc:
        raise WeightsError(
            f"{wf.repo_id} requires accepting its licence on huggingface.co and a token — log in with "
            "'hf auth login' (or set HF_TOKEN) and try again."
        ) from exc
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError,
            hf_errors.EntryNotFoundError) as exc:
        raise WeightsError(
            f"{wf.repo_id}/{wf.filename} (revision {wf.revision or 'default'}) is not on the hub any more "
            f"({type(exc).__name__}) — report it; you can place the file yourself at the target path."
        ) from exc
    except (OSError, hf_errors.HfHubHTTPError) as exc:
        raise WeightsError(
            f"downloading {wf.repo_id}/{wf.filename} failed ({exc}) — check the network and run the "
            "command again (finished files are kept, the partial one resumes)."
        ) from exc
    return Path(got)


def _fetch_from_url(wf: WeightFile, staging: Path) -> Path:
    """Stream ``wf.url`` (a file published outside the hub, e.g. torchvision's) into staging."""
    import urllib.error
    import urllib.request

    from kinemate.io.atomic import atomic_path

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise WeightsError(f"cannot download {wf.url}: offline mode is on (HF_HUB_OFFLINE=1) — unset it, or "
                           "use --from-folder with a local copy.")
    dst = staging / wf.repo_id / wf.filename
    try:
        with (atomic_path(dst) as part,
              urllib.request.urlopen(wf.url, timeout=60) as resp,  # noqa: S310 - fixed https URLs
              open(part, "wb") as f):
            shutil.copyfileobj(resp, f, 8 << 20)
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsError(f"downloading {wf.url} failed ({exc}) — check the network and run the command again, "
                           "or download the file yourself and use --from-folder.") from exc
    return dst


def download(
    name: str,
    dest: str | Path | None = None,
    *,
    from_folder: str | Path | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    force: bool = False,
    echo: Callable[[str], None] = print,
    hash_progress_factory: Callable[[WeightFile, int], Callable[[int], None] | None] | None = None,
) -> list[FileResult]:
    """Download the weight set ``name`` into ``dest`` (default :func:`default_dir`).

    Files come from the hub (``hf_hub_download``; ``endpoint`` overrides the hub URL like
    ``HF_ENDPOINT``) or, with ``from_folder``, from a local mirror laid out as
    ``<from_folder>/<repo_id>/<filename>``. Each file is verified (size, sha256 where pinned)
    before it is moved to ``dest/<target>``; a file that fails verification is deleted and a
    :class:`WeightsError` is raised. Valid files already in place are skipped unless ``force``.
    """
    from kinemate.io.atomic import commit, ensure_parent

    ws = get(name)
    dest = Path(dest) if dest is not None else default_dir(name)
    mirror = Path(from_folder) if from_folder is not None else None
    if mirror is not None and not mirror.is_dir():
        raise UsageError(f"--from-folder {mirror} is not a folder.")
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / STAGING
    results: list[FileResult] = []
    for i, wf in enumerate(ws.files, 1):
        target = dest / wf.target
        label = f"[{i}/{len(ws.files)}] {wf.target}"
        progress = hash_progress_factory(wf, target.stat().st_size) if (
            hash_progress_factory and target.is_file()) else None
        if target.exists() and not force:
            ok, why, digest = check_file(wf, target, hash_progress=progress)
            if ok:
                results.append(FileResult(wf, target, "present", digest, "already present, verified"))
                echo(f"{label}: present, verified ({how_checked(wf)})")
                continue
            echo(f"{label}: present but invalid ({why}); downloading again")
        if mirror:
            staged = _fetch_from_folder(wf, mirror, staging)
        else:
            staged = _fetch_from_url(wf, staging) if wf.url else _fetch_from_hub(wf, staging, endpoint, token)
        progress = hash_progress_factory(wf, staged.stat().st_size) if hash_progress_factory else None
        ok, why, digest = check_file(wf, staged, hash_progress=progress)
        if not ok:
            staged.unlink(missing_ok=True)
            raise WeightsError(
                f"{wf.repo_id}/{wf.filename} failed verification: {why}. The file was deleted and "
                f"nothing was put at {target}. The download may be corrupt or the file changed "
                "upstream — run the command again; if it keeps failing, report it."
            )
        ensure_parent(target)
        commit(staged, target)  # verified in staging: one rename puts it in place
        if wf.sha256:
            echo(f"{label}: downloaded, sha256 verified")
        else:
            echo(f"{label}: downloaded; its full sha256 is not pinned in kinemate, so only "
                 f"{how_checked(wf)} was checked (sha256 {digest})")
        results.append(FileResult(wf, target, "downloaded", digest))
    shutil.rmtree(staging, ignore_errors=True)
    return results


def verify(name: str, dest: str | Path | None = None) -> list[FileResult]:
    """Check every file of ``name`` under ``dest`` without downloading anything."""
    ws = get(name)
    dest = Path(dest) if dest is not None else default_dir(name)
    out = []
    for wf in ws.files:
        target = dest / wf.target
        ok, why, digest = check_file(wf, target)
        status = "present" if ok else ("missing" if why == "missing" else "bad")
        out.append(FileResult(wf, target, status, digest, why))
    return out


def human_size(n: int | None) -> str:
    if not n:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return "?"  # pragma: no cover


def iter_sets() -> Iterable[WeightSet]:
    sets = _all_sets()
    return (sets[k] for k in sorted(sets))
