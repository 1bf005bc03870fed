"""kinemate finetune --model dreampose on the tiny golden release (CPU): both phases of the
official recipe, the result loads as a DreamPose release, an interrupted run resumes to the
same weights, what is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kinemate.errors import InputError, UsageError

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(os.environ.get("KINEMATE_DREAMPOSE_GOLDEN_DIR",
                             REPO.parent / "shared" / "reference" / "dreampose" / "golden"))
TINY = ["--unet-epochs", "3", "--vae-epochs", "2", "--vae-batch", "1", "--vae-accumulation", "1",
        "--no-progress", "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def weights() -> Path:
    index = GOLDEN / "cases.json"
    if not index.is_file():
        pytest.skip(f"no DreamPose golden set at {GOLDEN}")
    return GOLDEN / json.loads(index.read_text())["weights_dir"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A synthetic person and the exact UV field of the frame (kinemate synth)."""
    from PIL import Image

    from kinemate.synth import generate_clip

    clip = generate_clip(5, 1, (128, 160))
    folder = tmp_path_factory.mktemp("subject")
    Image.fromarray(clip.frames[0]).save(folder / "me.png")
    np.save(folder / "me_densepose.npy", clip.uv[0])
    return folder / "me.png"


def _tensors(folder: Path, pattern: str) -> dict:
    path = next(folder.glob(pattern))
    return torch.load(path, weights_only=True)


def test_finetune_both_phases_and_resume(weights, photo, tmp_path, capsys, one_thread):
    from kinemate.cli import main
    from kinemate.pipeline import load_pipeline

    full = tmp_path / "full"
    assert main(["finetune", "--model", "dreampose", "--weights", str(weights), str(photo),
                 "-o", str(full), *TINY]) == 0, capsys.readouterr().err
    assert "steps/s" in capsys.readouterr().out
    record = json.loads((full / "finetune.json").read_text())
    assert record["optimizer_steps"] == {"unet": 3, "vae": 2}
    assert (full / "loss.png").is_file()
    assert len((full / "unet" / "log.csv").read_text().splitlines()) == 1 + 3
    # what each phase trained: UNet and adapter moved; of the VAE only the decoder
    before = torch.load(next(weights.glob("unet_epoch_*.pth")), weights_only=True)
    after = _tensors(full, "unet_epoch_*.pth")
    assert not torch.equal(before["module.conv_in.weight"], after["conv_in.weight"])
    vae0 = {k: v for k, v in torch.load(next(weights.glob("vae_*.pth")), weights_only=True).items()}
    vae1 = _tensors(full, "vae_*.pth")
    changed = {k for k in vae1 if not torch.equal(vae1[k], vae0.get(k, vae0.get(
        k.replace("to_q", "query").replace("to_k", "key").replace("to_v", "value")
        .replace("to_out.0", "proj_attn"))))}
    assert changed and all(k.startswith("decoder.") for k in changed)
    assert load_pipeline(full).family == "dreampose"

    # interrupted after 2 steps, then resumed: the same weights as the uninterrupted run
    part = tmp_path / "part"
    args = ["finetune", "--weights", str(weights), str(photo), "-o", str(part), *TINY]
    assert main([*args, "--max-steps", "2"]) == 0
    assert "--resume" in capsys.readouterr().out and not part.exists()
    assert main([*args, "--resume"]) == 0
    for pattern in ("unet_epoch_*.pth", "adapter_*.pth", "vae_*.pth"):
        a, b = _tensors(full, pattern), _tensors(part, pattern)
        assert all(torch.equal(a[k], b[k]) for k in a), pattern


def test_finetune_refusals(weights, photo, tmp_path):
    from kinemate.cli import main
    from kinemate.train.dreampose import finetune

    lone = tmp_path / "lone.png"
    lone.write_bytes(photo.read_bytes())
    with pytest.raises(InputError, match="lone_densepose.npy"):
        finetune(weights, [lone], tmp_path / "o")
    assert main(["finetune", "--model", "magicanimate", "--weights", str(weights), str(photo),
                 "-o", str(tmp_path / "o")]) != 0
    with pytest.raises(UsageError, match="exists"):
        finetune(weights, [photo], weights)
