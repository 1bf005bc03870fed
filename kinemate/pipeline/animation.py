"""The sampling pipeline: reference image + control frames -> video frames.

``AnimationPipeline.__call__`` reads as the official loop (SPEC §7), per denoising step:

1. appearance encoder on the clean reference latent at ``t`` -> a :class:`ReferenceBank`;
2. for each context window: ControlNet residuals of its frames (each frame once per step,
   cached only while a later window still needs it), the video UNet on ``[uncond; cond]``
   with reference attention read from the bank, prediction accumulated;
3. average overlapping predictions, classifier-free guidance, one scheduler step.

Then the VAE decodes one frame at a time and frames stream out.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from kinemate.errors import InputError, NumericsError, UsageError, WeightsError
from kinemate.models.reference import ReferenceBank
from kinemate.pipeline.context import accumulate, context_windows, fuse, guide, last_use

log = logging.getLogger(__name__)

# The effective official scheduler (configs/magicanimate_ddim_scheduler_effective.json).
MAGICANIMATE_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "trained_betas": None,
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
}


def make_scheduler(config: dict | None = None):
    """A diffusers scheduler from a config dict whose ``_class_name`` names the class."""
    import diffusers

    config = dict(config or MAGICANIMATE_SCHEDULER)
    cls = getattr(diffusers, config.get("_class_name", "DDIMScheduler"), None)
    if cls is None:
        raise UsageError(f"unknown scheduler {config.get('_class_name')!r}; use a diffusers "
                         "scheduler class name such as DDIMScheduler")
    return cls.from_config(config)


@dataclass
class SamplingOptions:
    """Defaults of one sampling call (the official values)."""

    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    context_frames: int = 16
    context_overlap: int = 4
    closed_loop: bool = True
    context_stride: int = 1
    eta: float = 0.0
    reference_bank_dtype: str | None = "float16"  # official fp16 rounding; None keeps it
    lean: bool = True
    noise_tiling: int | None = None  # 16 = the official shared initial noise per 16 frames
    window_batch: int = 1  # windows per UNet call (GPU throughput)
    # 1.0: start from pure noise (official). < 1: start from the reference latent noised to
    # that share of the schedule and run only that share of the steps (SDEdit-style)
    init_strength: float = 1.0
    # 16 = the official scripts: the driving video is padded to a multiple of 16 frames by
    # repeating its last frame, and the result is cut back (changes the windows, so the result)
    pad_to: int | None = None


class _EdgePadded(Sequence):
    """``frames`` lengthened to ``length`` by repeating the last frame (lazy)."""

    def __init__(self, frames: Sequence[np.ndarray], length: int):
        self.frames, self.length = frames, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> np.ndarray:
        if not -self.length <= index < self.length:
            raise IndexError(index)
        return self.frames[min(index % self.length, len(self.frames) - 1)]


def _overflow_message(dtype: torch.dtype, step: int) -> str:
    name = str(dtype).split(".")[-1]
    where = f"the sampler produced non-finite values (inf/NaN) at step {step} in {name}"
    if dtype == torch.float16:
        return (f"{where}: the model's activations overflow float16; run again with --dtype "
                "bfloat16 or --dtype float32")
    if dtype == torch.bfloat16:
        return f"{where}; run again with --dtype float32"
    return (f"{where}: the weights hold inf/NaN or do not fit this architecture; check the "
            "model folder ('kinemate weights verify magicanimate --dir DIR' for the release)")


def _window_groups(windows: list[list[int]], size: int) -> list[list[int]]:
    """Indices of consecutive windows of equal length, at most ``size`` per group."""
    groups: list[list[int]] = []
    for i, window in enumerate(windows):
        if groups and len(groups[-1]) < size and len(windows[groups[-1][0]]) == len(window):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class _ControlResiduals:
    """ControlNet residuals of one denoising step, computed per window for the frames not yet
    cached and dropped after the last window that uses them (memory bounded in video length;
    each frame still goes through the ControlNet exactly once per step)."""

    def __init__(self, pipe: "AnimationPipeline", model_input: torch.Tensor, t, controls,
                 text: torch.Tensor, windows: list[list[int]]):
        self.pipe, self.model_input, self.t, self.controls, self.text = pipe, model_input, t, controls, text
        self.last = last_use(windows)
        self.store: dict[int, list[torch.Tensor]] = {}

    def for_window(self, index: int, window: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        missing = list(dict.fromkeys(f for f in window if f not in self.store))
        if missing:
            down, mid = self.pipe.controlnet_residuals(
                self.model_input[:, :, missing], self.t, self.pipe.control_tensor(self.controls, missing),
                self.text)
            for j, frame in enumerate(missing):
                self.store[frame] = [r[j] for r in down] + [mid[j]]
        stacked = [torch.stack([self.store[f][k] for f in window], dim=1)[None]
                   for k in range(len(self.store[window[0]]))]  # (1, C, f, h, w)
        for frame in window:
            if self.last[frame] == index:
                del self.store[frame]
        return stacked[:-1], stacked[-1]


class AnimationPipeline:
    """MagicAnimate-architecture animation: reference photo + control frames -> frames.

    Components: ``unet`` (:class:`~kinemate.models.VideoUNet`), ``appearance_encoder``,
    ``controlnet`` (diffusers ``ControlNetModel``), ``vae`` (``AutoencoderKL``), a diffusers
    ``scheduler`` (copied for each call, so calls share no state) and the fixed text
    embeddings ``(1, 77, D)`` of the empty prompt (``text_embeds_uncond``/``_cond``).
    """

    def __init__(self, unet, appearance_encoder, controlnet, vae, scheduler=None, *,
                 text_embeds_uncond: torch.Tensor | None = None,
                 text_embeds_cond: torch.Tensor | None = None,
                 name: str = "magicanimate", control_kind: str = "densepose",
                 default_size: tuple[int, int] = (512, 512), vae_scaling_factor: float = 0.18215,
                 options: SamplingOptions | None = None, controlnet_conditioning_scale: float = 1.0):
        self.controlnet_conditioning_scale = controlnet_conditioning_scale
        self.unet, self.appearance_encoder, self.controlnet, self.vae = (
            unet, appearance_encoder, controlnet, vae)
        self.scheduler = scheduler if scheduler is not None else make_scheduler()
        self.text_embeds_uncond = text_embeds_uncond
        self.text_embeds_cond = text_embeds_cond
        self.name = name
        self.control_kind = control_kind
        self.default_size = tuple(default_size)
        self.vae_scaling_factor = vae_scaling_factor
        self.options = options or SamplingOptions()

    # -- placement ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def to(self, device=None, dtype=None) -> "AnimationPipeline":
        for m in (self.unet, self.appearance_encoder, self.controlnet, self.vae):
            m.to(device=device, dtype=dtype)
        return self

    @property
    def max_context_frames(self) -> int | None:
        """Longest window the temporal positional tables allow (24 for MagicAnimate)."""
        if not self.unet.config.use_motion_module:
            return None
        kwargs = self.unet.config.motion_module_kwargs or {}
        return int(kwargs.get("temporal_position_encoding_max_len", 24))

    def _text(self, uncond, cond) -> tuple[torch.Tensor, torch.Tensor]:
        """The (uncond, cond) text embeddings ``(1, 77, D)``; uncond defaults to cond when
        only cond is known (both are the empty prompt for MagicAnimate)."""
        cond = cond if cond is not None else self.text_embeds_cond
        uncond = uncond if uncond is not None else self.text_embeds_uncond
        if cond is None:
            raise WeightsError("this model has neither a CLIP text encoder nor stored text "
                               "embeddings; put SD1.5's text_encoder/ and tokenizer/ into "
                               "stable-diffusion-v1-5/ (or a text_embeddings.safetensors with "
                               "'uncond'/'cond' into the weights folder), or pass "
                               "text_embeds_cond= in Python")
        uncond = cond if uncond is None else uncond
        return (uncond.to(self.device, self.dtype), cond.to(self.device, self.dtype))

    # -- building blocks (each usable alone) ------------------------------------------
    @torch.no_grad()
    def encode_reference(self, image: np.ndarray) -> torch.Tensor:
        """uint8 ``(H, W, 3)`` RGB -> posterior mean latent x scaling ``(1, 4, H/8, W/8)``."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"reference must be a uint8 RGB image (H, W, 3), got {image.dtype} "
                             f"{image.shape}; convert it to RGB first")
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device, self.dtype) / 127.5 - 1
        x = rearrange(x, "h w c -> 1 c h w")
        return self.vae.encode(x).latent_dist.mean * self.vae_scaling_factor

    def control_tensor(self, controls: Sequence[np.ndarray], frames: list[int]) -> torch.Tensor:
        """Control frames ``controls[i]`` (uint8 HWC RGB) -> ``(n, 3, H, W)`` in [0, 1]."""
        batch = np.stack([np.asarray(controls[i]) for i in frames])
        x = torch.from_numpy(batch).to(self.device, self.dtype) / 255.0
        return rearrange(x, "n h w c -> n c h w")

    @torch.no_grad()
    def write_reference(self, ref_latents: torch.Tensor, t, bank: ReferenceBank,
                        uncond: torch.Tensor, cond: torch.Tensor, cfg: bool) -> ReferenceBank:
        """Appearance encoder on the clean reference latent at ``t``. Official path with CFG:
        batch 2 with ``[uncond; cond]`` text; lean path or no CFG: batch 1, cond text."""
        if cfg and not bank.lean:
            latents, text = ref_latents.repeat(2, 1, 1, 1), torch.cat([uncond, cond])
        else:
            latents, text = ref_latents, cond
        return self.appearance_encoder.write(latents, t, text, bank)

    @torch.no_grad()
    def controlnet_residuals(self, latents: torch.Tensor, t, control: torch.Tensor,
                             cond: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """ControlNet per frame: ``latents`` (1, 4, n, h, w), ``control`` (n, 3, H, W), cond
        text for every frame -> down residuals [(n, C, h', w')], mid (n, C, h', w')."""
        x = rearrange(latents, "b c f h w -> (b f) c h w")
        down, mid = self.controlnet(x, t, encoder_hidden_states=cond.expand(x.shape[0], -1, -1),
                                    controlnet_cond=control,
                                    conditioning_scale=self.controlnet_conditioning_scale,
                                    return_dict=False)
        return list(down), mid

    @torch.no_grad()
    def unet_window(self, latents: torch.Tensor, t, down: list[torch.Tensor], mid: torch.Tensor,
                    bank: ReferenceBank, uncond: torch.Tensor, cond: torch.Tensor,
                    cfg: bool, ref_latents: torch.Tensor | None = None) -> torch.Tensor:
        """Video UNet on ``k`` windows ``(k, 4, f, h, w)`` (usually k = 1) -> ``(2k or k, 4, f,
        h, w)``: rows ``[uncond x k, cond x k]`` with CFG. ControlNet residuals ``(k, C, f,
        h', w')`` are the same for both halves. ``ref_latents`` (1, C, h, w) reach UNets with
        ``reference_concat``/``reference_residual`` (zeros in the unconditional rows)."""
        k, f = latents.shape[0], latents.shape[2]
        ref = None if ref_latents is None else ref_latents.expand(k, -1, -1, -1)
        if cfg and ref is not None:
            ref = torch.cat([torch.zeros_like(ref), ref])
        if cfg:
            latents = latents.repeat(2, 1, 1, 1, 1)
            down = [r.repeat(2, 1, 1, 1, 1) for r in down]
            mid = mid.repeat(2, 1, 1, 1, 1)
            text = torch.cat([uncond.expand(k, -1, -1), cond.expand(k, -1, -1)])
        else:
            text = cond.expand(k, -1, -1)
        bank.start_read(num_frames=f, uncond_batches=k if cfg else 0)
        return self.unet(latents, t, text, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid,
                         cross_attention_kwargs={"reference": bank}, reference_latents=ref)

    @torch.no_grad()
    def predict_noise(self, latents: torch.Tensor, t, ref_latents: torch.Tensor,
                      controls: Sequence[np.ndarray], windows: list[list[int]], *,
                      guidance_scale: float, bank: ReferenceBank, scheduler=None,
                      text_embeds_uncond=None, text_embeds_cond=None, window_batch: int = 1,
                      on_window: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's noise prediction for the whole video latent ``(1, 4, N, h, w)``.

        Returns ``(guided (1,4,N,h,w), raw (B,4,N,h,w))``; ``raw`` is the window-averaged UNet
        output, rows ``[uncond, cond]`` with CFG (``guidance_scale > 1``) or ``[cond]``.
        ``window_batch`` windows of equal length go through the UNet together (GPU
        throughput; needs the lean bank)."""
        if window_batch > 1 and not bank.lean:
            raise UsageError("window_batch > 1 needs the lean reference path (lean=True)")
        uncond, cond = self._text(text_embeds_uncond, text_embeds_cond)
        cfg = guidance_scale > 1.0
        model_input = scheduler.scale_model_input(latents, t) if scheduler is not None else latents
        self.write_reference(ref_latents, t, bank, uncond, cond, cfg)
        residuals = _ControlResiduals(self, model_input, t, controls, cond, windows)
        total = torch.zeros((2 if cfg else 1, *latents.shape[1:]), device=latents.device,
                            dtype=latents.dtype)
        counts = torch.zeros(latents.shape[2], device=latents.device, dtype=latents.dtype)
        for group in _window_groups(windows, window_batch):
            parts = [residuals.for_window(i, windows[i]) for i in group]
            down = [torch.cat(r) for r in zip(*(p[0] for p in parts))]
            mid = torch.cat([p[1] for p in parts])
            batch = torch.cat([model_input[:, :, windows[i]] for i in group])
            pred = self.unet_window(batch, t, down, mid, bank, uncond, cond, cfg, ref_latents)
            k = len(group)
            for j, i in enumerate(group):
                rows = pred[[j, k + j]] if cfg else pred[j:j + 1]
                accumulate(total, counts, windows[i], rows)
                if on_window is not None:
                    on_window(i, windows[i])
        raw = fuse(total, counts)
        guided = guide(raw[:1], raw[1:], guidance_scale) if cfg else raw
        return guided, raw

    # -- noise, sampling, decoding ----------------------------------------------------
    @property
    def latent_factor(self) -> int:
        """Pixels per latent along each side: the VAE's downsampling (8 for SD's VAE; a
        3-level VAE or a 4-pixel :class:`~kinemate.models.PatchAutoencoder` gives 4)."""
        from kinemate.models.patch_vae import latent_downsample

        return latent_downsample(self.vae)

    def initial_noise(self, num_frames: int, height: int, width: int, seed: int | None,
                      tiling: int | None = None) -> torch.Tensor:
        """``(1, C, N, H/f, W/f)`` standard normal noise (``f`` = :attr:`latent_factor`, 8 for
        SD) drawn on the CPU from ``seed`` (same numbers on every device). ``tiling=16`` repeats
        one 16-frame draw along the frames (the official "shared initial noise")."""
        g = torch.Generator("cpu")
        g.manual_seed(int(seed) if seed is not None else int(torch.seed() % 2**63))
        channels = self.unet.config.in_channels
        frames = tiling or num_frames
        f = self.latent_factor
        noise = torch.randn((1, channels, frames, height // f, width // f), generator=g,
                            dtype=torch.float32)
        if tiling:
            noise = noise.repeat(1, 1, -(-num_frames // tiling), 1, 1)[:, :, :num_frames]
        return noise

    def _check_inputs(self, reference: np.ndarray, controls: Sequence[np.ndarray]) -> tuple[int, int, int]:
        ref = np.asarray(reference)
        if len(controls) == 0:
            raise InputError("no control frames; the driving video is empty")
        first = np.asarray(controls[0])
        if first.shape != ref.shape:
            raise InputError(f"control frames {first.shape} and reference {ref.shape} must have "
                             "the same size; frame both with the same Framing")
        h, w = ref.shape[:2]
        f = self.latent_factor
        if h % f or w % f:
            raise InputError(f"size {w}x{h} is not a multiple of {f}; choose --size as multiples "
                             "of 8")
        return len(controls), h, w

    @torch.no_grad()
    def sample_latents(self, reference: np.ndarray, controls: Sequence[np.ndarray], *,
                       num_inference_steps: int | None = None, guidance_scale: float | None = None,
                       seed: int | None = 1, context_frames: int | None = None,
                       context_overlap: int | None = None, closed_loop: bool | None = None,
                       latents: torch.Tensor | None = None, eta: float | None = None,
                       lean: bool | None = None, reference_bank_dtype: str | None = "default",
                       noise_tiling: int | None | str = "default", window_batch: int | None = None,
                       init_strength: float | None = None, pad_to: int | None = None,
                       progress: bool = True,
                       text_embeds_uncond=None, text_embeds_cond=None,
                       callback: Callable[[int, torch.Tensor, dict], None] | None = None) -> torch.Tensor:
        """Run the sampler; returns the final latents ``(1, 4, N, H/8, W/8)``.

        ``controls``: any sequence of N uint8 ``(H, W, 3)`` frames (an array or a lazy
        sequence); ``latents`` replaces the initial noise; ``init_strength`` < 1 starts every
        frame from the reference latent noised to that point of the schedule (ignored when
        ``latents`` is given); ``pad_to=16`` samples the controls padded to a multiple of 16
        frames with their last frame and returns only the first N frames, as the official
        scripts do (``latents`` then covers the padded length; None: the model's option, 0:
        off); ``callback(step, t, info)`` gets ``noise_pred`` (guided) and ``latents`` (after
        the step)."""
        o = self.options
        strength = o.init_strength if init_strength is None else float(init_strength)
        if not 0.0 < strength <= 1.0:
            raise UsageError(f"init strength must be in (0, 1]; got {strength}")
        steps = num_inference_steps or o.num_inference_steps
        scale = o.guidance_scale if guidance_scale is None else guidance_scale
        size = context_frames or o.context_frames
        overlap = o.context_overlap if context_overlap is None else context_overlap
        loop = o.closed_loop if closed_loop is None else closed_loop
        eta = o.eta if eta is None else eta
        lean = o.lean if lean is None else lean
        bank_dtype = o.reference_bank_dtype if reference_bank_dtype == "default" else reference_bank_dtype
        tiling = o.noise_tiling if noise_tiling == "default" else noise_tiling
        pad = o.pad_to if pad_to is None else pad_to
        num_frames, height, width = self._check_inputs(reference, controls)
        if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or pad < 0):
            raise UsageError(f"pad_to must be a number of frames (0: no padding); got {pad!r}")
        out_frames = num_frames
        if pad and num_frames % pad:
            num_frames += pad - num_frames % pad
            controls = _EdgePadded(controls, num_frames)
        if latents is not None and latents.shape[2] != num_frames:
            padded = f", the {out_frames} controls padded to a multiple of {pad}" if pad else ""
            raise UsageError(f"latents cover {latents.shape[2]} frames; the sampler needs "
                             f"{num_frames}{padded}")
        max_len = self.max_context_frames
        if max_len and min(size, num_frames) > max_len:
            raise UsageError(f"context_frames {size} exceeds what the motion modules support "
                             f"({max_len} frames); use --context-frames {min(16, max_len)}")
        try:
            windows = context_windows(num_frames, size, overlap, closed_loop=loop,
                                      context_stride=o.context_stride)
        except ValueError as exc:
            raise UsageError(f"{exc}; adjust --context-frames/--context-overlap") from None

        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(steps, device=self.device)
        timesteps = scheduler.timesteps
        ref_latents = self.encode_reference(reference)
        if latents is None:
            latents = self.initial_noise(num_frames, height, width, seed, tiling)
            if strength < 1.0:
                timesteps = timesteps[len(timesteps) - max(1, round(len(timesteps) * strength)):]
                start = ref_latents.float().cpu().unsqueeze(2).expand_as(latents)
                latents = scheduler.add_noise(start, latents, timesteps[:1].cpu())
            else:
                latents = latents * scheduler.init_noise_sigma
        latents = latents.to(self.device, self.dtype)
        bank = ReferenceBank(bank_dtype=getattr(torch, bank_dtype) if bank_dtype else None, lean=lean)
        step_kwargs = {}
        if "eta" in inspect.signature(scheduler.step).parameters:
            step_kwargs["eta"] = eta
        from tqdm.auto import tqdm

        bar = tqdm(total=len(timesteps) * len(windows), disable=not progress,
                   desc=f"{self.name}: {num_frames} frames", unit="window", leave=False)
        try:
            for i, t in enumerate(timesteps):
                noise_pred, _ = self.predict_noise(
                    latents, t, ref_latents, controls, windows, guidance_scale=scale, bank=bank,
                    scheduler=scheduler, text_embeds_uncond=text_embeds_uncond,
                    text_embeds_cond=text_embeds_cond, window_batch=window_batch or o.window_batch,
                    on_window=lambda *_: bar.update(1))
                latents = scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
                if not bool(torch.isfinite(latents).all()):
                    raise NumericsError(_overflow_message(self.dtype, i + 1))
                if callback is not None:
                    callback(i, t, {"noise_pred": noise_pred, "latents": latents,
                                    "ref_latents": ref_latents, "windows": windows})
        finally:
            bar.close()
            bank.clear()
        return latents[:, :, :out_frames]

    @torch.no_grad()
    def decode_frame(self, latents: torch.Tensor, index: int) -> torch.Tensor:
        """Decode frame ``index`` of ``(1, 4, N, h, w)`` -> ``(1, 3, H, W)`` float in [0, 1]."""
        z = latents[:, :, index] / self.vae_scaling_factor
        image = self.vae.decode(z.to(self.device, self.dtype)).sample
        return (image / 2 + 0.5).clamp(0, 1)

    def decode(self, latents: torch.Tensor) -> Iterator[np.ndarray]:
        """Decode one frame at a time; yields uint8 ``(H, W, 3)`` frames."""
        for index in range(latents.shape[2]):
            image = self.decode_frame(latents, index)[0]
            yield (image.permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)

    def stream(self, reference: np.ndarray, controls: Sequence[np.ndarray], **kwargs) -> Iterator[np.ndarray]:
        """Like ``__call__`` but yields the frames one by one as they are decoded."""
        latents = self.sample_latents(reference, controls, **kwargs)
        yield from self.decode(latents)

    def __call__(self, reference: np.ndarray, controls: Sequence[np.ndarray], **kwargs) -> np.ndarray:
        """Animate: uint8 reference ``(H, W, 3)`` + control frames ``(F, H, W, 3)`` (same size,
        multiples of 8) -> uint8 frames ``(F, H, W, 3)``. Keyword options: see
        :meth:`sample_latents` (num_inference_steps, guidance_scale, seed, context_frames,
        context_overlap, closed_loop, progress, ...)."""
        return np.stack(list(self.stream(reference, controls, **kwargs)))

    # -- saving ------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the kinemate format: ``kinemate.json`` + per component ``config.json`` and
        ``model.safetensors`` + ``text_embeddings.safetensors``."""
        from kinemate.pipeline.loading import save_pipeline

        return save_pipeline(self, folder)
