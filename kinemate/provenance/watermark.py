"""The kinemate invisible watermark: a tiled spread-spectrum pattern in luminance.

Scheme (version 1), designed because measurement showed the ``invisible-watermark`` package
(dwtDct / dwtDctSvd) loses its payload after resizing or cropping a frame by a few percent
(see docs/provenance.md and benchmarks/bench_watermark.py):

* **Payload**: 64 bits = magic ``0x4B4D`` ("KM", 16 bits) | scheme version (4) | flags (4) |
  model id (24 bits, from SHA-256 of the model name) | CRC-16/CCITT of the first 48 bits.
  The magic + CRC give 32 check bits: a random pattern passes with probability 2**-32.
  The 64 bits are protected by a rate-1/2, K=7 convolutional code (140 coded bits with the
  tail) and decoded with soft-decision Viterbi, which corrects ~10 % raw bit errors.
* **Resolution normalisation**: the pattern lives on a canonical grid of ``L x L`` cells
  stretched over the whole frame (``L`` = 256 for frames of at least 512 px on the short side,
  128 from 256 px, else 64 — at least 2 x 2 pixels per cell), so any resize, uniform or not,
  keeps the pattern where the detector expects it; the detector tries each plausible ``L``.
* **Pattern**: the canonical grid is tiled with one ``32 x 32`` tile. 256 tile cells carry a
  fixed pseudo-random *sync* sequence; the other 768 cells are split among the 140 coded bits
  (5-6 cells per bit per tile, each with a pseudo-random sign). The pattern difference is
  scaled by local texture (stronger where the picture is busy, weaker on flat areas), upsampled
  to the frame size and added to R, G and B equally (luminance only; chroma unchanged).
* **Detection**: luminance is resized to candidate canonical sizes and
  whitened (each cell minus the mean of its 4 neighbours, divided by the local contrast),
  then folded modulo the tile (tiles summed). Cropping shifts the
  tile cyclically and changes the scale slightly: the detector searches the scale on a small
  grid (a crop of up to ~12 % per axis) and finds the shift with an FFT correlation against the
  sync sequence. For video, folded tiles are summed over frames before deciding (soft voting).
  The payload is read at the best candidates; it counts only if magic and CRC match.

Everything here is numpy + OpenCV on uint8 RGB frames ``(H, W, 3)``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Iterable

import cv2
import numpy as np

SCHEME_VERSION = 1
MAGIC = 0x4B4D  # "KM"
TILE = 32
LEVELS = (256, 128, 64)  # canonical grid sizes, largest first
PAYLOAD_BITS = 64
# Convolutional code, rate 1/2, constraint length 7 (the classic 171/133 octal pair), with a
# 6-bit zero tail: 64 payload bits -> 140 coded bits, decoded with soft-decision Viterbi.
CONV_K = 7
CONV_POLYS = (0o171, 0o133)
CODED_BITS = 2 * (PAYLOAD_BITS + CONV_K - 1)
N_SYNC = 256
DEFAULT_STRENGTH = 3.0  # RMS of the added luminance pattern, in 8-bit levels (~38.6 dB PSNR)
_KEY = b"kinemate-watermark-v1"

# Scale candidates: the fraction of the original frame (per axis) that the checked frame shows.
_COARSE_FRACTIONS = np.round(np.arange(1.0, 0.875, -0.0125), 4)


# --------------------------------------------------------------------------- payload


def model_id(model_name: str) -> int:
    """24-bit id of a model name (first 3 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(model_name.encode("utf-8")).digest()[:3], "big")


def crc16(bits: np.ndarray) -> int:
    """CRC-16/CCITT-FALSE over a bit array (MSB first)."""
    crc = 0xFFFF
    for b in bits.astype(np.uint8).tolist():
        top = (crc >> 15) & 1
        crc = (crc << 1) & 0xFFFF
        if top ^ b:
            crc ^= 0x1021
    return crc


def _int_bits(value: int, n: int) -> list[int]:
    return [(value >> (n - 1 - i)) & 1 for i in range(n)]


def _bits_int(bits: np.ndarray) -> int:
    v = 0
    for b in bits.tolist():
        v = (v << 1) | int(b)
    return v


