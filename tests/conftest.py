"""Shared test fixtures. No network: hub downloads are disabled for the whole suite."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Provenance signing keys (kinemate.provenance) go to a throwaway folder, never the user's config.
os.environ["KINEMATE_HOME"] = tempfile.mkdtemp(prefix="kinemate-test-home-")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference" / "magicanimate"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"shared reference data not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def demo_inputs(reference_dir: Path) -> Path:
    return reference_dir / "demo_inputs"
