"""Scratch folders of a run (the control frames spilled to disk while sampling) and the
removal of those that killed processes left behind.

A spill folder is ``<system temp>/kinemate-controls-<pid>-<random>/``: the process id in the
name tells whether its owner still runs, so leftovers of a process killed before it could
clean up (SIGKILL, a crash, out of memory) can be removed later without touching a live
run's folder (:func:`remove_stale_spills`; the service does it when it starts). No torch
here: the service calls this before any model is loaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

#: Name prefix of spill folders; the owner's process id and a random part follow.
SPILL_PREFIX = "kinemate-controls-"


def spill_folder(folder: str | Path | None = None) -> tempfile.TemporaryDirectory:
    """A new spill folder in ``folder`` (default the system temp folder), named after this
    process; use as a context manager (removed on exit, also after an error)."""
    return tempfile.TemporaryDirectory(prefix=f"{SPILL_PREFIX}{os.getpid()}-", dir=folder)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_spills(folder: str | Path | None = None, *, pid: int | None = None) -> list[Path]:
    """Remove spill folders (``kinemate-controls-<pid>-*`` in ``folder``, default the system
    temp folder) that a process left behind: those of processes that no longer exist, or
    with ``pid`` those of that process (a process clearing its own on the way out). Folders
    of live processes are kept, and so are folders without a process id in their name.
    Returns the folders removed."""
    root = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(root.glob(f"{SPILL_PREFIX}*"))
    except OSError:
        return removed
    for path in entries:
        owner, sep, _ = path.name[len(SPILL_PREFIX):].partition("-")
        if not (sep and owner.isdigit()) or path.is_symlink() or not path.is_dir():
            continue
        if pid is not None:
            stale = int(owner) == pid
        else:
            stale = int(owner) != os.getpid() and not _process_exists(int(owner))
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed
