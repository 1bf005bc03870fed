"""Fixtures for the provenance tests: a private kinemate home (keys) and small real frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def kinemate_home(tmp_path_factory, monkeypatch) -> Path:
    """Keys and config go to a temporary folder, never the user's."""
    home = tmp_path_factory.getbasetemp() / "kinemate-home"
    monkeypatch.setenv("KINEMATE_HOME", str(home))
    for var in ("KINEMATE_C2PA_CERT", "KINEMATE_C2PA_KEY", "KINEMATE_C2PA_ALG"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real photos, 256 px on the short side (level-128 watermark)."""
    from skimage import data

    return {
        "astronaut": cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA),
        "coffee": cv2.resize(data.coffee(), (384, 256), interpolation=cv2.INTER_AREA),
        "chelsea": cv2.resize(data.chelsea(), (384, 256), interpolation=cv2.INTER_AREA),
    }
