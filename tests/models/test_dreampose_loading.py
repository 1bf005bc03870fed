"""DreamPose's release layout: strict loading of the published .pth files (prefixes, old VAE
attention names, errors that name the keys), on copies of the tiny golden weights."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from kinemate.errors import WeightsError

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(os.environ.get("KINEMATE_DREAMPOSE_GOLDEN_DIR",
                             REPO.parent / "shared" / "reference" / "dreampose" / "golden"))


def _weights_dir() -> Path:
    index = GOLDEN / "cases.json"
    if not index.is_file():
        pytest.skip(f"no DreamPose golden set at {GOLDEN}")
    return GOLDEN / json.loads(index.read_text())["weights_dir"]


@pytest.fixture
def release(tmp_path) -> Path:
    root = tmp_path / "dp"
    shutil.copytree(_weights_dir(), root)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root


def _files(root: Path) -> dict:
    from kinemate.models.dreampose.checkpoint import release_files

    return release_files(root)


def _edit(path: Path, change) -> None:
    tensors = torch.load(path, weights_only=True)
    change(tensors)
    torch.save(tensors, path)


def test_release_is_recognised_and_loads_strictly(release):
    from kinemate.models.registry import detect_family
    from kinemate.pipeline import load_pipeline

    assert detect_family(release).name == "dreampose"
    unet_keys = torch.load(_files(release)["unet"], weights_only=True)
    assert all(k.startswith("module.") for k in unet_keys)  # the golden set's accelerate prefix
    vae_keys = torch.load(_files(release)["vae"], weights_only=True)
    assert any(".query." in k for k in vae_keys)  # diffusers 0.15 attention names
    pipe = load_pipeline(release)
    assert pipe.family == "dreampose" and pipe.default_size == (512, 640)
    assert pipe.unet.config.in_channels == 14 and pipe.denoiser.latent_channels == 4
    assert pipe.options.steps == 100 and pipe.options.image_guidance == 8.0
    assert pipe.options.pose_guidance == 3.0 and pipe.options.stretch
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    # every tensor of the VAE file is in the model, under the current names
    loaded = pipe.vae.state_dict()
    assert len(loaded) == len(vae_keys)
    key = next(k for k in vae_keys if k.endswith(".query.weight"))
    assert torch.equal(loaded[key.replace(".query.", ".to_q.")], vae_keys[key])


def test_bare_keys_load_too(release):
    from kinemate.models.dreampose.checkpoint import load_unet

    path = _files(release)["unet"]
    _edit(path, lambda t: t.update({k.replace("module.", ""): t.pop(k) for k in list(t)}))
    unet = load_unet(path, _files(release)["pipeline"])
    assert unet.conv_in.weight.shape[1] == 14


@pytest.mark.parametrize("what, change, words", [
    ("unet", lambda t: t.pop(next(k for k in t if "conv_out.bias" in k)), ["1 missing", "conv_out.bias"]),
    ("unet", lambda t: t.update({"module.extra.weight": torch.zeros(1)}), ["1 unexpected", "extra.weight"]),
    ("adapter", lambda t: t.update({"linear1.weight": torch.zeros(50, 55)}), ["wrong shapes", "linear1.weight"]),
    ("adapter", lambda t: t.pop("linear1.bias"), ["missing", "linear1.bias"]),
    ("vae", lambda t: t.update({"decoder.extra.weight": torch.zeros(1)}), ["unexpected", "decoder.extra.weight"]),
    ("vae", lambda t: t.pop(next(k for k in t if k.endswith("proj_attn.weight"))), ["missing", "to_out.0.weight"]),
])
def test_strict_errors_name_the_keys(release, what, change, words):
    from kinemate.pipeline import load_pipeline

    _edit(_files(release)[what], change)
    with pytest.raises(WeightsError) as err:
        load_pipeline(release)
    for word in words:
        assert word in str(err.value)


def test_missing_parts_are_named(release):
    from kinemate.pipeline import load_pipeline

    adapter = _files(release)["adapter"]
    adapter.rename(adapter.with_name("adapter_7.pth"))
    with pytest.raises(WeightsError, match="no adapter_499.pth"):
        load_pipeline(release)
    adapter.with_name("adapter_7.pth").rename(adapter)
    shutil.rmtree(release / "clip-vit-base-patch32")
    with pytest.raises(WeightsError, match="kinemate weights download dreampose"):
        load_pipeline(release)


def test_a_pickle_with_code_is_refused(release):
    import pickle

    path = _files(release)["adapter"]

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path.write_bytes(pickle.dumps({"linear1.weight": Evil()}))
    from kinemate.pipeline import load_pipeline

    with pytest.raises(WeightsError, match="cannot read weights file"):
        load_pipeline(release)


def test_weights_import_checks_records_and_lays_out(release, tmp_path, capsys):
    """kinemate weights import dreampose: checked files laid out with their sha256; a file
    whose tensors do not fit is refused before anything is written."""
    import hashlib

    from kinemate.cli import main
    from kinemate.pipeline import load_pipeline

    files = _files(release)
    dest = tmp_path / "W"
    bad = tmp_path / "bad" / files["adapter"].name
    bad.parent.mkdir()
    shutil.copyfile(files["adapter"], bad)
    _edit(bad, lambda t: t.update({"vae2clip.bias": torch.zeros(7)}))
    rc = main(["weights", "import", "dreampose", str(files["unet"]), str(bad),
               str(files["pipeline"]), "--dir", str(dest)])
    assert rc != 0 and not dest.exists()
    assert "vae2clip.bias" in capsys.readouterr().err
    rc = main(["weights", "import", "dreampose", str(files["unet"]), str(files["adapter"]),
               str(files["vae"]), str(files["pipeline"]), str(files["clip"]), "--dir", str(dest)])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((dest / "dreampose-import.json").read_text())
    entry = next(e for e in record["imported"] if e["file"] == files["unet"].name)
    assert entry["sha256"] == hashlib.sha256(files["unet"].read_bytes()).hexdigest()
    assert load_pipeline(dest).family == "dreampose"
    assert main(["weights", "import", "dreampose", str(release / "nope.zip"), "--dir", str(dest)]) != 0


def test_weights_list_says_where_the_checkpoints_are(capsys):
    from kinemate.cli import main

    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    import re

    block = out[re.search(r"^dreampose ", out, re.M).start():]
    block = block[:block.index("download: kinemate weights download dreampose")]
    assert "drive.google.com" in block and "no published hashes" in block
    assert "kinemate weights import dreampose" in block
