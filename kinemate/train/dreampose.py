"""DreamPose subject fine-tuning (SPEC §3.2, §3.3): the official two-phase recipe on the
subject's photo(s), on ``accelerate``, resumable, with progress and loss curves.

Phase 1, UNet + adapter (``finetune-unet.py``; README: ``--learning_rate 1e-5
--num_train_epochs 500 --train_batch_size 1 --dropout_rate 0``): one photo per step, AdamW
(0.9, 0.999, weight decay 1e-2, eps 1e-8), constant learning rate, gradient norm of the UNet
clipped to 1, epsilon-MSE with SD1.4's DDPM noise schedule and timesteps uniform in
[0, 1000). Inputs as the official training code makes them (the quirks that the released
weights expect, SPEC §5):

* images in [0, 1] (not [-1, 1]) for the target latent and the VAE embedding (Q1, Q2);
* the CLIP input divided by 255 twice, i.e. almost black (Q3, transformers 4.28);
* the photo's UV field in [0, 1], five copies (Q9), nearest-neighbour to latent size (Q5);
* 70 % of the steps a random crop of the pose (top, left in [0, 25), height in
  [615, 640 - top), width keeping the aspect), resized back; the target stays the uncropped
  photo (Q10: ``frame_j = example["frame_i"]``).

``fixes=True`` (CLI ``--fixes``) instead feeds CLIP the photo itself and crops the target with
the pose (Q3, Q10 fixed); the released weights were not trained that way.

Phase 2, the VAE decoder (``finetune-vae.py``; ``--learning_rate 5e-5 --num_train_epochs 1500
--train_batch_size 4 --gradient_accumulation_steps 4``): only parameters named ``decoder``,
loss ``MSE(decode(encode(x).sample()).clamp(-1, 1), x.clamp(-1, 1))`` with x in [0, 1], a random
crop of at most 10 % resized back to 640x512.

Differences, all documented in docs/dreampose.md: the photo and its UV field get kinemate's
aspect-preserving crop onto 640x512 (the official code squashes the photo); crops are resampled
in float (the official code goes through 8-bit PIL images); every random draw comes from one
seeded generator whose state is saved with the checkpoints, so a resumed run continues the
same sequence.

The result is written in the release layout (``unet_epoch_<N>.pth``, ``adapter_<N>.pth``,
``vae_<M>.pth``, the CLIP and ``checkpoint-*`` folders copied), which ``kinemate animate
--model dreampose --weights OUT`` loads, plus ``finetune.json``, the two ``log.csv`` files and
``loss.png``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kinemate.errors import InputError, UsageError

log = logging.getLogger(__name__)

SIZE_WH = (512, 640)
STATE_VERSION = 1


@dataclass
class FinetuneConfig:
    """The official recipe's numbers (see the module docstring)."""

    unet_epochs: int = 500
    unet_lr: float = 1e-5
    vae_epochs: int = 1500
    vae_lr: float = 5e-5
    vae_batch: int = 4
    vae_accumulation: int = 4
    max_grad_norm: float = 1.0
    augment_p: float = 0.7
    dropout: float = 0.0  # classifier-free dropout of image / pose (phase 1 README: 0)
    fixes: bool = False
    seed: int = 0
    checkpoint_every: int = 50  # optimiser steps
    mixed_precision: str = "no"

    def check(self) -> "FinetuneConfig":
        for name in ("unet_epochs", "vae_epochs"):
            if getattr(self, name) < 0:
                raise UsageError(f"`{name}` must be >= 0")
        for name in ("vae_batch", "vae_accumulation", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"`{name}` must be >= 1")
        return self


# -- data ----------------------------------------------------------------------------------
def uv_path_for(photo: Path) -> Path:
    """The UV field beside a photo: ``NAME_densepose.npy`` (the official name) or ``NAME.npy``."""
    for candidate in (photo.with_name(photo.stem + "_densepose.npy"), photo.with_suffix(".npy")):
        if candidate.is_file():
            return candidate
    raise InputError(f"no DensePose UV field for {photo.name}: put {photo.stem}_densepose.npy "
                     "(a (2, H, W) float array of U, V in [0, 1], as DreamPose's "
                     "utils/densepose.py writes it) next to the photo (docs/dreampose.md)")


