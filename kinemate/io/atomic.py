"""Write-then-rename: nothing half-written is ever left under the final name.

Every layer that writes a file or a folder (io, pipeline, train, eval, provenance, service)
uses :func:`atomic_path` / :func:`atomic_folder` or the ``write_*_atomic`` shortcuts.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# -- the one write-then-rename helper for files and folders --------------------------------
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Write a file under a temporary sibling name; on success it is renamed onto ``path``.

    Yields the temporary :class:`~pathlib.Path` (same folder, same suffix) for any writer —
    ``open``, ``torch.save``, ``safetensors``, ffmpeg. On an exception the temporary file is
    removed and ``path`` is untouched. ``mode`` sets the final file's permission bits.
    """
    final = Path(path)
    ensure_parent(final)
    tmp = temp_sibling(final)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        commit(tmp, final)
    except BaseException:
        remove_quietly(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder under a temporary sibling name; on success it replaces ``path``.

    An existing folder at ``path`` is moved aside, the new one renamed in, and the old one
    deleted, so ``path`` always holds either the complete old or the complete new folder. On an
    exception the temporary folder is removed and ``path`` is untouched.
    """
    final = Path(path)
    ensure_parent(final)
    tmp = final.with_name(f".{final.name}{TMP_TAG}{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        yield tmp
        replace_folder(tmp, final)
    except BaseException:
        remove_quietly(tmp)
        raise


def replace_folder(tmp: Path, final: Path) -> Path:
    """Move a finished folder ``tmp`` onto ``final``: an existing folder there is moved aside
    first and deleted after, so ``final`` never holds a mix of the two."""
    final = Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.kinemate-old-{secrets.token_hex(4)}")
        os.replace(final, old)
        os.replace(tmp, final)
        remove_quietly(old)
    else:
        os.replace(tmp, final)
    return final


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    return write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2,
                      allow_nan: bool = True) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (see :func:`atomic_path`); ``indent=None``
    writes it compactly on one line."""
    separators = (",", ":") if indent is None else None
    text = json.dumps(data, indent=indent, separators=separators, allow_nan=allow_nan)
    return write_text_atomic(path, text if indent is None else text + "\n")
