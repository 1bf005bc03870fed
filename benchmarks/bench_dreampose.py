"""DreamPose: one frame at 640x512, one PNDM step, full-size random weights, CPU float32 —
kinemate against the official pipeline, side by side; and subject fine-tuning throughput on
the tiny golden release.

    python benchmarks/bench_dreampose.py --official /tmp/dp-official \
        --official-site /tmp/dp-official-env            # both sides, one process each
    python benchmarks/bench_dreampose.py --sides kinemate   # kinemate alone
    python benchmarks/bench_dreampose.py --finetune         # fine-tune steps/s (tiny model)

The first run writes seeded random full-size weights in the official release layout to
``--weights`` (default /tmp/kinemate-bench-dp, 2.0 GB in float16: SD1.4's UNet with the
14-channel conv_in, the adapter, CLIP ViT-B/32's vision tower, SD's VAE with the old attention
names of diffusers 0.15). Both sides load those files, get the same photo and UV field and
seed, and run the whole per-frame call: CLIP, the VAE encodings, the UNet on the three
guidance rows (PNDM with 1 step = 1 UNet call), the VAE decoding. Each side runs in its own
process; reported: wall time of the call (best of ``--repeat``), RSS after loading, process
peak RSS, and max |difference| of the decoded frames.

The official side is johannakarras/DreamPose (a checkout at ``--official``, e.g. made with
``git archive``: only ``pipelines/`` and ``models/`` are imported; nothing of it is in
kinemate) on diffusers 0.15.1 / transformers 4.28.1 / tokenizers 0.13.3 /
huggingface_hub 0.25.2 installed with ``pip install --target DIR --no-deps`` (``--official-site``)
ahead of this environment's packages, torchvision stubbed and ``.cuda()`` made a no-op, as
in ``../shared/reference/dreampose/checks/dreampose_tiny_official.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = 1234
S1, S2 = 8.0, 3.0


def rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# -- the shared files ---------------------------------------------------------------------------
def make_weights(root: Path) -> None:
    """Seeded random full-size networks, saved as the official release lays them out."""
    import torch

    sys.path.insert(0, str(REPO))
    from kinemate.models.dreampose import networks

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    half = lambda sd: {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}  # noqa: E731
    unet = networks.unet(networks.SD14_UNET_CONFIG)
    torch.save(half({f"module.{k}": v for k, v in unet.state_dict().items()}), root / "unet_epoch_499.pth")
    del unet
    adapter = networks.EmbeddingAdapter()
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0, 0.02)
    torch.save(adapter.state_dict(), root / "adapter_499.pth")
    vae = networks.vae(networks.SD14_VAE_CONFIG)
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

    def old_name(k: str) -> str:
        for new, was in old.items():
            if ".attentions." in k and f".{new}." in k:
                return k.replace(f".{new}.", f".{was}.")
        return k

    torch.save(half({old_name(k): v for k, v in vae.state_dict().items()}), root / "vae_1499.pth")
    clip = networks.clip_vision(networks.CLIP_B32_VISION_CONFIG)
    (root / "clip-vit-base-patch32").mkdir(exist_ok=True)
    torch.save(half({f"vision_model.{k}": v for k, v in clip.state_dict().items()}),
               root / "clip-vit-base-patch32" / "pytorch_model.bin")
    (root / "clip-vit-base-patch32" / "config.json").write_text(json.dumps(
        {**networks.CLIP_B32_VISION_CONFIG, "model_type": "clip_vision_model"}))
    (root / "DONE").write_text("ok")


def inputs():
    """The photo (640x512 RGB) and one UV field (640x512, 2 channels in [0, 1])."""
    import numpy as np

    g = np.random.default_rng(0)
    photo = g.integers(0, 256, (640, 512, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:640, 0:512]
    body = ((yy - 320) / 280) ** 2 + ((xx - 256) / 120) ** 2 < 1
    uv = np.where(body, g.uniform(0, 1, (2, 640, 512)), 0).astype(np.float32)
    return photo, uv


# -- one side -------------------------------------------------------------------------------------
def run_kinemate(weights: Path, repeat: int) -> dict:
    import torch

    sys.path.insert(0, str(REPO))
    from kinemate.pipeline import load_pipeline

    t = time.perf_counter()
    pipe = load_pipeline(weights, model="dreampose")
    load_s, loaded = time.perf_counter() - t, rss_gib()
    photo, uv = inputs()
    controls = [uv.transpose(1, 2, 0)]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        latents = pipe.sample_latents(photo, controls, steps=1, seed=SEED, image_guidance=S1,
                                      pose_guidance=S2, progress=False)
        frame = pipe.decode_frame(latents, 0)[0].permute(1, 2, 0).float().numpy()
        times.append(time.perf_counter() - t)
    return {"side": "kinemate", "load_s": load_s, "call_s": min(times), "times": times,
            "rss_after_load_gib": loaded, "peak_rss_gib": peak_gib(), "frame": frame,
            "threads": torch.get_num_threads()}


def run_official(weights: Path, repeat: int, checkout: Path, site: Path) -> dict:
    sys.path[:0] = [str(site), str(checkout)]
    import types

    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.utils = types.ModuleType("torchvision.utils")
    tv.utils.make_grid = None
    tv.transforms.ToTensor = tv.transforms.ToPILImage = None
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms,
                        "torchvision.utils": tv.utils})
    import numpy as np
    import PIL.Image
    import torch

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    import diffusers
    import transformers
    from transformers import (CLIPImageProcessor, CLIPProcessor, CLIPTokenizer, CLIPVisionConfig,
                              CLIPVisionModel)

    assert diffusers.__version__ == "0.15.1" and transformers.__version__ == "4.28.1"
    t = time.perf_counter()
    cfg = json.loads((weights / "clip-vit-base-patch32" / "config.json").read_text())
    clip = CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in cfg.items() if k != "model_type"})).eval()
    state = torch.load(weights / "clip-vit-base-patch32" / "pytorch_model.bin")
    clip.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    import tempfile

    d = tempfile.mkdtemp()
    with open(d + "/vocab.json", "w") as f:
        json.dump({"<|startoftext|>": 0, "<|endoftext|>": 2, "!": 1}, f)
    with open(d + "/merges.txt", "w") as f:
        f.write("#version: 0.2\n")
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(),
                         tokenizer=CLIPTokenizer(d + "/vocab.json", d + "/merges.txt"))
    CLIPProcessor.from_pretrained = classmethod(lambda cls, *a, **k: proc)
    CLIPVisionModel.from_pretrained = classmethod(lambda cls, *a, **k: clip)
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from models.unet_dual_encoder import Embedding_Adapter
    from pipelines.dual_encoder_pipeline import StableDiffusionImg2ImgPipeline

    from_sd = json.loads(json.dumps(__import__("kinemate.models.dreampose.networks",
                                               fromlist=["x"]).SD14_UNET_CONFIG))
    unet = UNet2DConditionModel(**from_sd)
    sd = torch.load(weights / "unet_epoch_499.pth")
    unet.load_state_dict({k.replace("module.", ""): v for k, v in sd.items()})  # as test.py
    del sd
    vae_cfg = __import__("kinemate.models.dreampose.networks", fromlist=["x"]).SD14_VAE_CONFIG
    vae = AutoencoderKL(**vae_cfg)
    vae.load_state_dict(torch.load(weights / "vae_1499.pth"))  # as test.py --custom_vae
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, image_encoder=clip, clip_processor=proc,
                                          unet=unet, scheduler=sched, safety_checker=None,
                                          feature_extractor=None)
    pipe.adapter = Embedding_Adapter()
    pipe.adapter.load_state_dict(torch.load(weights / "adapter_499.pth"))
    pipe.set_progress_bar_config(disable=True)
    load_s, loaded = time.perf_counter() - t, rss_gib()
    photo, uv = inputs()
    image = PIL.Image.fromarray(photo)
    pose = (torch.from_numpy(uv)[None] - 0.5) / 0.5
    pose = torch.cat([pose] * 5, 1)
    times = []
    for _ in range(repeat):
        pipe.fixed_noise = None
        torch.manual_seed(SEED)
        t = time.perf_counter()
        out = pipe(prompt="", image=image, pose=pose, strength=1.0, num_inference_steps=1,
                   guidance_scale=7.5, s1=S1, s2=S2, output_type="np")
        times.append(time.perf_counter() - t)
    return {"side": "official", "load_s": load_s, "call_s": min(times), "times": times,
            "rss_after_load_gib": loaded, "peak_rss_gib": peak_gib(),
            "frame": np.asarray(out.images[0], dtype=np.float32),
            "threads": torch.get_num_threads()}


def finetune_speed(steps: int) -> dict:
    import tempfile

    import numpy as np
    import torch
    from PIL import Image

    sys.path.insert(0, str(REPO))
    from kinemate.synth import generate_clip
    from kinemate.train.dreampose import FinetuneConfig, finetune

    golden = Path(os.environ.get("KINEMATE_DREAMPOSE_GOLDEN_DIR",
                                 REPO.parent / "shared" / "reference" / "dreampose" / "golden"))
    weights = golden / json.loads((golden / "cases.json").read_text())["weights_dir"]
    clip = generate_clip(5, 1, (320, 400))
    with tempfile.TemporaryDirectory() as d:
        Image.fromarray(clip.frames[0]).save(Path(d) / "me.png")
        np.save(Path(d) / "me_densepose.npy", clip.uv[0])
        cfg = FinetuneConfig(unet_epochs=steps, vae_epochs=max(2, steps // 4), vae_batch=1,
                             vae_accumulation=1, checkpoint_every=10**6)
        t = time.perf_counter()
        record = finetune(weights, [Path(d) / "me.png"], Path(d) / "out", config=cfg,
                          progress=False)
        total = time.perf_counter() - t
    return {"unet_steps": steps, "unet_steps_per_s": record["unet_steps_per_s"],
            "vae_steps": cfg.vae_epochs, "vae_steps_per_s": record["vae_steps_per_s"],
            "total_s": total, "threads": torch.get_num_threads()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=Path("/tmp/kinemate-bench-dp"))
    ap.add_argument("--sides", nargs="+", default=["official", "kinemate"],
                    choices=["official", "kinemate"])
    ap.add_argument("--official", type=Path, help="a DreamPose checkout (5bf30b7)")
    ap.add_argument("--official-site", type=Path, help="the old diffusers/transformers (pip --target)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--finetune", action="store_true", help="fine-tune steps/s on the tiny model")
    ap.add_argument("--finetune-steps", type=int, default=20)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--run-side", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.run_side:  # one side, in its own process
        import numpy as np

        if args.run_side == "kinemate":
            result = run_kinemate(args.weights, args.repeat)
        else:
            result = run_official(args.weights, args.repeat, args.official, args.official_site)
        np.save(args.out.with_suffix(".npy"), result.pop("frame"))
        args.out.write_text(json.dumps(result))
        return 0
    if args.finetune:
        result = finetune_speed(args.finetune_steps)
        print(json.dumps(result, indent=1))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return 0
    if not (args.weights / "DONE").is_file():
        print(f"writing random full-size weights to {args.weights} ...", flush=True)
        make_weights(args.weights)
    import numpy as np

    results = {}
    for side in args.sides:
        out = Path(f"/tmp/bench-dp-{side}.json")
        cmd = [sys.executable, __file__, "--run-side", side, "--out", str(out), "--weights",
               str(args.weights), "--repeat", str(args.repeat), "--threads", str(args.threads)]
        if side == "official":
            if not (args.official and args.official_site):
                raise SystemExit("--official and --official-site are needed for the official side")
            cmd += ["--official", str(args.official), "--official-site", str(args.official_site)]
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        subprocess.run(cmd, check=True, env=env)
        results[side] = json.loads(out.read_text())
        results[side]["frame"] = np.load(out.with_suffix(".npy"))
        r = results[side]
        print(f"{side:9} call {r['call_s']:.2f} s (runs {', '.join(f'{x:.2f}' for x in r['times'])}), "
              f"load {r['load_s']:.1f} s, RSS after load {r['rss_after_load_gib']:.2f} GiB, "
              f"peak {r['peak_rss_gib']:.2f} GiB", flush=True)
    if len(results) == 2:
        a, b = results["kinemate"]["frame"], results["official"]["frame"]
        ratio = results["kinemate"]["call_s"] / results["official"]["call_s"]
        print(f"kinemate / official time: {ratio:.3f}; max |frame difference| "
              f"{float(np.abs(a - b).max()):.3g} (values in [0, 1])")
    if args.json:
        args.json.write_text(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "frame"}
                                         for k, v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
