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


@pytest.fixture(scope="session")
def golden_release(reference_dir: Path, tmp_path_factory) -> Path:
    """The golden tiny MagicAnimate release layout (symlinks) plus the golden text embeddings
    stored beside it, since the golden set has no CLIP: loadable by ``--weights``."""
    from safetensors.torch import load_file, save_file

    golden = reference_dir / "golden"
    root = tmp_path_factory.mktemp("weights") / "magicanimate"
    root.mkdir()
    for sub in ("sd-vae-ft-mse", "MagicAnimate", "stable-diffusion-v1-5"):
        os.symlink(golden / "weights" / sub, root / sub)
    inputs = load_file(str(golden / "inputs.safetensors"))
    save_file({"uncond": inputs["text_embeds_uncond"], "cond": inputs["text_embeds_cond"]},
              str(root / "text_embeddings.safetensors"))
    return root


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread: much faster for tiny tensors on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
