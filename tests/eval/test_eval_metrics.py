"""Weight-free per-frame metrics against hand-computed values and skimage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from kinemate.errors import UsageError
from kinemate.eval import metrics as M


def _img(seed=0, h=48, w=64):
    rng = np.random.default_rng(seed)
    # smooth-ish image: random field blurred by upsampling
    small = rng.integers(0, 256, size=(h // 8, w // 8, 3)).astype(np.float64)
    big = np.kron(small, np.ones((8, 8, 1)))
    big += rng.normal(0, 10, big.shape)
    return np.clip(big, 0, 255).astype(np.uint8)


def test_identical_frames_give_inf_psnr_ssim_one_l1_zero():
    a = _img()
    assert M.psnr(a, a) == math.inf
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert M.l1(a, a) == 0.0
    stack = np.stack([a, a, a])
    assert np.all(np.isinf(M.psnr(stack, stack)))
    assert M.psnr(stack, stack).shape == (3,)


def test_psnr_of_constant_offset_is_hand_computed():
    a = np.full((16, 16, 3), 100, np.uint8)
    b = np.full((16, 16, 3), 110, np.uint8)
    # MSE = 100 -> PSNR = 10 log10(65025 / 100)
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    assert M.psnr(a, b) == pytest.approx(28.1308, abs=1e-4)
    assert M.l1(a, b) == pytest.approx(10 / 255)


def test_psnr_of_known_gaussian_noise_level():
    rng = np.random.default_rng(1)
    a = np.full((256, 256, 3), 128, np.uint8)
    sigma = 8.0
    b = np.clip(np.round(128 + rng.normal(0, sigma, a.shape)), 0, 255).astype(np.uint8)
    # expected MSE ~ sigma^2 + 1/12 (rounding) -> PSNR ~ 30.0 dB
    expected = 10 * math.log10(255**2 / (sigma**2 + 1 / 12))
    assert M.psnr(a, b) == pytest.approx(expected, abs=0.1)


def test_psnr_of_shifted_image_matches_direct_formula():
    a = _img(2)
    b = np.roll(a, 3, axis=1)
    d = a.astype(float) - b.astype(float)
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / np.mean(d**2)))
    # bigger shift -> lower PSNR on this smooth image
    assert M.psnr(a, np.roll(a, 8, axis=1)) < M.psnr(a, np.roll(a, 1, axis=1))


def test_uint8_overflow_psnr_trap_reproduced_and_corrected():
    a = np.full((8, 8, 3), 10, np.uint8)
    # difference 16: true MSE 256 (24.05 dB); uint8 square wraps 256 -> 0, the script says inf
    b = np.full((8, 8, 3), 26, np.uint8)
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 256))
    assert M.psnr_uint8_overflow(a, b) == math.inf
    # difference 100: true MSE 10000 (8.13 dB); 10000 mod 256 = 16 -> 36.08 dB
    c = np.full((8, 8, 3), 110, np.uint8)
    assert M.psnr(a, c) == pytest.approx(8.1308, abs=1e-4)
    assert M.psnr_uint8_overflow(a, c) == pytest.approx(10 * math.log10(255**2 / 16))
    # for any pair the trap's MSE is at most 255, so it never reports below 24.0 dB
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert M.psnr(x, y) < 8.0
    assert M.psnr_uint8_overflow(x, y) > 24.0


@pytest.mark.parametrize("seed,noise", [(0, 5.0), (1, 25.0), (2, 60.0)])
def test_ssim_matches_skimage_wang_definition(seed, noise):
    a = _img(seed)
    rng = np.random.default_rng(seed + 10)
    b = np.clip(a + rng.normal(0, noise, a.shape), 0, 255).astype(np.uint8)
    ref = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=255, channel_axis=-1,
    )
    assert M.ssim(a, b) == pytest.approx(ref, abs=1e-10)


def test_ssim_decreases_with_noise_and_batches_per_frame():
    a = _img(3)
    rng = np.random.default_rng(3)
    frames = [np.clip(a + rng.normal(0, s, a.shape), 0, 255).astype(np.uint8) for s in (2, 10, 40)]
    vals = M.ssim(np.stack([a] * 3), np.stack(frames))
    assert vals.shape == (3,)
    assert vals[0] > vals[1] > vals[2]


def test_bad_inputs_raise_usage_errors():
    a = _img()
    with pytest.raises(UsageError, match="different shapes"):
        M.psnr(a, a[:, :-1])
    with pytest.raises(UsageError, match="uint8"):
        M.psnr(a.astype(np.float32), a.astype(np.float32))
    with pytest.raises(UsageError, match="at least 11x11"):
        M.ssim(a[:8, :8], a[:8, :8])


def test_ssim_of_constant_images_is_the_luminance_term():
    # no variance: SSIM = (2*mx*my + C1) / (mx^2 + my^2 + C1), C1 = (0.01*255)^2 = 6.5025
    a = np.full((20, 20, 3), 100, np.uint8)
    b = np.full((20, 20, 3), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert M.ssim(a, b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-12)
