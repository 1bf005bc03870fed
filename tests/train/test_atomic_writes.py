"""Training's files and folders appear whole or not at all (kinemate.io.atomic), and leave no
temporary names behind."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file
from trainfixtures import tiny_config

from kinemate.train.checkpoint import list_checkpoints, save_checkpoint
from kinemate.train.config import config_from_dict
from kinemate.train.trainer import export, make_accelerator


def test_checkpoints_are_written_whole_and_pruned(tmp_path):
    accelerator = make_accelerator(config_from_dict(tiny_config(tmp_path, [{"kind": "vae"}])))
    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(module.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)

    def save(step: int) -> None:
        save_checkpoint(tmp_path, step=step, micro_step=step, elapsed_s=0.0, module=module,
                        optimizer=optimizer, scheduler=scheduler, ema=None,
                        accelerator=accelerator, keep=2)

    for step in (1, 2, 3):
        save(step)
    with torch.no_grad():
        module.weight.add_(1.0)
    save(3)  # the same step again: the folder is replaced whole
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_0000002", "step_0000003"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000002", "step_0000003"]
    assert sorted(p.name for p in (root / "step_0000003").iterdir()) == [
        "model.safetensors", "optimizer.pt", "rng_0.pt", "scheduler.pt", "state.json"]
    saved = load_file(str(root / "step_0000003" / "model.safetensors"))
    assert torch.equal(saved["weight"], module.weight.detach())


def test_export_replaces_the_folder_whole_and_casts_to_fp16(tmp_path):
    src = tmp_path / "final"
    (src / "unet").mkdir(parents=True)
    save_file({"w": torch.ones(2), "i": torch.arange(3)}, str(src / "unet" / "model.safetensors"))
    (src / "kinemate.json").write_text("{}")
    dst = tmp_path / "exported"
    dst.mkdir()
    (dst / "stale.txt").write_text("from an earlier export")
    export(src, dst, fp16=True)
    assert sorted(p.name for p in dst.iterdir()) == ["kinemate.json", "unet"]
    sd = load_file(str(dst / "unet" / "model.safetensors"))
    assert sd["w"].dtype == torch.float16 and sd["i"].dtype == torch.int64
    assert load_file(str(src / "unet" / "model.safetensors"))["w"].dtype == torch.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "final"]  # nothing else left
