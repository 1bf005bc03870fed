"""Importing ``c2pa`` with its native library taken only from the installed package.

c2pa-python (0.38) looks for ``libc2pa_c.so`` (``.dylib``, ``.dll``) in the current working
folder, its ``artifacts/`` and ``libs/`` subfolders, and only then in its own package folder:
a file of that name in the folder where someone runs ``kinemate verify`` would be loaded and
its code run. It also honours ``C2PA_LIBRARY_NAME``, a name it joins to each of those
folders; an absolute path joined to any folder is that path, so setting it, while c2pa is
first imported, to the package's own library makes every place it searches the same file.
After the import the library that was loaded is checked; anything else is refused with a
:class:`ConfigError` before any file is signed or read.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

from kinemate.errors import ConfigError

_LIBRARY_NAMES = {"linux": "libc2pa_c.so", "darwin": "libc2pa_c.dylib", "win32": "c2pa_c.dll"}
_ENV = "C2PA_LIBRARY_NAME"
_IMPORT_LOCK = threading.Lock()  # the environment variable is set only around one import
_REINSTALL = "reinstall it: pip install --force-reinstall c2pa-python"


def library_name() -> str:
    name = _LIBRARY_NAMES.get(sys.platform)
    if name is None:
        raise ConfigError(f"C2PA signing is not supported on {sys.platform}; "
                          "use Linux, macOS or Windows, or turn signing off")
    return name


def package_library() -> Path:
    """The absolute, resolved path of the native library inside the installed c2pa package
    (found without importing c2pa)."""
    spec = importlib.util.find_spec("c2pa")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the c2pa-python package is not installed; {_REINSTALL}")
    package = Path(next(iter(spec.submodule_search_locations))).resolve()
    name = library_name()
    for candidate in (package / "libs" / name, package / name):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"the c2pa-python package at {package} has no {name}; {_REINSTALL}")


def import_c2pa() -> ModuleType:
    """The ``c2pa`` module, its native library loaded from the installed package only.

    Raises :class:`ConfigError` if the library is missing, fails to load, or was loaded
    from anywhere else (c2pa imported earlier by other code, from another working folder).
    """
    with _IMPORT_LOCK:
        module = sys.modules.get("c2pa")
        expected = package_library()
        if module is None:
            previous = os.environ.get(_ENV)
            os.environ[_ENV] = str(expected)
            try:
                import c2pa as module
            except Exception as exc:  # c2pa raises RuntimeError/ImportError on a bad library
                raise ConfigError(f"cannot load the C2PA library {expected} ({exc}); "
                                  f"{_REINSTALL}") from exc
            finally:
                if previous is None:
                    os.environ.pop(_ENV, None)
                else:
                    os.environ[_ENV] = previous
    for loaded in loaded_libraries(module):
        if loaded != expected:
            raise ConfigError(
                f"the C2PA library was loaded from {loaded}, not from the installed package "
                f"({expected}); kinemate will not sign or read manifests with it. Remove that "
                "file, or run kinemate from another folder, in a fresh process.")
    return module


def loaded_libraries(module: ModuleType) -> list[Path]:
    """The files of the c2pa native library loaded in this process: the one c2pa's wrapper
    holds, and on Linux every mapped file of that name."""
    found: list[Path] = []
    lib = getattr(getattr(module, "c2pa", None), "_lib", None)
    if getattr(lib, "_name", None):
        found.append(Path(lib._name).resolve())
    maps = Path("/proc/self/maps")
    if sys.platform == "linux" and maps.is_file():
        name = library_name()
        for line in maps.read_text(errors="replace").splitlines():
            parts = line.split(None, 5)
            if len(parts) == 6 and Path(parts[5]).name == name:
                found.append(Path(parts[5]))
    return sorted(set(found))