@dataclass(frozen=True)
class Payload:
    """What the watermark carries."""

    model_id: int
    version: int = SCHEME_VERSION
    flags: int = 0

    @classmethod
    def for_model(cls, model_name: str, flags: int = 0) -> "Payload":
        return cls(model_id=model_id(model_name), version=SCHEME_VERSION, flags=flags)

    def to_bits(self) -> np.ndarray:
        head = (
            _int_bits(MAGIC, 16)
            + _int_bits(self.version & 0xF, 4)
            + _int_bits(self.flags & 0xF, 4)
            + _int_bits(self.model_id & 0xFFFFFF, 24)
        )
        head_arr = np.array(head, dtype=np.uint8)
        return np.concatenate([head_arr, np.array(_int_bits(crc16(head_arr), 16), np.uint8)])

    @classmethod
    def from_bits(cls, bits: np.ndarray) -> "Payload | None":
        """The payload if magic and CRC match, else None."""
        bits = np.asarray(bits, dtype=np.uint8)
        if bits.shape != (PAYLOAD_BITS,):
            return None
        if _bits_int(bits[:16]) != MAGIC or _bits_int(bits[48:]) != crc16(bits[:48]):
            return None
        return cls(
            model_id=_bits_int(bits[24:48]),
            version=_bits_int(bits[16:20]),
            flags=_bits_int(bits[20:24]),
        )

    @property
    def model_id_hex(self) -> str:
        return f"{self.model_id:06x}"


# --------------------------------------------------------------------------- channel code


def _parity(x: int) -> int:
    return bin(x).count("1") & 1


def conv_encode(bits: np.ndarray) -> np.ndarray:
    """Rate-1/2, K=7 convolutional encoding of ``bits`` plus a zero tail: ``(CODED_BITS,)``."""
    state = 0
    out = []
    for b in list(np.asarray(bits, np.uint8)) + [0] * (CONV_K - 1):
        reg = (int(b) << (CONV_K - 1)) | state
        out.extend(_parity(reg & g) for g in CONV_POLYS)
        state = reg >> 1
    return np.array(out, dtype=np.uint8)


def _trellis() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_states = 1 << (CONV_K - 1)
    nxt = np.zeros((n_states, 2), np.int64)
    outs = np.zeros((n_states, 2, 2), np.float64)  # ±1 expected channel values
    for st in range(n_states):
        for b in (0, 1):
            reg = (b << (CONV_K - 1)) | st
            nxt[st, b] = reg >> 1
            outs[st, b] = [2 * _parity(reg & g) - 1 for g in CONV_POLYS]
    # predecessors of each state: (prev_state, input bit)
    prev = np.zeros((n_states, 2, 2), np.int64)
    count = np.zeros(n_states, np.int64)
    for st in range(n_states):
        for b in (0, 1):
            t = nxt[st, b]
            prev[t, count[t]] = (st, b)
            count[t] += 1
    return nxt, outs, prev


_NEXT, _OUTS, _PREV = _trellis()


def viterbi_decode(soft: np.ndarray) -> np.ndarray:
    """Soft-decision Viterbi: ``soft`` (CODED_BITS,) correlations (>0 means 1) -> 64 bits."""
    n_states = _NEXT.shape[0]
    steps = soft.size // 2
    metric = np.full(n_states, -np.inf)
    metric[0] = 0.0
    ps, pb = _PREV[..., 0], _PREV[..., 1]  # (n_states, 2)
    choice = np.zeros((steps, n_states), np.int64)
    for t in range(steps):
        r = soft[2 * t: 2 * t + 2]
        branch = _OUTS[ps, pb] @ r  # (n_states, 2): metric gain of each incoming branch
        cand = metric[ps] + branch
        k = np.argmax(cand, axis=1)
        choice[t] = k
        metric = cand[np.arange(n_states), k]
    state = 0  # the zero tail ends the trellis in state 0
    bits = np.zeros(steps, np.uint8)
    for t in range(steps - 1, -1, -1):
        k = choice[t, state]
        bits[t] = pb[state, k]
        state = ps[state, k]
    return bits[:PAYLOAD_BITS]


