"""The evaluation runner end to end on synthetic videos: real files through ffmpeg, the CLI,
reports (JSON + Markdown + PNG), compare mode and the dataset mode with a generator command."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kinemate.cli import main
from kinemate.errors import UsageError
from kinemate.eval.networks import networks_from_dir
from kinemate.io import read_video, write_image, write_video
from kinemate.synth import generate_clip

@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny networks on a shared 2-core machine: one intra-op thread avoids spin contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



def _clip(i, n=10, size=96):
    return generate_clip(1_000_000 + i, num_frames=n, size=(size, size), skeleton=False, densepose=False).frames


def _flicker(frames, amp):
    return np.stack([np.clip(f.astype(int) + (amp if t % 2 else -amp), 0, 255).astype(np.uint8)
                     for t, f in enumerate(frames)])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalvids")
    for d in ("gt", "same", "flick", "refs"):
        (root / d).mkdir()
    for i in range(2):
        gt = _clip(i)
        write_video(root / "gt" / f"v{i}", gt, 15)          # PNG folders: lossless
        write_video(root / "same" / f"v{i}", gt, 15)
        write_video(root / "flick" / f"v{i}.mp4", _flicker(gt, 15), 15)  # H.264 through ffmpeg
        write_image(root / "refs" / f"v{i}.png", gt[0])
    write_video(root / "flick" / "extra.mp4", _clip(5), 15)  # no ground truth: skipped with a note
    return root


# matplotlib 3.10 calls pyparsing APIs that warn about their own renames; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:matplotlib")

ARGS = ["--size", "64", "--clip-len", "4", "--no-pose", "--random-networks"]


def _run(argv):
    return main(["eval", *argv])


def test_eval_videos_identical_and_flickering(videos, tmp_path):
    out_same, out_flick = tmp_path / "same", tmp_path / "flick"
    assert _run(["videos", "--generated", str(videos / "same"), "--ground-truth", str(videos / "gt"),
                 "--references", str(videos / "refs"), "-o", str(out_same), *ARGS]) == 0
    assert _run(["videos", "--generated", str(videos / "flick"), "--gt", str(videos / "gt"),
                 "-o", str(out_flick), *ARGS]) == 0
    same = json.loads((out_same / "report.json").read_text())
    flick = json.loads((out_flick / "report.json").read_text())
    # identical videos: PSNR inf, SSIM 1, L1 0, LPIPS 0, Fréchet distances 0
    assert same["summary"]["psnr"] == "inf" and same["summary"]["ssim"] == pytest.approx(1.0)
    assert same["summary"]["l1"] == 0.0 and same["summary"]["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert same["set_metrics"]["fid"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert same["set_metrics"]["fvd"]["n_generated"] == 2 * (10 // 4)
    assert same["summary"]["flicker_warp_mae"] == pytest.approx(same["summary"]["gt_flicker_warp_mae"])
    assert same["summary"]["identity_mean"] > 0.5
    # injected flicker: far more warping error than the ground truth's own, lower PSNR
    fs = flick["summary"]
    assert fs["flicker_warp_mae"] > 5 * fs["gt_flicker_warp_mae"] and fs["flicker_warp_mae"] > 20
    assert 20 < fs["psnr"] < 30
    assert any("extra" in n for n in flick["notes"])
    # the report declares protocol and networks
    assert flick["protocol"]["size"] == [64, 64] and flick["protocol"]["clip_len"] == 4
    assert flick["networks"]["lpips"]["pretrained"] is False
    md = (out_flick / "report.md").read_text()
    assert "RANDOM metric networks" in md and "64x64" in md and "uint8-overflow" in md
    plots = {p.name for p in (out_flick / "plots").iterdir()}
    assert {"per_frame_psnr.png", "per_frame_warp_mae.png", "distributions.png"} <= plots
    assert all((out_flick / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)
    assert not list(out_flick.glob("*kinemate-tmp*"))
    # compare mode: both side by side, best value bold
    cmp_dir = tmp_path / "cmp"
    assert _run(["compare", str(out_same), str(out_flick), "--names", "same", "flicker", "-o", str(cmp_dir)]) == 0
    cmp_md = (cmp_dir / "compare.md").read_text()
    assert "| same | flicker |" in cmp_md and "PROTOCOLS DIFFER" not in cmp_md
    table = json.loads((cmp_dir / "compare.json").read_text())["table"]
    assert table["flicker_warp_mae"][1] > table["flicker_warp_mae"][0]
    assert (cmp_dir / "plots" / "compare_summary.png").is_file()


def test_compare_warns_when_protocols_differ(videos, tmp_path, monkeypatch):
    (tmp_path / "tests_eval_embed.py").write_text(
        "import numpy as np\ndef mean_colour(region):\n    return region.reshape(-1, 3).mean(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    a, b = tmp_path / "a", tmp_path / "b"
    base = ["videos", "--generated", str(videos / "same"), "--ground-truth", str(videos / "gt"), "--no-plots"]
    assert _run([*base, "-o", str(a), *ARGS]) == 0
    assert _run([*base, "-o", str(b), *ARGS, "--stride", "2"]) == 0
    # a pluggable identity embedding from the command line (here: numpy's mean over pixels)
    assert _run([*base, "-o", str(tmp_path / "e"), *ARGS, "--identity-embedding", "tests_eval_embed:mean_colour"]) == 0
    rep_e = json.loads((tmp_path / "e" / "report.json").read_text())
    assert rep_e["networks"]["identity"]["text"] == "tests_eval_embed:mean_colour"
    assert rep_e["summary"]["identity_mean"] == pytest.approx(1.0, abs=0.05)
    assert _run(["compare", str(a), str(b), "-o", str(tmp_path / "c")]) == 0
    text = (tmp_path / "c" / "compare.md").read_text()
    assert "PROTOCOLS DIFFER" in text and "stride" in text
    with pytest.raises(UsageError):
        from kinemate.eval.report import compare_reports
        compare_reports([a], tmp_path / "d")


def test_eval_videos_usage_errors(videos, tmp_path, capsys):
    assert _run(["videos", "--generated", str(videos / "refs"), "--ground-truth", str(videos / "gt"),
                 "-o", str(tmp_path / "x"), *ARGS]) == 2
    assert "same name" in capsys.readouterr().err
    assert _run(["videos", "--generated", str(videos / "same"), "--ground-truth", str(videos / "gt"),
                 "-o", str(tmp_path / "y"), "--metric-weights", str(tmp_path / "nope"), "--no-pose"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_psnr_subcommand_shows_trap_next_to_correct_value(tmp_path, capsys):
    a = np.full((32, 32, 3), 10, np.uint8)
    b = np.full((32, 32, 3), 110, np.uint8)
    write_image(tmp_path / "a.png", a)
    write_image(tmp_path / "b.png", b)
    assert _run(["psnr", str(tmp_path / "a.png"), str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr().out
    assert "8.13" in out and "36.09" in out


def test_networks_from_dir_loads_published_layouts_and_reports_missing(tmp_path, monkeypatch):
    from kinemate.eval.lpips import LPIPS

    torch.manual_seed(0)
    ref = LPIPS("alex")
    folder = tmp_path / "eval-metrics"  # the folder 'kinemate weights download eval-metrics' fills
    folder.mkdir()
    torch.save({k: torch.randn_like(v) * 0.01 for k, v in ref.net.state_dict().items()},
               folder / "alexnet-owt-7be5be79.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate([64, 192, 384, 256, 256])},
               folder / "alex.pth")
    monkeypatch.setenv("KINEMATE_WEIGHTS_DIR", str(tmp_path))
    assert networks_from_dir(None).lpips is not None  # found in the default download folder
    monkeypatch.setenv("KINEMATE_WEIGHTS_DIR", str(tmp_path / "empty"))
    assert "not available" in networks_from_dir(None).missing["lpips"]
    nets = networks_from_dir(folder)
    assert nets.lpips is not None and nets.inception is None
    desc = nets.describe()
    assert desc["lpips"]["available"]
    # a random file cannot have the hash its torch.hub-style name announces
    assert desc["lpips"]["files"][0]["filename_hash_check"] == "mismatch"
    assert "pt_inception-2015-12-05-6726825d.pth" in desc["fid"]["why"]
    assert "i3d_torchscript.pt" in desc["fvd"]["why"]


GENERATOR = """
import sys
from kinemate.io import read_video, write_video
frames, fps = read_video(sys.argv[2])
write_video(sys.argv[3], frames[:, ::-1].copy() if 'flip' in sys.argv[1] else frames, fps)
"""


def test_eval_dataset_with_generator_command_and_pose(tmp_path):
    data = tmp_path / "data"
    script = tmp_path / "gen.py"
    script.write_text(GENERATOR)
    for i in range(2):
        s = data / f"sample{i}"
        s.mkdir(parents=True)
        frames = _clip(i, n=6, size=128)
        write_image(s / "reference.png", frames[0])
        write_video(s / "driving.mp4", frames, 15)
        write_video(s / "ground_truth.mp4", frames, 15)
    out = tmp_path / "out"
    cmd = f"{sys.executable} {script} {{reference}} {{driving}} {{output}}"
    assert _run(["dataset", str(data), "--command", cmd, "-o", str(out), "--size", "128", "--clip-len", "3",
                 "--random-networks"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["mode"] == "dataset" and rep["num_videos"] == 2
    assert sorted(p.name for p in (out / "generated").glob("*.mp4")) == ["sample0.mp4", "sample1.mp4"]
    # the generator re-encoded the driving video (= ground truth): near-identical
    assert rep["summary"]["psnr"] > 35
    # pose was re-detected in both with kinemate.pose: PCK is a number in [0, 1] when found
    assert rep["networks"]["pose"]["available"]
    pck = rep["summary"].get("pck@0.1")
    assert pck is None or 0.0 <= pck <= 1.0
    assert "command:" in rep["inputs"]["generator"]
    # a second run with the same generator reuses the videos; another generator regenerates them
    assert _run(["dataset", str(data), "--command", cmd, "-o", str(out), "--size", "64", "--no-pose", "--no-plots"]) == 0
    assert any("reused" in n for n in json.loads((out / "report.json").read_text())["notes"])
    flip = f"{sys.executable} {script} flip{{reference}} {{driving}} {{output}}"
    assert _run(["dataset", str(data), "--command", flip, "-o", str(out), "--size", "64", "--no-pose", "--no-plots"]) == 0
    rep2 = json.loads((out / "report.json").read_text())
    assert any("regenerated" in n for n in rep2["notes"]) and rep2["summary"]["psnr"] < 30
    # a failing generator is reported with what to do
    bad = tmp_path / "bad"
    assert _run(["dataset", str(data), "--command", f"{sys.executable} -c pass {{reference}} {{driving}} {{output}}",
                 "-o", str(bad), "--no-pose"]) == 1


def test_protocol_frame_selection_and_framing(videos):
    from kinemate.eval.runner import Protocol, load_frames

    gt = read_video(videos / "gt" / "v0")[0]
    got = load_frames(videos / "gt" / "v0", Protocol(size=None, start=1, stride=3, max_frames=3))
    assert got.shape == (3, 96, 96, 3)
    assert np.array_equal(got, gt[[1, 4, 7]])
    wide = load_frames(videos / "gt" / "v0", Protocol(size=(64, 32), fit="letterbox", max_frames=2))
    assert wide.shape == (2, 32, 64, 3)
    assert wide[:, :, :10].max() == 0  # letterbox bars, never a stretch
    with pytest.raises(UsageError):
        Protocol(stride=0)


def _tiny_pipeline_weights(tmp_path: Path) -> Path | None:
    """The golden tiny MagicAnimate-layout weights (+ their stored text embeddings) saved in
    kinemate format; else the bundled kinemate-tiny model's folder; skip when neither exists."""
    from kinemate.pipeline import load_pipeline
    from kinemate.pipeline.loading import bundled_model_dir, has_bundled_model

    golden = Path(__file__).resolve().parents[2].parent / "shared/reference/magicanimate/golden"
    if (golden / "weights").is_dir():
        from safetensors.torch import load_file

        pipe = load_pipeline(golden / "weights")
        if pipe.denoiser.text_embeds_cond is None:
            inputs = load_file(str(golden / "inputs.safetensors"))
            pipe.denoiser.text_embeds_uncond = inputs["text_embeds_uncond"]
            pipe.denoiser.text_embeds_cond = inputs["text_embeds_cond"]
        return Path(pipe.save_pretrained(tmp_path / "golden-tiny"))
    if has_bundled_model():
        return bundled_model_dir("kinemate-tiny")
    pytest.skip("neither the golden tiny weights nor the bundled kinemate-tiny model is available")


