"""``kinemate animate --model dreampose``: the release layout (tiny golden weights) end to end
through the CLI with a folder of DensePose UV fields; what is refused and why; resuming a
PNDM run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from kinemate.errors import InputError, UsageError

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(os.environ.get("KINEMATE_DREAMPOSE_GOLDEN_DIR",
                             REPO.parent / "shared" / "reference" / "dreampose" / "golden"))


@pytest.fixture(scope="module")
def weights() -> Path:
    index = GOLDEN / "cases.json"
    if not index.is_file():
        pytest.skip(f"no DreamPose golden set at {GOLDEN}")
    return GOLDEN / json.loads(index.read_text())["weights_dir"]


@pytest.fixture(scope="module")
def inputs(weights, tmp_path_factory):
    """A photo (not 640x512: the fit applies) and a UV folder from the golden inputs."""
    from PIL import Image
    from safetensors.torch import load_file

    from kinemate.pose.uv import write_uv_folder

    folder = tmp_path_factory.mktemp("dp")
    data = load_file(str(GOLDEN / json.loads((GOLDEN / "cases.json").read_text())["inputs_file"]))
    photo = folder / "photo.png"
    Image.fromarray(data["ref_image_native_uint8"].numpy()).save(photo)
    uv = write_uv_folder([f.numpy() for f in data["pose_uv"][:2]], folder / "uv")
    return photo, uv


@pytest.fixture(scope="module")
def pipe(weights):
    from kinemate.pipeline import load_pipeline

    return load_pipeline(weights, model="dreampose")


def test_cli_dreampose_from_uv_fields(weights, inputs, tmp_path, capsys, one_thread):
    from kinemate.cli import main
    from kinemate.io import probe_video

    photo, uv = inputs
    out = tmp_path / "out.mp4"
    rc = main(["animate", "--model", "dreampose", "--weights", str(weights), str(photo),
               str(uv), "-o", str(out), "--steps", "1", "--no-progress", "--no-watermark"])
    assert rc == 0, capsys.readouterr().err
    assert "densepose_uv control, native size 512x640" in capsys.readouterr().out
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height) == (2, 512, 640)


def test_cli_dreampose_refuses_a_rendered_densepose_video(weights, inputs, tmp_path, capsys):
    from kinemate.cli import main
    from kinemate.cli.animate import example_inputs

    photo, _ = inputs
    _, dance = example_inputs()
    for extra in ([], ["--control", "densepose"]):
        rc = main(["animate", "--model", "dreampose", "--weights", str(weights), str(photo),
                   str(dance), "-o", str(tmp_path / "o.mp4"), "--steps", "1", "--no-progress",
                   *extra])
        err = capsys.readouterr().err
        assert rc != 0 and not (tmp_path / "o.mp4").exists()
        assert "UV" in err and ("not DensePose UV fields" in err or "not UV coordinates" in err)


def test_options_dreampose_does_not_use_are_refused(pipe, inputs):
    from kinemate.pipeline import animate_file

    photo, uv = inputs
    for option in ({"guidance": 3.0}, {"context_frames": 4}):
        with pytest.raises(UsageError, match=f"{next(iter(option))}`?: not used by dreampose"):
            animate_file(photo, uv, "never.mp4", pipe=pipe, steps=1, **option)
    with pytest.raises(UsageError, match="640x512"):
        animate_file(photo, uv, "never.mp4", pipe=pipe, steps=1, size=(256, 320))
    assert not Path("never.mp4").exists()


def test_family_options_are_refused_by_other_families():
    from kinemate.pipeline import load_pipeline

    tiny = load_pipeline(model="kinemate-tiny")
    with pytest.raises(UsageError, match="image_guidance`?: not used by kinemate-tiny"):
        tiny.check_unused(tiny.resolve(image_guidance=2.0))
    tiny.check_unused(tiny.resolve(guidance=2.0))


@pytest.mark.parametrize("content, words", [
    (np.zeros((3, 8, 8), np.float32), "(2, H, W)"),
    (np.full((2, 8, 8), 2.0, np.float32), "outside [0, 1]"),
    (np.zeros((2, 8, 8), np.int32), "floats"),
    (np.array([{"a": 1}], dtype=object), "not a readable .npy"),
])
def test_bad_uv_files_are_refused(tmp_path, content, words):
    from kinemate.pose.uv import uv_frames

    (tmp_path / "uv").mkdir()
    np.save(tmp_path / "uv" / "frame_0.npy", content, allow_pickle=True)
    with pytest.raises(InputError) as err:
        list(uv_frames(tmp_path / "uv", (16, 16))[0])
    assert words in str(err.value)


def test_uv_folder_order_and_fit(tmp_path):
    from kinemate.io import Framing
    from kinemate.pose.uv import fit_uv, uv_files, write_uv_folder

    fields = [np.full((2, 4, 8), i / 20, np.float32) for i in range(12)]
    folder = write_uv_folder(fields, tmp_path / "uv")
    order = [int(p.name.split("_")[1]) for p in uv_files(folder)]
    assert order == list(range(12))  # frame_10 after frame_9
    field = np.random.default_rng(0).uniform(0.1, 1, (2, 40, 80)).astype(np.float32)
    crop = fit_uv(field, Framing.compute((80, 40), (40, 40), "crop"))
    assert crop.shape == (40, 40, 2) and crop.min() > 0  # the centre, filled
    assert np.allclose(crop[..., 0], field[0, :, 20:60])
    box = fit_uv(field, Framing.compute((80, 40), (40, 40), "letterbox"))
    assert box.shape == (40, 40, 2)
    assert (box[:10] == 0).all() and (box[30:] == 0).all() and box[10:30].min() > 0


def test_resume_a_pndm_run(pipe, inputs, tmp_path):
    """An interrupted PNDM run resumed from its saved state gives the same latents."""
    from kinemate.io import read_image
    from kinemate.pipeline.resume import SamplerCheckpoint
    from kinemate.pose.uv import uv_frames

    photo, uv = inputs
    frames, _, _ = uv_frames(uv, pipe.default_size)
    controls = list(frames)[:1]
    from kinemate.io import Framing

    ref = read_image(photo)
    ref = Framing.compute((ref.shape[1], ref.shape[0]), pipe.default_size, "crop").apply(ref)
    full = pipe.sample_latents(ref, controls, steps=2, progress=False)

    class Stop(Exception):
        pass

    def crash(i, t, info):
        if i == 1:
            raise Stop

    state = tmp_path / "state.safetensors"
    with pytest.raises(Stop):
        pipe.sample_latents(ref, controls, steps=2, progress=False, callback=crash,
                            checkpoint=SamplerCheckpoint(state, resume=False, every_s=0))
    resumed = pipe.sample_latents(ref, controls, steps=2, progress=False,
                                  checkpoint=SamplerCheckpoint(state, resume=True, every_s=0))
    assert np.array_equal(full.numpy(), resumed.numpy())


def test_ddim_or_pndm_on_the_model_schedule(pipe, inputs):
    """`sampler`: test.py's --sampler DDIM on the same betas; PNDM (default) repeats one
    timestep (steps + 1 UNet calls)."""
    from kinemate.pose.uv import uv_frames

    _, uv = inputs
    controls = list(uv_frames(uv, pipe.default_size)[0])[:1]
    photo = np.zeros((640, 512, 3), np.uint8)
    seen = {}
    for sampler in ("model", "ddim"):
        ts = []
        pipe.sample_latents(photo, controls, steps=3, sampler=sampler, progress=False,
                            callback=lambda i, t, info: ts.append(int(t)))
        seen[sampler] = ts
    assert len(seen["model"]) == 4 and len(seen["ddim"]) == 3
    assert seen["ddim"] == sorted(set(seen["model"]), reverse=True)
