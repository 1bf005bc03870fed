"""The README's two commands on a fresh machine: `make test` brings the system packages the
suite drives (chromium) itself, or says in one line what to install."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "system-deps.sh"


def _bin_without_chromium(tmp_path: Path, *, with_chromium: bool = False) -> str:
    """A PATH of one folder holding only what the script calls (and a stand-in chromium)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "id").symlink_to(shutil.which("id"))
    if with_chromium:
        fake = folder / "chromium"
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
    return str(folder)


def test_make_test_installs_system_packages_before_the_suite():
    make = shutil.which("make")
    out = subprocess.run([make, "-n", "test"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    lines = out.splitlines()
    deps = next(i for i, line in enumerate(lines) if "scripts/system-deps.sh" in line)
    tests = next(i for i, line in enumerate(lines) if "pytest" in line)
    assert deps < tests


def test_ci_only_calls_the_readme_command():
    steps = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))]
    assert steps == ["make test"]


def test_missing_chromium_is_one_line_saying_what_to_install(tmp_path):
    env = {**os.environ, "PATH": _bin_without_chromium(tmp_path)}
    run = subprocess.run(["/bin/sh", str(SCRIPT), "--check"], env=env, capture_output=True,
                         text=True)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1
    assert "apt-get install chromium chromium-driver" in run.stderr


def test_present_chromium_needs_nothing(tmp_path):
    env = {**os.environ, "PATH": _bin_without_chromium(tmp_path, with_chromium=True)}
    run = subprocess.run(["/bin/sh", str(SCRIPT), "--check"], env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0 and run.stderr == ""