def load_subject(photos) -> tuple[torch.Tensor, torch.Tensor]:
    """Photos and their UV fields framed onto 640x512: images ``(N, 3, 640, 512)`` in [0, 1]
    and uint8 copies, poses ``(N, 2, 640, 512)`` in [0, 1]."""
    from kinemate.io import Framing, read_image
    from kinemate.pose.uv import fit_uv, read_uv

    images, poses = [], []
    for photo in photos:
        photo = Path(photo)
        image = read_image(photo)
        field = read_uv(uv_path_for(photo))
        if tuple(field.shape[1:]) != image.shape[:2]:
            raise InputError(f"the UV field of {photo.name} is {field.shape[2]}x{field.shape[1]}, "
                             f"the photo {image.shape[1]}x{image.shape[0]}; they must match")
        framing = Framing.compute((image.shape[1], image.shape[0]), SIZE_WH, "crop")
        images.append(torch.from_numpy(framing.apply(image)).permute(2, 0, 1).float() / 255)
        poses.append(torch.from_numpy(fit_uv(field, framing)).permute(2, 0, 1))
    if not images:
        raise UsageError("give at least one photo of the subject")
    return torch.stack(images), torch.stack(poses)


def random_crop(x: torch.Tensor, g: torch.Generator, top: int, left: int, height: int,
                width: int) -> torch.Tensor:
    """``x`` ``(C, H, W)`` cropped and resized back bilinearly to its size."""
    h, w = x.shape[-2:]
    crop = x[:, top:top + height, left:left + width]
    return F.interpolate(crop[None], (h, w), mode="bilinear", align_corners=False)[0]


def _epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The photos' order in one epoch (its own seeded draw: a resumed run sees the same)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


def _vae_batch(cfg: "FinetuneConfig", n: int, index: int) -> list[int]:
    """The photos of loader batch ``index`` of the VAE phase (shuffled epochs of ``n``,
    batches of ``vae_batch``, the last one of an epoch shorter, as a DataLoader)."""
    per_epoch = math.ceil(n / cfg.vae_batch)
    epoch, b = divmod(index, per_epoch)
    return _epoch_order(cfg.seed + 1, epoch, n)[b * cfg.vae_batch:(b + 1) * cfg.vae_batch]


def _randint(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high, (1,), generator=g))


def unet_example(image: torch.Tensor, pose: torch.Tensor, g: torch.Generator,
                 cfg: FinetuneConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(conditioning image, target image, 5-pose input ``(10, H, W)``) of one step."""
    h, w = image.shape[-2:]
    target = image
    if float(torch.rand((), generator=g)) < cfg.augment_p:
        top, left = _randint(g, 0, 25), _randint(g, 0, 25)
        ch = _randint(g, h - 25, h - top)
        cw = int(ch / h * w)
        pose = random_crop(pose, g, top, left, ch, cw)
        if cfg.fixes:
            target = random_crop(image, g, top, left, ch, cw)
    cond = image
    if cfg.dropout:
        p = float(torch.rand((), generator=g))
        if p <= cfg.dropout / 3:
            pose = torch.zeros_like(pose)
        elif p <= 2 * cfg.dropout / 3:
            cond = torch.zeros_like(cond)
        elif p <= cfg.dropout:
            pose, cond = torch.zeros_like(pose), torch.zeros_like(cond)
    return cond, target, pose.repeat(5, 1, 1)


# -- the run ---------------------------------------------------------------------------------
class _State:
    """The resumable state beside the output: ``state.json``, networks (safetensors), the
    optimiser (``torch.save`` of tensors and numbers, read back with ``weights_only``), the
    generator."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def read(self) -> dict | None:
        path = self.folder / "state.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, info: dict, modules: dict, optimizer, g: torch.Generator) -> None:
        from safetensors.torch import save_file

        from kinemate.io.atomic import atomic_path, write_json_atomic

        self.folder.mkdir(parents=True, exist_ok=True)
        for name, module in modules.items():
            with atomic_path(self.folder / f"{name}.safetensors") as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                          str(tmp))
        with atomic_path(self.folder / "optimizer.pt") as tmp:
            torch.save(optimizer.state_dict(), tmp)
        with atomic_path(self.folder / "generator.safetensors") as tmp:
            save_file({"state": g.get_state()}, str(tmp))
        write_json_atomic(self.folder / "state.json", info)  # last: marks the state complete

    def restore(self, modules: dict, optimizer, g: torch.Generator) -> None:
        from safetensors.torch import load_file

        for name, module in modules.items():
            module.load_state_dict(load_file(str(self.folder / f"{name}.safetensors")))
        optimizer.load_state_dict(torch.load(self.folder / "optimizer.pt", weights_only=True))
        g.set_state(load_file(str(self.folder / "generator.safetensors"))["state"])


