"""Fixtures for kinemate.io tests."""

from __future__ import annotations

import pytest
from io_helpers import make_testsrc


@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory):
    return make_testsrc(tmp_path_factory.mktemp("clips") / "clip.mp4")
