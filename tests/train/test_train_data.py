"""Training data: deterministic example streams, held-out seeds refused, the dataset folder format."""

from __future__ import annotations

import pytest
import torch
from trainfixtures import tiny_config

from kinemate.errors import ConfigError
from kinemate.synth import SyntheticClips
from kinemate.synth.dataset import write_dataset
from kinemate.train.config import DataConfig, config_from_dict
from kinemate.train.data import StageDataset, make_loader, make_source
from kinemate.train.trainer import train


def test_examples_are_a_pure_function_of_position():
    cfg = DataConfig(size=32, synth_frames=6, clip_frames=4, num_seeds=5)
    a = StageDataset(make_source(cfg), "stage2", seed=1, clip_frames=4)
    b = StageDataset(make_source(DataConfig(size=32, synth_frames=6, clip_frames=4, num_seeds=5)),
                     "stage2", seed=1, clip_frames=4)
    for k in (0, 7, 3):
        ea, eb = a[k], b[k]
        assert ea["target"].shape == (3, 4, 32, 32) and ea["control"].shape == (3, 4, 32, 32)
        assert ea["reference"].shape == (3, 32, 32)
        assert all(torch.equal(ea[n], eb[n]) for n in ea)
        assert float(ea["target"].min()) >= -1 and float(ea["control"].min()) >= 0
    assert not torch.equal(a[0]["target"], a[1]["target"])
    other_seed = StageDataset(make_source(cfg), "stage2", seed=2, clip_frames=4)
    assert not torch.equal(a[0]["target"], other_seed[0]["target"])


def test_loader_resumes_at_a_step_and_shards_processes():
    src = make_source(DataConfig(size=32, synth_frames=4, num_seeds=6))
    full = make_loader(src, "stage1", seed=0, clip_frames=4, batch_size=2, step=0, rank=0, world=1)
    it = iter(full)
    batches = [next(it) for _ in range(3)]
    resumed = next(iter(make_loader(src, "stage1", seed=0, clip_frames=4, batch_size=2, step=2,
                                    rank=0, world=1)))
    assert torch.equal(resumed["target"], batches[2]["target"])
    r0 = next(iter(make_loader(src, "stage1", seed=0, clip_frames=4, batch_size=1, step=0, rank=0, world=2)))
    r1 = next(iter(make_loader(src, "stage1", seed=0, clip_frames=4, batch_size=1, step=0, rank=1, world=2)))
    assert torch.equal(r0["target"][0], batches[0]["target"][0])
    assert torch.equal(r1["target"][0], batches[0]["target"][1])


def test_heldout_seeds_are_refused():
    with pytest.raises(ConfigError, match="held-out"):
        make_source(DataConfig(seed_offset=999_990, num_seeds=100))


def test_training_reads_the_dataset_folder_format(tmp_path):
    data = tmp_path / "data"
    write_dataset(data, SyntheticClips(2, num_frames=5, size=(48, 40)), total=2, progress=False,
                  densepose=True, mask=False, parts=False)
    for control in ("openpose", "densepose"):
        cfg = tiny_config(tmp_path / control, [
            {"kind": "vae", "steps": 1, "batch_size": 2},
            {"kind": "stage2", "steps": 1, "batch_size": 1},
        ])
        cfg["data"] = {"kind": "folder", "root": str(data), "size": 32, "clip_frames": 3,
                       "control": control}
        out = train(config_from_dict(cfg), progress=False)
        assert (out / "kinemate.json").is_file()
        src = make_source(config_from_dict(cfg).data)
        ex = StageDataset(src, "stage2", seed=0, clip_frames=3)[0]
        assert ex["target"].shape == (3, 3, 32, 32)
        assert float(ex["control"].max()) > 0  # the control maps are not empty
