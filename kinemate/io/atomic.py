"""Write-then-rename helpers: nothing half-written is ever left under the final name."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

TMP_TAG = ".kinemate-tmp-"


def temp_sibling(path: Path) -> Path:
    """A fresh temporary name in the same folder as ``path`` that keeps its final suffix.

    ``out/clip.mp4`` -> ``out/clip.kinemate-tmp-3fa2c1.mp4`` (tools that look at the suffix, such
    as ffmpeg or a C2PA signer, see the right kind of file). Same folder, so the final rename is
    atomic on one file system.
    """
    path = Path(path)
    token = secrets.token_hex(4)
    return path.with_name(f"{path.stem}{TMP_TAG}{token}{path.suffix}")


def ensure_parent(path: Path) -> None:
    """Create the folder that will hold ``path`` (an output's parent folders are created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)


def remove_quietly(path: Path) -> None:
    """Remove a file or folder if it exists; never raises."""
    try:
        p = Path(path)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink()
    except OSError:
        pass


def commit(tmp: Path, final: Path) -> Path:
    """Atomically move a finished temporary file onto its final name (replacing a file there)."""
    os.replace(tmp, final)
    return Path(final)