# --------------------------------------------------------------------------- key / layout


@dataclass(frozen=True)
class _Layout:
    sync: np.ndarray  # (TILE, TILE) float: ±1 on sync cells, 0 elsewhere
    bit_of: np.ndarray  # (TILE, TILE) int: coded bit index of a data cell, -1 on sync cells
    sign: np.ndarray  # (TILE, TILE) float ±1: pseudo-random sign of each cell


def _layout() -> _Layout:
    seed = int.from_bytes(hashlib.sha256(_KEY).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    n = TILE * TILE
    order = rng.permutation(n)
    sign = rng.choice(np.array([-1.0, 1.0]), size=n)
    bit_of = np.full(n, -1, dtype=np.int64)
    data_cells = order[N_SYNC:]
    bit_of[data_cells] = np.arange(data_cells.size) % CODED_BITS
    sync = np.zeros(n)
    sync[order[:N_SYNC]] = sign[order[:N_SYNC]]
    return _Layout(
        sync=sync.reshape(TILE, TILE),
        bit_of=bit_of.reshape(TILE, TILE),
        sign=sign.reshape(TILE, TILE),
    )


LAYOUT = _layout()


def tile_pattern(payload: Payload) -> np.ndarray:
    """The ``(TILE, TILE)`` ±1 tile carrying ``payload`` (sync cells + signed data cells)."""
    bits = conv_encode(payload.to_bits()).astype(np.float64) * 2 - 1  # {0,1} -> {-1,+1}
    data = np.where(LAYOUT.bit_of >= 0, bits[np.maximum(LAYOUT.bit_of, 0)], 0.0) * LAYOUT.sign
    return LAYOUT.sync + data


def level_for(height: int, width: int) -> int:
    """Canonical grid size used when embedding in a frame of this size."""
    small = min(height, width)
    for level in LEVELS:
        if small >= 2 * level:  # at least 2 x 2 pixels per cell
            return level
    return LEVELS[-1]


# --------------------------------------------------------------------------- embedding


def _luma(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _texture_mask(y_canon: np.ndarray) -> np.ndarray:
    """Per-cell strength factor (mean square 1): more on texture, less on flat areas."""
    mean = cv2.blur(y_canon, (3, 3))
    var = cv2.blur(y_canon * y_canon, (3, 3)) - mean * mean
    act = np.sqrt(np.maximum(var, 0.0)) + 2.0
    m = np.clip(act / float(np.median(act)), 0.35, 2.5)
    # Dark/bright clipping zones cannot carry a two-sided pattern: soften there.
    m *= np.clip(np.minimum(y_canon, 255.0 - y_canon) / 24.0, 0.25, 1.0)
    return (m / math.sqrt(float(np.mean(m * m)))).astype(np.float32)


class Embedder:
    """Adds the watermark for one payload to frames (uint8 ``(H, W, 3)`` RGB in and out).

    Embedding is *informed*: after a first pass the embedder runs the detector's own
    statistic on the marked frame and moves pattern energy from bits the picture already
    supports to bits the picture works against (a few feedback rounds), keeping the total
    RMS of the change fixed at ``strength`` levels.
    """

    FEEDBACK_ROUNDS = 3

    def __init__(self, payload: Payload, strength: float = DEFAULT_STRENGTH) -> None:
        self.payload = payload
        self.strength = float(strength)
        self._tile = tile_pattern(payload).astype(np.float32)
        # expected sign of each coded bit's correlation
        self._bit_sign = conv_encode(payload.to_bits()).astype(np.float64) * 2 - 1

    def _canon_to_frame(self, canon: np.ndarray, w: int, h: int) -> np.ndarray:
        diff = cv2.resize(canon, (w, h), interpolation=cv2.INTER_LINEAR)
        rms = float(np.sqrt(np.mean(diff * diff))) + 1e-9
        return diff * (self.strength / rms)

    def pattern(self, frame: np.ndarray) -> np.ndarray:
        """The float32 ``(H, W)`` luminance difference that :meth:`mark` adds to ``frame``."""
        h, w = frame.shape[:2]
        level = level_for(h, w)
        reps = level // TILE
        luma = _luma(frame)
        mask = _texture_mask(cv2.resize(luma, (level, level), interpolation=cv2.INTER_AREA))
        gain = np.ones((TILE, TILE), np.float32)  # per tile cell, from feedback
        diff = None
        for _ in range(self.FEEDBACK_ROUNDS + 1):
            canon = np.tile(self._tile * gain, (reps, reps)) * mask
            diff = self._canon_to_frame(canon, w, h)
            marked = np.clip(luma + diff, 0, 255)
            y = cv2.resize(marked, (level, level), interpolation=cv2.INTER_AREA)
            folded = _fold(_whiten(y))
            soft = _soft_bits(folded, 0, 0) * self._bit_sign  # >0: bit reads right
            sync = float(np.sum((folded - folded.mean()) * LAYOUT.sync))
            per_cell = CODED_BITS / (TILE * TILE - N_SYNC)
            target = max(float(np.median(soft)), sync / N_SYNC / per_cell, 1e-6)
            weak = np.clip(1.0 + (target - soft) / target, 0.5, 3.0)
            new_gain = np.where(LAYOUT.bit_of >= 0, weak[np.maximum(LAYOUT.bit_of, 0)], 1.0)
            gain = (gain * new_gain).astype(np.float32)
            gain /= float(np.sqrt(np.mean(gain * gain)))
        return diff

    def mark(self, frame: np.ndarray) -> np.ndarray:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
        diff = self.pattern(frame)
        out = frame.astype(np.float32) + diff[..., None]
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def embed(frame: np.ndarray, payload: Payload, strength: float = DEFAULT_STRENGTH) -> np.ndarray:
    """Watermark one uint8 RGB frame."""
    return Embedder(payload, strength).mark(frame)


# --------------------------------------------------------------------------- detection


_CROSS = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.float32) / 4.0


def _whiten(y: np.ndarray) -> np.ndarray:
    """Prediction residual (centre minus its 4 neighbours) with local contrast normalisation."""
    hp = y - cv2.filter2D(y, -1, _CROSS, borderType=cv2.BORDER_REFLECT)
    local = np.sqrt(np.maximum(cv2.blur(hp * hp, (7, 7)), 0.0)) + 1.0
    return np.clip(hp / local, -3.0, 3.0)


def _fold(r: np.ndarray) -> np.ndarray:
    """Sum of the ``TILE x TILE`` tiles of ``r`` (cyclic, partial tiles included)."""
    h, w = r.shape
    ph, pw = -h % TILE, -w % TILE
    if ph or pw:
        r = np.pad(r, ((0, ph), (0, pw)))
    return r.reshape(r.shape[0] // TILE, TILE, r.shape[1] // TILE, TILE).sum(axis=(0, 2))


def _levels_for_check(height: int, width: int) -> tuple[int, ...]:
    """Canonical levels that can have been embedded in a frame now this size.

    A level ``L`` is embedded in frames of at least ``2 L`` px; the checked frame may have been
    shrunk (to 75 %) and cropped, so levels above ``0.8 * min(H, W)`` are not plausible.
    """
    small = min(height, width)
    levels = tuple(lv for lv in LEVELS if lv <= 0.8 * small)
    return levels or (LEVELS[-1],)


def _candidates(levels: tuple[int, ...], work: int) -> list[tuple[int, float, float, int, int]]:
    """Coarse geometry candidates: (level, fraction y, fraction x, phase y, phase x).

    Phases are in work-image pixels (the work image is ``work`` px square): 0 or half a cell.
    """
    out = []
    for lv in levels:
        half = max(1, work // (2 * lv))
        for fy in _COARSE_FRACTIONS:
            for fx in _COARSE_FRACTIONS:
                for py in (0, half):
                    for px in (0, half):
                        out.append((lv, fy, fx, py, px))
    return out


_SYNC_FFT_CONJ = np.conj(np.fft.fft2(LAYOUT.sync))


def _sync_scores(folded: np.ndarray) -> tuple[float, int, int]:
    """Best normalised sync correlation over all cyclic shifts: (z, dy, dx)."""
    f = folded - folded.mean()
    corr = np.real(np.fft.ifft2(np.fft.fft2(f) * _SYNC_FFT_CONJ))
    sd = float(np.sqrt(np.sum(f * f) / f.size * N_SYNC)) + 1e-9
    idx = int(np.argmax(corr))
    dy, dx = divmod(idx, TILE)
    return float(corr[dy, dx] / sd), dy, dx


def _soft_bits(folded: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Per-bit correlation of the folded tile (shifted by dy, dx) with the data cells."""
    aligned = np.roll(folded, shift=(-dy, -dx), axis=(0, 1))
    aligned = aligned - aligned.mean()
    mask = LAYOUT.bit_of >= 0
    contrib = (aligned * LAYOUT.sign)[mask]
    return np.bincount(LAYOUT.bit_of[mask], weights=contrib, minlength=CODED_BITS)


def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass
class Detection:
    """The result of looking for the watermark in one image or a set of video frames."""

    detected: bool
    payload: Payload | None
    confidence: float  # 1 - (estimated probability of seeing this much evidence by chance)
    sync_z: float  # sync correlation peak, in standard deviations
    frames_checked: int
    bits: np.ndarray | None = None  # decoded 64 payload bits at the best candidate
    soft: np.ndarray | None = None  # soft values of the 140 coded bits there (sign = bit)
    level: int | None = None
    scale: tuple[float, float] | None = None  # detected fraction of the original (y, x)
    shift: tuple[int, int] | None = None
    extra: dict = field(default_factory=dict)
    #: the detection statistic as a probability: how likely a sync peak this high (and, when
    #: a payload was read, a payload passing its 32 check bits) is on an unmarked picture,
    #: over every candidate geometry tried. 1.0 means no evidence at all.
    p_value: float = 1.0

    def bit_accuracy(self, payload: Payload) -> float:
        """Fraction of the 64 payload bits read right (after error correction)."""
        if self.bits is None:
            return 0.0
        return float(np.mean(self.bits == payload.to_bits()))

    def coded_bit_accuracy(self, payload: Payload) -> float:
        """Fraction of the 140 coded bits read right (the raw channel, before correction)."""
        if self.soft is None:
            return 0.0
        return float(np.mean((self.soft > 0) == conv_encode(payload.to_bits()).astype(bool)))


class Detector:
    """Accumulates frames, then decides. ``add(frame)`` for each frame, then ``result()``.

    For every candidate geometry the folded tiles are summed over frames (soft voting), so a
    video is judged as a whole. The first frame is also kept on its own: in H.264 it is an
    intra frame and carries the pattern best, while in predicted frames of fast-moving content
    the pattern can drift with the motion vectors.
    """

    #: evidence a sync peak alone must reach to count as detection without a readable payload
    SYNC_ONLY_P = 1e-9
    TOP_K = 6
    REFINE = 4
    #: frames used for the coarse geometry search (all kept frames are used after that)
    COARSE_FRAMES = 4

    def __init__(self, keep_frames: int = 64) -> None:
        self._keep = keep_frames
        self._levels: tuple[int, ...] | None = None
        self._work_size = 0
        self._cands: list = []
        self._acc: np.ndarray | None = None
        self._first: np.ndarray | None = None
        self._work: list[np.ndarray] = []
        self.frames = 0

    @staticmethod
    def _fold_at(
        work: np.ndarray, lv: int, fy: float, fx: float, py: int = 0, px: int = 0
    ) -> np.ndarray:
        """Fold of the work image seen as fraction (fy, fx) of the original at level ``lv``.

        ``py``/``px`` drop that many leading work rows/columns: a sub-cell phase shift.
        """
        n = work.shape[0]
        if py or px:
            work = work[py:, px:]
        size = (
            max(8, int(round(lv * fx * (n - px) / n))),
            max(8, int(round(lv * fy * (n - py) / n))),
        )
        # The work image is ~2x the canonical size: linear resampling averages ~2x2 pixels.
        return _fold(_whiten(cv2.resize(work, size, interpolation=cv2.INTER_LINEAR)))

    def add(self, frame: np.ndarray) -> None:
        """Add one uint8 ``(H, W, 3)`` RGB (or ``(H, W)`` gray) frame."""
        y = frame.astype(np.float32) if frame.ndim == 2 else _luma(frame[..., :3])
        if self._levels is None:
            self._levels = _levels_for_check(*y.shape[:2])
            self._work_size = 2 * max(self._levels)
            self._cands = _candidates(self._levels, self._work_size)
            self._acc = np.zeros((len(self._cands), TILE, TILE))
        # Resample once to a square working size (area filter), then per candidate.
        ws = self._work_size
        work = cv2.resize(y, (ws, ws), interpolation=cv2.INTER_AREA)
        if self.frames < self.COARSE_FRAMES:
            folds = np.stack([self._fold_at(work, *c) for c in self._cands])
            self._acc += folds
            if self.frames == 0:
                self._first = folds
        if len(self._work) < self._keep:
            self._work.append(work)
        self.frames += 1

    def _refine(self, cand: tuple, works: list[np.ndarray]) -> list[tuple]:
        """Sync scores on a finer scale grid around one coarse winner."""
        lv, fy0, fx0, py, px = cand
        out = []
        for dfy in (-0.005, -0.0025, 0.0, 0.0025, 0.005):
            for dfx in (-0.005, -0.0025, 0.0, 0.0025, 0.005):
                fy, fx = round(fy0 + dfy, 4), round(fx0 + dfx, 4)
                if fy > 1.0 + 1e-9 or fx > 1.0 + 1e-9:
                    continue
                acc = sum(self._fold_at(w, lv, fy, fx, py, px) for w in works)
                z, dy, dx = _sync_scores(acc)
                out.append((z, (lv, fy, fx, py, px), dy, dx, acc))
        return out

    def _search(self, coarse: np.ndarray, works: list[np.ndarray]) -> list[tuple]:
        scored = []
        for i, cand in enumerate(self._cands):
            z, dy, dx = _sync_scores(coarse[i])
            scored.append((z, cand, dy, dx, coarse[i]))
        scored.sort(key=lambda t: -t[0])
        fine = []
        for _, cand, _, _, _ in scored[: self.REFINE]:
            fine.extend(self._refine(cand, works))
        fine.sort(key=lambda t: -t[0])
        return fine[: self.TOP_K] + scored[: self.TOP_K]

    def result(self) -> Detection:
        if self.frames == 0:
            return Detection(False, None, 0.0, 0.0, 0)
        searches = [self._search(self._acc, self._work)]
        if self.frames > 1:
            searches.append(self._search(self._first, self._work[:1]))
        n_tests = len(searches) * (len(self._cands) + self.REFINE * 25) * TILE * TILE
        cands = sorted((c for cs in searches for c in cs), key=lambda t: -t[0])
        n_reads = len(cands)
        best = None
        for z, cand, dy, dx, acc in cands:
            soft = _soft_bits(acc, dy, dx)
            bits = viterbi_decode(soft)
            payload = Payload.from_bits(bits)
            lv, fy, fx = cand[:3]
            if payload is not None:
                # chance of a noise read passing: sync peak this high x 32 check bits
                p_sync = min(1.0, n_tests * _norm_sf(z))
                p = min(1.0, p_sync * n_reads * 2.0**-32)
                return Detection(True, payload, 1.0 - p, z, self.frames, bits, soft, lv,
                                 (fy, fx), (dy, dx), p_value=p)
            if best is None:
                best = (z, cand, dy, dx, soft, bits)
        z, cand, dy, dx, soft, bits = best
        p_sync = min(1.0, n_tests * _norm_sf(z))
        lv, fy, fx = cand[:3]
        detected = p_sync < self.SYNC_ONLY_P
        return Detection(
            detected, None, 1.0 - p_sync if detected else 0.0, z, self.frames, bits, soft, lv,
            (fy, fx), (dy, dx), {"sync_only": detected}, p_value=p_sync,
        )


def detect(frames: Iterable[np.ndarray] | np.ndarray) -> Detection:
    """Look for the watermark in one frame ``(H, W, 3)`` or a sequence of frames."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        frames = [frames]
    det = Detector()
    for f in frames:
        det.add(f)
    return det.result()
