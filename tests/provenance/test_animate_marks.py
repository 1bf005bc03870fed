"""``kinemate animate`` marks its output (watermark + C2PA); ``--no-watermark`` is recorded."""

from __future__ import annotations

import json
from pathlib import Path



def _animate(release: Path, demo: Path, out: Path, *extra: str) -> int:
    import torch

    from kinemate.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(["animate", "--model", "magicanimate", "--weights", str(release),
                     str(demo / "demo4.png"), str(demo / "demo4_densepose.mp4"), "-o", str(out),
                     "--control", "densepose", "--size", "256x256", "--max-frames", "4",
                     "--steps", "1", "--context-frames", "4", "--context-overlap", "0",
                     "--seed", "5", "--no-progress", *extra])
    finally:
        torch.set_num_threads(threads)


def test_animate_output_is_marked_and_verifies(golden_release, demo_inputs, tmp_path, capsys):
    from kinemate.cli import main

    out = tmp_path / "out.mp4"
    assert _animate(golden_release, demo_inputs, out) == 0
    capsys.readouterr()
    assert main(["verify", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["watermark"]["detected"] and d["watermark"]["model"] == "magicanimate"
    assert d["c2pa"]["valid"]
    gen = d["c2pa"]["kinemate"]
    assert gen["model"] == "magicanimate" and gen["watermark"] is True
    assert gen["settings"]["steps"] == 1 and gen["settings"]["reference"] == "demo4.png"


def test_animate_no_watermark_flag_is_recorded(golden_release, demo_inputs, tmp_path):
    from kinemate.provenance import verify

    out = tmp_path / "plain.mp4"
    assert _animate(golden_release, demo_inputs, out, "--no-watermark") == 0
    rep = verify(out)
    assert not rep.watermark.detected
    assert rep.manifest.valid and rep.manifest.kinemate["watermark"] is False
