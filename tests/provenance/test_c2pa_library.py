"""The C2PA native library comes from the installed c2pa package, never from the folder
kinemate runs in (c2pa-python searches the working folder first)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kinemate.provenance.c2pa_lib import library_name, package_library

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")

# Runs in a fresh process from the decoy's folder: signs a PNG, runs `kinemate verify` on it,
# then reports every mapped file named like the C2PA library.
_SCRIPT = r"""
import json, sys
import numpy as np
from kinemate.cli import main
from kinemate.provenance import make_marker, write_marked_image
if sys.argv[1] == "sign":
    img = np.full((96, 96, 3), 128, np.uint8)
    img[20:70, 30:60] = (200, 40, 40)
    write_marked_image("still.png", img, make_marker("kinemate-tiny", {"steps": 1}))
rc = main(["verify", "still.png", "--json"])
maps = sorted({l.split(None, 5)[5].strip() for l in open("/proc/self/maps")
               if len(l.split(None, 5)) == 6 and "libc2pa_c" in l})
print("RESULT " + json.dumps({"rc": rc, "maps": maps}))
"""


def _run(folder: Path, mode: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("C2PA_LIBRARY_NAME", None)
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=300)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"rc {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture()
def decoy_folder(tmp_path) -> Path:
    """A working folder holding copies of the real library where c2pa-python looks first
    (a working library, so loading it is invisible unless its path is checked)."""
    real = package_library()
    for sub in ("", "libs", "artifacts"):
        (tmp_path / sub).mkdir(exist_ok=True)
        shutil.copyfile(real, tmp_path / sub / library_name())
    return tmp_path


def test_sign_and_verify_load_the_package_library(decoy_folder):
    res = _run(decoy_folder, "sign")
    assert res["rc"] == 0  # signed and verified
    assert res["maps"] == [str(package_library())], res["maps"]


def test_verify_alone_loads_the_package_library(decoy_folder, tmp_path_factory):
    signed = tmp_path_factory.mktemp("signed")
    assert _run(signed, "sign")["rc"] == 0
    shutil.copyfile(signed / "still.png", decoy_folder / "still.png")
    res = _run(decoy_folder, "verify")
    assert res["rc"] == 0
    assert res["maps"] == [str(package_library())], res["maps"]


def test_a_library_loaded_from_elsewhere_is_refused(decoy_folder):
    # Other code imported c2pa first, from the decoy's folder: kinemate refuses to use it.
    script = ("import c2pa\n"
              "from kinemate.provenance import read_manifest\n"
              "try:\n    read_manifest('none.png')\n"
              "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("C2PA_LIBRARY_NAME", None)
    out = subprocess.run([sys.executable, "-c", script], cwd=decoy_folder, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.startswith("ConfigError"), out.stdout + out.stderr
    assert str(decoy_folder / library_name()) in out.stdout
    assert "not from the installed package" in out.stdout
