"""The engine: reference image + control frames -> video frames, for every model family.

``AnimationPipeline.sample_latents`` reads as a numbered story:

1. resolve the options (defaults < the model's ``kinemate.json`` < the call);
2. check the inputs and plan the context windows;
3. encode the reference and prepare the initial latents;
4. let the family fix what the whole video shares (``denoiser.start_video``);
5. continue from a saved state of the same job, if asked (:mod:`kinemate.pipeline.resume`);
6. per denoising step: the family's per-step work (``start_step``), then each group of
   windows through the family's denoiser with its per-frame features cached while windows
   need them, the overlapping predictions averaged, guidance, one scheduler step, and the
   sampler's state saved when a checkpoint is kept.

Then the VAE decodes one frame at a time and frames stream out. What is specific to a family
(its networks, what it encodes once, how it runs a window) is its *denoiser* (see
:mod:`kinemate.models.registry`); everything here is shared.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from kinemate.errors import InputError, NumericsError, UsageError
from kinemate.models.guidance import GuidanceRows
from kinemate.models.frames import take_frames
from kinemate.pipeline.context import (FrameCache, accumulate, context_windows, covers, fuse,
                                       guide, window_groups)
from kinemate.pipeline.options import FAMILY_OPTIONS, OPTION_NAMES, SamplingOptions
from kinemate.pipeline.parallel import (WindowParallel, inputs_digest, saved_from_bytes,
                                        saved_to_bytes)
from kinemate.pipeline.resume import SamplerCheckpoint, job_fingerprint, restore_scheduler

log = logging.getLogger(__name__)
STEP_NOISE_SEED = 0x5EED  # the sampler's own generator (stochastic schedulers) = seed + this


SAMPLERS = {"ddim": "DDIMScheduler", "pndm": "PNDMScheduler"}


def make_scheduler(config: dict, sampler: str = "model"):
    """A diffusers scheduler from a config dict whose ``_class_name`` names the class;
    ``sampler`` "ddim"/"pndm" takes that class on the same noise schedule instead."""
    import diffusers

    config = dict(config)
    if sampler != "model":
        config["_class_name"] = SAMPLERS[sampler]
    cls = getattr(diffusers, config.get("_class_name", "DDIMScheduler"), None)
    if cls is None:
        raise UsageError(f"unknown scheduler {config.get('_class_name')!r}; use a diffusers "
                         "scheduler class name such as DDIMScheduler")
    return cls.from_config(config)


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


def stretch_frame(frame: np.ndarray) -> np.ndarray:
    """DreamPose test.py's per-frame min-max stretch of a uint8 frame: ``f - min``, then
    ``255 * f / max`` cast (truncating) to uint8. A constant frame is returned unchanged."""
    frame = frame - frame.min()
    top = frame.max()
    if top == 0:
        return frame
    return (255 * (frame / top)).astype(np.uint8)


def _overflow_message(dtype: torch.dtype, step: int) -> str:
    name = str(dtype).split(".")[-1]
    where = f"the sampler produced non-finite values (inf/NaN) at step {step} in {name}"
    if dtype == torch.float16:
        return (f"{where}: the model's activations overflow float16; run again with `dtype` "
                "bfloat16 or float32")
    if dtype == torch.bfloat16:
        return f"{where}; run again with `dtype` float32"
    return (f"{where}: the weights hold inf/NaN or do not fit this architecture; check the "
            "model folder ('kinemate weights verify NAME --dir DIR' for a published release)")


def _window_done(bar, window_callback, step: int, window: int) -> None:
    bar.update(1)
    if window_callback is not None:
        window_callback(step, window)


@dataclass
class Plan:
    """What :meth:`AnimationPipeline.plan` decides before any network runs."""

    controls: Sequence[np.ndarray]  # padded to ``num_frames`` when pad_to asks for it
    num_frames: int  # frames sampled
    out_frames: int  # frames returned (the driving video's)
    height: int
    width: int
    windows: list[list[int]]


class AnimationPipeline:
    """Reference photo + control frames -> frames, with one family's ``denoiser``.

    ``denoiser``: the family's step (e.g. :class:`~kinemate.models.magicanimate.denoiser.
    MagicAnimateDenoiser`); its networks are reachable as attributes (``pipe.unet``), as in
    diffusers pipelines. ``vae`` (``AutoencoderKL`` or a patch autoencoder), a diffusers
    ``scheduler`` (copied for each call, so calls share no state), and the model's facts:
    ``name``, ``family``, ``control_kind``, ``default_size`` (W, H), ``options`` (its
    :class:`SamplingOptions`) and ``index`` (its ``kinemate.json``, if it came from one).
    """

    def __init__(self, denoiser, vae, scheduler=None, *, name: str = "magicanimate",
                 family: str | None = None, control_kind: str = "densepose",
                 default_size: tuple[int, int] = (512, 512), vae_scaling_factor: float = 0.18215,
                 options: SamplingOptions | None = None, index: dict | None = None,
                 text_options: SamplingOptions | None = None):
        self.denoiser, self.vae = denoiser, vae
        self.name = name
        self.family = family or name
        if scheduler is None:
            from kinemate.models.registry import get_family

            scheduler = make_scheduler(get_family(self.family).scheduler)
        self.scheduler = scheduler
        self.control_kind = control_kind
        self.default_size = tuple(default_size)
        self.vae_scaling_factor = vae_scaling_factor
        self.options = options or SamplingOptions()
        self.text_options = text_options  # calls without controls (text only), if it differs
        self.index = dict(index or {})

    # -- components and placement ------------------------------------------------------
    @property
    def components(self) -> dict[str, torch.nn.Module]:
        """Every network by name: the denoiser's and ``vae``."""
        return {**self.denoiser.components(), "vae": self.vae}

    def __getattr__(self, name: str):
        if name != "denoiser" and "denoiser" in self.__dict__:
            parts = self.denoiser.components()
            if name in parts:
                return parts[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        denoiser = self.__dict__.get("denoiser")
        if denoiser is not None and name in denoiser.components():
            raise AttributeError(f"{name} belongs to the denoiser: set pipe.denoiser.{name} "
                                 "(on a copy of the denoiser when the pipeline is a copy)")
        super().__setattr__(name, value)

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    def to(self, device=None, dtype=None) -> "AnimationPipeline":
        for m in self.components.values():
            if m is not None:
                m.to(device=device, dtype=dtype)
        return self

    @property
    def max_context_frames(self) -> int | None:
        """Longest window the denoiser's temporal layers allow (None: no limit)."""
        return self.denoiser.max_context_frames

    @property
    def latent_factor(self) -> int:
        """Pixels per latent along each side: the VAE's downsampling (8 for SD's VAE; a
        3-level VAE or a 4-pixel :class:`~kinemate.models.PatchAutoencoder` gives 4)."""
        from kinemate.models.patch_vae import latent_downsample

        return latent_downsample(self.vae)

    # -- building blocks (each usable alone) ------------------------------------------
    def resolve(self, *, text_only: bool = False, **options) -> SamplingOptions:
        """The options of one call: the model's, with those set here (not None) over them.
        ``text_only``: a call without controls, which takes the model's ``text_options``
        when it declares them (Text2Video-Zero's text mode). ``init`` warp with
        ``init_strength`` 1 is refused: it would start from pure noise."""
        base = self.text_options if text_only and self.text_options is not None else self.options
        o = base.merged(options)
        if o.init == "warp" and o.init_strength >= 1.0:
            raise UsageError("`init` warp starts from the warped frames noised to "
                             "`init_strength`, but `init_strength` is 1 (pure noise): set it "
                             "below 1, e.g. 0.7")
        return o

    @property
    def uses_reference(self) -> bool:
        """False for a family whose appearance comes from elsewhere (text): it refuses one."""
        return getattr(self.denoiser, "uses_reference", True)

    @torch.no_grad()
    def encode_reference(self, image: np.ndarray) -> torch.Tensor:
        """uint8 ``(H, W, 3)`` RGB -> posterior mean latent x scaling ``(1, C, H/f, W/f)``."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"reference must be a uint8 RGB image (H, W, 3), got {image.dtype} "
                             f"{image.shape}; convert it to RGB first")
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device, self.dtype) / 127.5 - 1
        x = rearrange(x, "h w c -> 1 c h w")
        return self.vae.encode(x).latent_dist.mean * self.vae_scaling_factor

    def initial_noise(self, num_frames: int, height: int, width: int, seed: int,
                      tiling: int = 0) -> torch.Tensor:
        """``(1, C, N, H/f, W/f)`` standard normal noise (``f`` = :attr:`latent_factor`, 8 for
        SD) drawn on the CPU from ``seed`` by a generator of its own (same numbers on every
        device; the process-wide RNG is not touched). ``tiling=16`` repeats one 16-frame draw
        along the frames (the official "shared initial noise")."""
        if seed is None:
            raise UsageError("`seed` is required (a whole number >= 0)")
        g = torch.Generator("cpu")
        g.manual_seed(int(seed))
        frames = tiling or num_frames
        f = self.latent_factor
        noise = torch.randn((1, self.denoiser.latent_channels, frames, height // f, width // f),
                            generator=g, dtype=torch.float32)
        if tiling:
            noise = noise.repeat(1, 1, -(-num_frames // tiling), 1, 1)[:, :, :num_frames]
        return noise

    def plan(self, reference: np.ndarray | None, controls: Sequence[np.ndarray] | None,
             o: SamplingOptions, *, num_frames: int | None = None,
             size: tuple[int, int] | None = None) -> Plan:
        """Check the inputs against the model and the options; choose the windows.

        A family without a reference (``denoiser.uses_reference`` False) takes ``reference``
        None and refuses one; one that samples without controls (``denoiser.
        accepts_no_controls``) takes ``controls`` None with ``num_frames`` and ``size``
        (W, H; default the model's)."""
        if self.uses_reference and reference is None:
            raise InputError(f"{self.family} models animate a reference photo: pass `reference`")
        if not self.uses_reference and reference is not None:
            raise UsageError(f"{self.family} models take no reference photo (appearance comes "
                             "from the text prompt); leave the reference out")
        if controls is None:
            if not getattr(self.denoiser, "accepts_no_controls", False):
                raise InputError("no control frames; pass the driving video's controls")
            if not num_frames or num_frames < 1:
                raise UsageError("without a driving video, say how many `frames` to make")
            w, h = size or self.default_size
            ref_shape = (h, w, 3)
        else:
            if len(controls) == 0:
                raise InputError("no control frames; the driving video is empty")
            first = np.asarray(controls[0])
            ref_shape = first.shape if reference is None else np.asarray(reference).shape
            if first.shape[:2] != ref_shape[:2]:
                raise InputError(f"control frames {first.shape} and reference {ref_shape} must "
                                 "have the same size; frame both with the same Framing")
        h, w = ref_shape[:2]
        f = self.latent_factor
        if h % f or w % f:
            raise InputError(f"size {w}x{h} is not a multiple of {f}; choose `size` as "
                             f"multiples of {f}")
        out_frames = num_frames = len(controls) if controls is not None else int(num_frames)
        if o.pad_to and controls is None:
            raise UsageError("`pad_to` repeats the last control frame; without a driving video "
                             "leave it at 0")
        if o.init_strength < 1.0 and reference is None:
            raise UsageError("`init_strength` below 1 starts from the noised reference photo; "
                             "this call has none, leave it at 1")
        if o.pad_to and num_frames % o.pad_to:
            num_frames += o.pad_to - num_frames % o.pad_to
            controls = _EdgePadded(controls, num_frames)
        max_len = self.max_context_frames
        if max_len and min(o.context_frames, num_frames) > max_len:
            raise UsageError(f"`context_frames` {o.context_frames} exceeds what the motion "
                             f"modules support ({max_len} frames); use {min(16, max_len)}")
        schedule = getattr(self.denoiser, "window_schedule", None)
        try:
            if schedule is not None:  # a family that chooses its own windows (chunks)
                windows = schedule(num_frames, o)
            else:
                windows = context_windows(num_frames, o.context_frames, o.context_overlap,
                                          closed_loop=o.closed_loop,
                                          context_stride=o.context_stride)
        except ValueError as exc:
            raise UsageError(f"{exc}; adjust `context_frames`/`context_overlap`") from None
        return Plan(controls, num_frames, out_frames, h, w, windows)

    def start_video(self, reference: np.ndarray | None, controls: Sequence[np.ndarray] | None,
                    o: SamplingOptions, ref_latents: torch.Tensor | None = None, **extra):
        """The family's once-per-video state. The denoiser gets the reference latent, the
        controls, the reference image itself (uint8 ``(H, W, 3)``, for families that encode it
        otherwise too, e.g. Animate Anyone's CLIP) and ``extra``: family inputs such as
        MagicAnimate's ``text_embeds_cond`` or Animate Anyone's ``image_embeds``."""
        if ref_latents is None and reference is not None:
            ref_latents = self.encode_reference(reference)
        params = inspect.signature(self.denoiser.start_video).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(k for k in extra if k not in params)
            if unknown:
                raise UsageError(f"{', '.join(unknown)}: not an input of {self.family} models; "
                                 "leave it out")
        self.check_unused(o)
        engine = {"reference_bank_dtype", "lean", "window_batch"}
        named = {k: getattr(o, k) for k in OPTION_NAMES if k in params and k not in engine}
        return self.denoiser.start_video(ref_latents, controls, reference=reference,
                                         reference_bank_dtype=o.reference_bank_dtype,
                                         lean=o.lean, window_batch=o.window_batch,
                                         **named, **extra)

    def check_unused(self, o: SamplingOptions) -> None:
        """Refuse an option this model does not use set to another value than the model's
        (it would change nothing, silently): the family options (``image_guidance``, ...) its
        denoiser's ``start_video`` does not take, and what the denoiser lists in
        ``unused_options`` (DreamPose: ``guidance``, the window options, ...)."""
        params = inspect.signature(self.denoiser.start_video).parameters
        unused = [k for k in FAMILY_OPTIONS if k not in params]
        unused += list(getattr(self.denoiser, "unused_options", ()))
        changed = [k for k in unused if getattr(o, k) != getattr(self.options, k)]
        if changed:
            names = ", ".join(f"`{k}`" for k in changed)
            model = self.name if self.name == self.family else f"{self.name} ({self.family})"
            raise UsageError(f"{names}: not used by {model} models (they would change "
                             "nothing); leave it out")

    @torch.no_grad()
    def predict_noise(self, latents: torch.Tensor, t, video, windows: list[list[int]], *,
                      guidance: float, scheduler=None, window_batch: int = 1,
                      on_window: Callable | None = None,
                      parallel: WindowParallel | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's noise prediction for the whole video latent ``(1, C, N, h, w)``.

        Returns ``(guided (1,C,N,h,w), raw (B,C,N,h,w))``; ``raw`` is the window-averaged
        denoiser output, rows ``[uncond, cond]`` with CFG (``guidance > 1``) or ``[cond]``.
        ``window_batch`` windows of equal length go through the denoiser together.
        ``parallel``: this process runs only its share of the window groups, and the sums
        and counts of all processes are added up (one all-reduce) before fusing; ``on_window``
        is called for this process's windows."""
        # a denoiser that combines its guidance branches itself gets one row per window
        self_guided = getattr(self.denoiser, "guides_itself", False)
        rows = GuidanceRows(cfg=False) if self_guided else GuidanceRows.for_scale(guidance)
        model_input = scheduler.scale_model_input(latents, t) if scheduler is not None else latents
        step = self.denoiser.start_step(video, model_input, t, rows)
        groups = window_groups(windows, window_batch)
        mine = [i for group in (groups if parallel is None else parallel.mine(groups))
                for i in group]
        # the frames this process needs, cached while its later windows need them
        features = FrameCache([windows[i] for i in mine],
                              lambda frames: self.denoiser.frame_features(step, frames))
        local = {i: j for j, i in enumerate(mine)}
        # one buffer [sum | counts | failures]: a single all-reduce when windows are split
        n, frames = rows.halves * latents[0].numel(), latents.shape[2]
        buffer = torch.zeros(n + frames + 1, device=latents.device, dtype=latents.dtype)
        total = buffer[:n].view(rows.halves, *latents.shape[1:])
        counts = buffer[n:n + frames]
        error = None
        try:
            for group in groups:
                if group[0] not in local:
                    continue
                batch = torch.cat([take_frames(model_input, windows[i]) for i in group])
                pred = self.denoiser.predict(
                    step, [features.take(local[i], windows[i]) for i in group], batch)
                call_rows = rows.with_videos(len(group))
                for j, i in enumerate(group):
                    accumulate(total, counts, windows[i], call_rows.of_video(pred, j))
                    if on_window is not None:
                        on_window(i, windows[i])
        except BaseException as exc:
            if parallel is None:
                raise
            error = exc  # the others must not wait for this process: vote in the reduction
        if parallel is not None:
            buffer[-1] = 0.0 if error is None else 1.0
            parallel.sum_(buffer)
            parallel.raise_if(error, float(buffer[-1]))
        if not covers(windows, frames):
            raise ValueError("some frames are in no context window")
        raw = fuse(total, counts, checked=True, inplace=True)
        guided = guide(raw[:1], raw[1:], guidance) if rows.cfg else raw
        return guided, raw

    def size_for(self, photo_wh: tuple[int, int]) -> tuple[int, int]:
        """The output size when none is asked for: the model's native size."""
        return self.default_size

    @torch.no_grad()
    def encode_warped(self, reference: np.ndarray, poses, num_frames: int,
                      reference_pose=None) -> torch.Tensor:
        """The start of ``init="warp"``: the reference warped to each pose of ``poses`` (a
        :class:`~kinemate.pose.PoseTrack` in the reference's pixels; the last pose repeats
        up to ``num_frames``) by kinemate-photo's renderer, each frame VAE-encoded like the
        reference: ``(1, C, num_frames, H/f, W/f)`` float32 on the CPU. The reference's own
        pose is ``reference_pose`` or found by kinemate's extractor."""
        from kinemate.models.photo import PhotoRenderer

        if reference is None:
            raise UsageError(f"`init` warp warps the reference photo, and {self.family} models "
                             "take none; leave `init` out")
        ref = np.asarray(reference)
        if poses is None:
            raise UsageError("`init` warp needs the driving poses: use `control` pose (a video "
                             "of a person or a pose file), or `init` reference")
        if (poses.width, poses.height) != (ref.shape[1], ref.shape[0]):
            raise InputError(f"the pose track is in {poses.width}x{poses.height} pixels but the "
                             f"reference is {ref.shape[1]}x{ref.shape[0]}; frame both alike")
        if reference_pose is None:
            from kinemate.pose import detect_reference_pose

            reference_pose = detect_reference_pose(ref)
        renderer = PhotoRenderer()
        rig = renderer.start(ref, reference_pose.body[0])
        frames = [self.encode_reference(renderer.frame(rig, poses.body[min(i, len(poses) - 1)]))
                  .float().cpu() for i in range(num_frames)]
        return torch.stack(frames, dim=2)

    def _initial_latents(self, plan: Plan, o: SamplingOptions, scheduler, ref_latents,
                         latents: torch.Tensor | None, warped=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The starting latents and the timesteps to run (all of them, or the last
        ``init_strength`` share when starting from the noised reference, or with ``init``
        warp from the noised warped frames, which ``warped()`` encodes). A denoiser's
        ``initial_latents`` hook may replace them once the video has started (see
        :meth:`sample_latents`)."""
        timesteps = scheduler.timesteps
        if latents is not None:
            if latents.shape[2] != plan.num_frames:
                padded = (f", the {plan.out_frames} controls padded to a multiple of "
                          f"{o.pad_to}" if o.pad_to else "")
                raise UsageError(f"`latents` cover {latents.shape[2]} frames; the sampler needs "
                                 f"{plan.num_frames}{padded}")
            return latents.to(self.device, self.dtype), timesteps
        noise = self.initial_noise(plan.num_frames, plan.height, plan.width, o.seed,
                                   o.noise_tiling)
        if o.init_strength < 1.0:
            timesteps = timesteps[len(timesteps) - max(1, round(len(timesteps) * o.init_strength)):]
            if o.init == "warp":
                start = warped()
            elif ref_latents is None:
                raise UsageError(f"`init_strength` below 1 starts from the noised reference "
                                 f"photo, and {self.family} models take none; leave it at 1")
            else:
                start = ref_latents.float().cpu().unsqueeze(2).expand_as(noise)
            latents = scheduler.add_noise(start, noise, timesteps[:1].cpu())
        else:
            latents = noise * scheduler.init_noise_sigma
        return latents.to(self.device, self.dtype), timesteps

    def weights_digest(self) -> str:
        """sha256 over every network's tensors — name, shape, dtype, sum and the first and
        last 1024 values of each — computed once per pipeline: the model part of a resumable
        job's fingerprint. Reduced on the tensors' own device, so it costs one pass over the
        weights and no copy of them to the CPU."""
        if self.__dict__.get("_weights_digest") is None:
            h = hashlib.sha256()
            for name, module in sorted(self.components.items()):
                for key, value in module.state_dict().items():
                    flat = value.detach().reshape(-1)
                    ends = torch.cat([flat[:1024], flat[-1024:]]).float().cpu()
                    h.update(f"{name}.{key}{tuple(value.shape)}{value.dtype}"
                             f"{float(flat.double().sum())!r}".encode())
                    h.update(ends.numpy().tobytes())
            self.__dict__["_weights_digest"] = h.hexdigest()
        return self.__dict__["_weights_digest"]

    def _fingerprint(self, reference, plan: Plan, o: SamplingOptions, latents, extra) -> str:
        given = {k: hashlib.sha256(v.detach().float().cpu().numpy().tobytes()).hexdigest()
                 if torch.is_tensor(v) else repr(v)
                 for k, v in {**extra, "latents": latents}.items() if v is not None}
        facts = {"model": self.name, "family": self.family, "weights": self.weights_digest(),
                 "scheduler": dict(self.scheduler.config), "device": str(self.device),
                 "dtype": str(self.dtype), "options": o.to_dict(), "given": given}
        return job_fingerprint(facts, np.zeros(0) if reference is None else reference,
                               () if plan.controls is None else plan.controls)

    # -- sampling ----------------------------------------------------------------------
    @torch.no_grad()
    def sample_latents(self, reference: np.ndarray | None, controls: Sequence[np.ndarray] | None, *,
                       latents: torch.Tensor | None = None, progress: bool = True,
                       callback: Callable[[int, torch.Tensor, dict], None] | None = None,
                       text_embeds_uncond: torch.Tensor | None = None,
                       text_embeds_cond: torch.Tensor | None = None,
                       image_embeds: torch.Tensor | None = None,
                       checkpoint: SamplerCheckpoint | None = None,
                       window_callback: Callable[[int, int], None] | None = None,
                       prompt: str | None = None, negative_prompt: str | None = None,
                       num_frames: int | None = None, size: tuple[int, int] | None = None,
                       inputs: dict | None = None, parallel: WindowParallel | None = None,
                       poses=None, reference_pose=None,
                       **options) -> torch.Tensor:
        """Run the sampler; returns the final latents ``(1, C, N, H/f, W/f)``.

        ``controls``: any sequence of N uint8 ``(H, W, 3)`` frames (an array or a lazy
        sequence). ``options``: any :class:`SamplingOptions` field (``steps``, ``guidance``,
        ``seed``, ``context_frames``, ...); unset or None takes the model's value. ``latents``
        replaces the initial noise (covering the padded length with ``pad_to``);
        ``callback(step, t, info)`` gets ``noise_pred`` (guided) and ``latents`` (after the
        step); ``text_embeds_*`` replace the model's stored text embeddings (MagicAnimate
        design), ``image_embeds`` the CLIP image embedding a model computes from the
        reference (Animate Anyone: e.g. the embedding of the uncropped photo). ``checkpoint``
        (:class:`~kinemate.pipeline.resume.SamplerCheckpoint`) saves the sampler's state while
        it runs and, when asked to resume, continues from a state this same job saved: the
        result is the same as an uninterrupted run's; the state of the last step stays on disk
        until the caller has the output (:meth:`__call__` and ``animate_file`` remove it).
        ``window_callback(step, window)`` is called after every window (a long step can be
        stopped between windows by raising there).

        Families without a reference photo (Text2Video-Zero) take ``reference`` None and a
        ``prompt`` (``negative_prompt``); one that also samples without controls takes
        ``controls`` None with ``num_frames`` and ``size`` (W, H), and may start from latents
        of its own (``denoiser.initial_latents``: Text2Video-Zero's motion dynamics).
        ``inputs``: further family inputs by name (keywords of the family's ``start_video``,
        e.g. Text2Video-Zero's ``t0``, ``t1``, ``motion_field``); others are refused.
        ``parallel`` (:class:`~kinemate.pipeline.parallel.WindowParallel`, every process of a
        ``torch.distributed`` job calling with the same inputs): each process runs its share
        of every step's windows and all return the same latents. Rank 0 decides: only it shows
        progress, calls ``window_callback`` (for every window), reads and saves ``checkpoint``;
        when it stops (a callback raises) or any process fails, all stop at that step.
        ``poses`` (a :class:`~kinemate.pose.PoseTrack` in the reference's pixels, one pose per
        control frame) and ``reference_pose`` are what ``init="warp"`` warps the reference
        with (:meth:`encode_warped`); ``animate_file`` passes them with a pose control."""
        if parallel is not None and parallel.world_size < 2:
            parallel = None
        if parallel is not None and not parallel.is_main:
            progress, window_callback = False, None
        o = self.resolve(text_only=controls is None, **options)             # 1. options
        self.check_unused(o)
        plan = self.plan(reference, controls, o, num_frames=num_frames,      # 2. inputs, windows
                         size=size)
        scheduler = (copy.deepcopy(self.scheduler) if o.sampler == "model"    # 3. latents
                     else make_scheduler(dict(self.scheduler.config), o.sampler))
        scheduler.set_timesteps(o.steps, device=self.device)
        ref_latents = None if reference is None else self.encode_reference(reference)
        given_latents = latents
        latents, timesteps = self._initial_latents(
            plan, o, scheduler, ref_latents, latents,
            warped=lambda: self.encode_warped(reference, poses, plan.num_frames, reference_pose))
        extra = {k: v for k, v in (("text_embeds_uncond", text_embeds_uncond),
                                   ("text_embeds_cond", text_embeds_cond),
                                   ("image_embeds", image_embeds), ("prompt", prompt),
                                   ("negative_prompt", negative_prompt)) if v is not None}
        extra.update(inputs or {})  # further family inputs (Text2Video-Zero: t0, t1, ...)
        if controls is None:
            extra.update(num_frames=plan.num_frames, size=(plan.width, plan.height))
        video = self.start_video(reference, plan.controls, o, ref_latents, **extra)  # 4.
        generator = torch.Generator("cpu").manual_seed((o.seed + STEP_NOISE_SEED) % 2**63)
        step_kwargs = {"eta": o.eta, "generator": generator}
        accepted = inspect.signature(scheduler.step).parameters
        step_kwargs = {k: v for k, v in step_kwargs.items() if k in accepted}
        own_start = getattr(self.denoiser, "initial_latents", None)
        if own_start is not None and given_latents is None:                  # family's start
            try:
                started = own_start(video, scheduler, timesteps, seed=o.seed,
                                    guidance=o.guidance, step_kwargs=step_kwargs,
                                    steps=o.steps, init_strength=o.init_strength)
            except BaseException:
                self.denoiser.end_video(video)
                raise
            if started is not None:
                latents, timesteps = started
                if not bool(torch.isfinite(latents).all()):
                    raise NumericsError(_overflow_message(self.dtype, 0))
        start = 0
        if parallel is not None:                     # every process holds the same job
            parallel.check_same(inputs_digest(reference, plan.controls, latents, {
                "options": o.to_dict(), "weights": self.weights_digest(),
                "dtype": str(self.dtype), "given": sorted(extra)}), "inputs, options or weights")
        saved = None
        if checkpoint is not None and (parallel is None or parallel.is_main):   # 5. resume
            load = lambda: checkpoint.load(  # noqa: E731
                self._fingerprint(reference, plan, o, latents, extra))
            saved = load() if parallel is None else parallel.agree(lambda: saved_to_bytes(load()))
        elif parallel is not None:
            parallel.agree(None)
        if parallel is not None:  # rank 0's saved state, if any, on every process
            saved = saved_from_bytes(parallel.broadcast_bytes(saved))
        if saved is not None:
            latents = saved.latents.to(self.device, self.dtype)
            restore_scheduler(scheduler, saved, self.device)
            if saved.generator is not None:
                generator.set_state(saved.generator)
            start = saved.step + 1
        groups = window_groups(plan.windows, o.window_batch)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(timesteps) * len(plan.windows), disable=not progress,
                   desc=f"{self.name}: {plan.num_frames} frames", unit="window", leave=False,
                   initial=start * len(plan.windows))
        try:
            for i, t in enumerate(timesteps):                                # 6. steps
                if i < start:
                    continue
                noise_pred, _ = self.predict_noise(
                    latents, t, video, plan.windows, guidance=o.guidance, scheduler=scheduler,
                    window_batch=o.window_batch, parallel=parallel,
                    on_window=lambda w, _frames, i=i: _window_done(bar, window_callback, i, w))
                latents = scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
                if not bool(torch.isfinite(latents).all()):
                    raise NumericsError(_overflow_message(self.dtype, i + 1))

                def after_step(i=i, t=t, noise_pred=noise_pred, latents=latents):
                    if parallel is not None and parallel.is_main:  # the others' windows
                        for w in parallel.others(groups):
                            _window_done(bar, window_callback, i, w)
                    if checkpoint is not None and (parallel is None or parallel.is_main):
                        checkpoint.save(i, latents, scheduler, generator,
                                        force=i == len(timesteps) - 1)
                    if callback is not None:
                        callback(i, t, {"noise_pred": noise_pred, "latents": latents,
                                        "ref_latents": ref_latents, "windows": plan.windows})

                if parallel is None:
                    after_step()
                else:  # rank 0 decides whether the job goes on
                    parallel.agree(after_step)
        finally:
            bar.close()
            self.denoiser.end_video(video)
        return latents[:, :, :plan.out_frames]

    # -- decoding ----------------------------------------------------------------------
    @torch.no_grad()
    def decode_frame(self, latents: torch.Tensor, index: int) -> torch.Tensor:
        """Decode frame ``index`` of ``(1, C, N, h, w)`` -> ``(1, 3, H, W)`` float in [0, 1]."""
        z = latents[:, :, index] / self.vae_scaling_factor
        image = self.vae.decode(z.to(self.device, self.dtype)).sample
        return (image / 2 + 0.5).clamp(0, 1)

    def decode(self, latents: torch.Tensor, *, stretch: bool = False) -> Iterator[np.ndarray]:
        """Decode one frame at a time; yields uint8 ``(H, W, 3)`` frames (``stretch``: see
        :func:`stretch_frame`)."""
        for index in range(latents.shape[2]):
            image = self.decode_frame(latents, index)[0]
            frame = (image.permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)
            yield stretch_frame(frame) if stretch else frame

    def stream(self, reference: np.ndarray | None, controls: Sequence[np.ndarray] | None,
               **kwargs) -> Iterator[np.ndarray]:
        """Like ``__call__`` but yields the frames one by one as they are decoded (nothing on
        the ranks other than 0 of a window-parallel job: they only sample)."""
        stretch = self.resolve(**{k: kwargs.get(k) for k in ("stretch",)}).stretch
        latents = self.sample_latents(reference, controls, **kwargs)
        parallel = kwargs.get("parallel")
        if parallel is not None and not parallel.is_main:
            return
        yield from self.decode(latents, stretch=stretch)

    def __call__(self, reference: np.ndarray | None, controls: Sequence[np.ndarray] | None,
                 **kwargs) -> np.ndarray | None:
        """Animate: uint8 reference ``(H, W, 3)`` + control frames ``(F, H, W, 3)`` (same size,
        multiples of 8) -> uint8 frames ``(F, H, W, 3)``. Keywords: see
        :meth:`sample_latents` (steps, guidance, seed, context_frames, ..., progress,
        checkpoint, parallel). Ranks other than 0 of a window-parallel job return None."""
        parallel = kwargs.get("parallel")
        frames = list(self.stream(reference, controls, **kwargs))
        if parallel is not None and not parallel.is_main:
            return None
        if kwargs.get("checkpoint") is not None:
            kwargs["checkpoint"].clear()
        return np.stack(frames)

    # -- saving ------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the kinemate format (see :mod:`kinemate.pipeline.format`)."""
        from kinemate.pipeline.format import save_pipeline

        return save_pipeline(self, folder)