def test_eval_dataset_with_a_kinemate_pipeline(tmp_path, demo_inputs):
    weights = _tiny_pipeline_weights(tmp_path)
    from kinemate.pipeline import load_pipeline

    densepose = load_pipeline(weights).control_kind == "densepose"
    data = tmp_path / "data" / "clip0"
    data.mkdir(parents=True)
    if densepose:  # a DensePose render drives a DensePose model
        frames = read_video(demo_inputs / "running.mp4", max_frames=6)[0]
        write_image(data / "reference.png", read_video(demo_inputs / "running.mp4", max_frames=1)[0][0])
    else:
        frames = _clip(0, n=6, size=128)
        write_image(data / "reference.png", frames[0])
    write_video(data / "driving.mp4", frames, 15)
    write_video(data / "ground_truth.mp4", frames, 15)
    out = tmp_path / "out"
    argv = ["dataset", str(tmp_path / "data"), "-o", str(out), "--steps", "1", "--size", "64",
            "--clip-len", "3", "--no-pose", "--random-networks", "--no-plots"]
    assert _run(argv + (["--weights", str(weights)] if weights else [])) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["inputs"]["generator"].startswith("kinemate pipeline")
    assert rep["videos"][0]["frames"] == 6 and rep["videos"][0]["size"] == [64, 64]
    assert 0 < rep["summary"]["psnr"] < 60 and math.isfinite(rep["summary"]["flicker_warp_mae"])
    assert (out / "generated" / "clip0.mp4").is_file()
