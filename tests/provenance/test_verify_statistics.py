"""`kinemate verify` shows its evidence (bit accuracy, the detection statistic), and a library
that fails to load is an error exit (3), never "not detected" (1).

The broken libraries are real import failures in a `kinemate verify` subprocess: a `cv2`
package whose import fails as OpenCV's does without libGL, and a `c2pa` package whose native
library is not a loadable file, each put first on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prov_helpers import pan

from kinemate.io import write_video
from kinemate.provenance import make_marker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory, photos) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("verify-stats")
    os.environ["KINEMATE_HOME"] = str(folder / "home")
    try:
        frames = pan(photos["coffee"], n=4)
        return {"marked": write_video(folder / "marked.mp4", frames, 10,
                                      marker=make_marker("kinemate-tiny", {"seed": 1})),
                "plain": write_video(folder / "plain.mp4", frames, 10)}
    finally:
        del os.environ["KINEMATE_HOME"]


def _verify(*args: str, pythonpath: Path | None = None, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, KINEMATE_HOME=str(home), HF_HUB_OFFLINE="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), str(REPO)])
    return subprocess.run([sys.executable, "-m", "kinemate", "verify", *args], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_report_shows_bits_and_statistic(files, tmp_path):
    res = _verify(str(files["marked"]), home=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "statistic: sync peak" in res.stdout and "p = " in res.stdout
    assert "bits: 64/64 payload bits right (100.0 %)" in res.stdout
    assert "coded bits before error correction" in res.stdout

    res = _verify(str(files["plain"]), "--json", home=tmp_path)
    assert res.returncode == 1, res.stderr
    wm = json.loads(res.stdout)["watermark"]
    assert not wm["detected"] and wm["p_value"] > wm["p_value_threshold"]
    bits = wm["bits"]
    assert bits["compared_with"].startswith("the payload of ")
    assert 0.2 < bits["bit_accuracy"] < 0.8 and bits["bits"] == 64 and bits["coded_bits"] == 140

    res = _verify(str(files["plain"]), home=tmp_path)
    assert "50 % is chance" in res.stdout


def test_opencv_that_fails_to_load_is_an_error_exit(files, tmp_path):
    broken = tmp_path / "site"
    (broken / "cv2").mkdir(parents=True)
    (broken / "cv2" / "__init__.py").write_text(
        'raise ImportError("libGL.so.1: cannot open shared object file: No such file or '
        'directory", name="cv2")\n')
    for kind in ("marked", "plain"):
        res = _verify(str(files[kind]), pythonpath=broken, home=tmp_path)
        assert res.returncode == 3, (res.returncode, res.stdout, res.stderr)
        assert "no kinemate mark" not in res.stdout and "Traceback" not in res.stderr
        assert "failed to load" in res.stderr and "libGL.so.1" in res.stderr
        assert "nothing was decided" in res.stderr and "reinstall" in res.stderr


def test_c2pa_library_that_fails_to_load_is_an_error_exit(files, tmp_path):
    broken = tmp_path / "site"
    pkg = broken / "c2pa"
    (pkg / "libs").mkdir(parents=True)
    (pkg / "libs" / "libc2pa_c.so").write_bytes(b"not a shared library\n" * 8)
    (pkg / "__init__.py").write_text(
        "import ctypes, pathlib\n"
        "ctypes.CDLL(str(pathlib.Path(__file__).parent / 'libs' / 'libc2pa_c.so'))\n")
    for kind in ("marked", "plain"):
        res = _verify(str(files[kind]), pythonpath=broken, home=tmp_path)
        assert res.returncode == 3, (res.returncode, res.stdout, res.stderr)
        assert "no kinemate mark" not in res.stdout and "Traceback" not in res.stderr
        assert "C2PA library" in res.stderr and "nothing was decided" in res.stderr