def _fingerprint(weights: Path, photos, cfg: FinetuneConfig) -> str:
    import hashlib

    h = hashlib.sha256(json.dumps({**asdict(cfg), "checkpoint_every": 0}, sort_keys=True).encode())
    h.update(str(Path(weights).resolve()).encode())
    for p in photos:
        h.update(Path(p).read_bytes())
        h.update(uv_path_for(Path(p)).read_bytes())
    return h.hexdigest()


def state_dir(output: Path) -> Path:
    output = Path(output)
    return output.parent / f".{output.name}.kinemate-finetune"


def finetune(weights, photos, output, *, config: FinetuneConfig | None = None,
             device: str = "cpu", resume: bool = False, progress: bool = True,
             max_steps: int | None = None) -> dict:
    """Fine-tune the DreamPose release in ``weights`` on ``photos`` (each with its UV field
    beside it) and write the result to ``output`` (see the module docstring). ``resume``
    continues from the state an interrupted run of the same job left beside ``output``;
    ``max_steps`` stops after that many optimiser steps in this call (the state is kept).
    Returns the run's record (also ``output/finetune.json``), or the state's if stopped."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from tqdm.auto import tqdm

    from kinemate.models.dreampose import DREAMPOSE_SCHEDULER, preprocess
    from kinemate.models.dreampose.checkpoint import load_release
    from kinemate.train.logs import LossLog, plot_losses

    cfg = (config or FinetuneConfig()).check()
    weights, output = Path(weights), Path(output)
    photos = [Path(p) for p in photos]
    if output.exists():
        raise UsageError(f"{output} exists; choose a new output folder")
    images, poses = load_subject(photos)
    accelerator = Accelerator(cpu=str(device) == "cpu", mixed_precision=cfg.mixed_precision)
    parts = load_release(weights, default_scheduler=DREAMPOSE_SCHEDULER, device=accelerator.device)
    unet, adapter, clip, vae = parts.unet, parts.adapter, parts.image_encoder, parts.vae
    noise_scheduler = DDPMScheduler.from_config({**parts.scheduler, "_class_name": "DDPMScheduler"})
    g = torch.Generator("cpu").manual_seed(cfg.seed)
    state = _State(state_dir(output))
    fingerprint = _fingerprint(weights, photos, cfg)
    saved = state.read() if resume else None
    if saved is not None and saved.get("fingerprint") != fingerprint:
        raise UsageError(f"the saved state in {state.folder} belongs to another fine-tune (other "
                         "weights, photos or settings); run that job, or without `resume`")
    if saved is None and state.folder.exists():
        shutil.rmtree(state.folder)
    n = len(photos)
    plan = {"unet": cfg.unet_epochs * n,
            "vae": cfg.vae_epochs * math.ceil(n / cfg.vae_batch)}  # loader batches
    totals = {"unet": plan["unet"], "vae": math.ceil(plan["vae"] / cfg.vae_accumulation)}
    record = {"weights": str(weights), "photos": [str(p) for p in photos], "config": asdict(cfg),
              "device": str(accelerator.device), "optimizer_steps": totals, "fingerprint": fingerprint}
    phase = saved["phase"] if saved else "unet"
    step = saved["step"] if saved else 0
    done_here = 0
    device_ = accelerator.device

    def encode_sample(x: torch.Tensor) -> torch.Tensor:
        dist = vae.encode(x.to(device_)).latent_dist
        eps = torch.randn(dist.mean.shape, generator=g).to(device_)
        return dist.mean + dist.std * eps

    # ---- phase 1: UNet + adapter ----
    if phase == "unet":
        params = list(unet.parameters()) + list(adapter.parameters())
        unet.train().requires_grad_(True)
        adapter.train().requires_grad_(True)
        vae.requires_grad_(False)
        optimizer = torch.optim.AdamW(params, lr=cfg.unet_lr, betas=(0.9, 0.999),
                                      weight_decay=1e-2, eps=1e-8)
        unet, adapter, optimizer = accelerator.prepare(unet, adapter, optimizer)
        modules = {"unet": accelerator.unwrap_model(unet), "adapter": accelerator.unwrap_model(adapter)}
        if saved and step:
            state.restore(modules, optimizer, g)
        losses = LossLog(state.folder / "unet", resume_step=step)
        bar = tqdm(total=totals["unet"], initial=step, desc="dreampose fine-tune: UNet + adapter",
                   disable=not progress, unit="step")
        start = time.perf_counter()
        while step < totals["unet"]:
            if max_steps is not None and done_here >= max_steps:
                break
            k = _epoch_order(cfg.seed, step // n, n)[step % n]
            cond, target, pose = unet_example(images[k], poses[k], g, cfg)
            with torch.no_grad():
                latents = encode_sample(target[None]) * 0.18215
                noise = torch.randn(latents.shape, generator=g).to(device_)
                t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (1,),
                                  generator=g).to(device_)
                noisy = noise_scheduler.add_noise(latents, noise, t)
                x = torch.cat([noisy, F.interpolate(pose[None].to(device_), noisy.shape[-2:])], 1)
                u8 = (cond.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                pixels = preprocess.clip_pixels(u8, rescaled_twice=not cfg.fixes).to(device_)
                clip_hidden = clip(pixel_values=pixels).last_hidden_state
                vae_embed = encode_sample(cond[None]) * 0.18215
            with accelerator.autocast():
                context = adapter(clip_hidden, vae_embed)
                pred = unet(x, t, encoder_hidden_states=context).sample
                loss = F.mse_loss(pred.float(), noise.float())
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(unet.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            done_here += 1
            elapsed = time.perf_counter() - start
            losses.append(step, float(loss.detach()), cfg.unet_lr, elapsed, done_here / max(elapsed, 1e-9))
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if step % cfg.checkpoint_every == 0 or step == totals["unet"] or \
                    (max_steps is not None and done_here >= max_steps):
                state.save({"version": STATE_VERSION, "fingerprint": fingerprint, "phase": "unet",
                            "step": step}, modules, optimizer, g)
        bar.close()
        record["unet_steps_per_s"] = done_here / max(time.perf_counter() - start, 1e-9) if done_here else None
        if step < totals["unet"]:
            return {**record, "stopped": {"phase": "unet", "step": step}}
        unet, adapter = modules["unet"], modules["adapter"]
        unet.eval().requires_grad_(False)
        adapter.eval().requires_grad_(False)
        phase, step = "vae", 0
        state.save({"version": STATE_VERSION, "fingerprint": fingerprint, "phase": "vae",
                    "step": 0}, modules, optimizer, g)
        saved = None
    else:
        from safetensors.torch import load_file

        unet.load_state_dict(load_file(str(state.folder / "unet.safetensors")))
        adapter.load_state_dict(load_file(str(state.folder / "adapter.safetensors")))

    # ---- phase 2: the VAE decoder ----
    trainable = [p for name, p in vae.named_parameters() if "decoder" in name]
    vae.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    vae.train()
    optimizer = torch.optim.AdamW(trainable, lr=cfg.vae_lr, betas=(0.9, 0.999),
                                  weight_decay=1e-2, eps=1e-8)
    vae_p, optimizer = accelerator.prepare(vae, optimizer)
    vae_modules = {"vae": accelerator.unwrap_model(vae_p), "unet": unet, "adapter": adapter}
    if saved and step:
        state.restore(vae_modules, optimizer, g)
    losses = LossLog(state.folder / "vae", resume_step=step)
    bar = tqdm(total=totals["vae"], initial=step, desc="dreampose fine-tune: VAE decoder",
               disable=not progress, unit="step")
    start, done_vae = time.perf_counter(), 0
    h, w = images.shape[-2:]
    while step < totals["vae"]:
        if max_steps is not None and done_here >= max_steps:
            break
        accumulated = 0.0
        for micro in range(cfg.vae_accumulation):
            pick = _vae_batch(cfg, n, step * cfg.vae_accumulation + micro)
            xs = []
            for k in pick:  # a random crop of at most 10 %, resized back
                ch = _randint(g, int(0.9 * h), h + 1)
                cw = _randint(g, int(0.9 * w), w + 1)
                top, left = _randint(g, 0, h - ch + 1), _randint(g, 0, w - cw + 1)
                xs.append(random_crop(images[k], g, top, left, ch, cw))
            x = torch.stack(xs).to(device_)
            with accelerator.autocast():
                z = encode_sample(x)
                out = vae_p.decode(z).sample.clamp(-1, 1)
                loss = F.mse_loss(out.float(), x.clamp(-1, 1).float()) / cfg.vae_accumulation
            accelerator.backward(loss)
            accumulated += float(loss.detach())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        done_here += 1
        done_vae += 1
        elapsed = time.perf_counter() - start
        losses.append(step, accumulated, cfg.vae_lr, elapsed, done_vae / max(elapsed, 1e-9))
        bar.update(1)
        bar.set_postfix(loss=f"{accumulated:.4f}")
        if step % cfg.checkpoint_every == 0 or step == totals["vae"] or \
                (max_steps is not None and done_here >= max_steps):
            state.save({"version": STATE_VERSION, "fingerprint": fingerprint, "phase": "vae",
                        "step": step}, vae_modules, optimizer, g)
    bar.close()
    record["vae_steps_per_s"] = done_vae / max(time.perf_counter() - start, 1e-9) if done_vae else None
    if step < totals["vae"]:
        return {**record, "stopped": {"phase": "vae", "step": step}}
    vae = vae_modules["vae"].eval().requires_grad_(False)
    _write_release(parts.meta, unet, adapter, vae, output, cfg, state, record)
    shutil.rmtree(state.folder, ignore_errors=True)
    return record


def _write_release(meta: dict, unet, adapter, vae, output: Path, cfg: FinetuneConfig,
                   state: _State, record: dict) -> None:
    """The release layout the loader reads, atomically (built under a temporary name)."""
    from kinemate.io.atomic import atomic_folder
    from kinemate.train.logs import plot_losses

    unet_epoch, vae_epoch = max(cfg.unet_epochs - 1, 0), max(cfg.vae_epochs - 1, 0)
    with atomic_folder(output) as tmp:
        torch.save({k: v.detach().cpu() for k, v in unet.state_dict().items()},
                   tmp / f"unet_epoch_{unet_epoch}.pth")
        torch.save({k: v.detach().cpu() for k, v in adapter.state_dict().items()},
                   tmp / f"adapter_{unet_epoch}.pth")
        torch.save({k: v.detach().cpu() for k, v in vae.state_dict().items()},
                   tmp / f"vae_{vae_epoch}.pth")
        shutil.copytree(meta["clip"], tmp / Path(meta["clip"]).name)
        if meta.get("pipeline"):
            shutil.copytree(meta["pipeline"], tmp / f"checkpoint-{unet_epoch}",
                            ignore=shutil.ignore_patterns("*.bin", "*.safetensors", "*.pth"))
        logs = {}
        for phase in ("unet", "vae"):
            src = state.folder / phase / "log.csv"
            if src.is_file():
                (tmp / phase).mkdir()
                shutil.copyfile(src, tmp / phase / "log.csv")
                logs[phase] = tmp / phase / "log.csv"
        plot_losses(logs, tmp / "loss.png")
        (tmp / "finetune.json").write_text(json.dumps(record, indent=2))


__all__ = ["FinetuneConfig", "finetune", "load_subject", "state_dir", "unet_example", "uv_path_for"]
