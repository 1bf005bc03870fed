"""The watermark itself: payload coding, embedding on real frames, robustness to resize/crop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kinemate.provenance.watermark import (
    PAYLOAD_BITS,
    Payload,
    detect,
    embed,
    level_for,
    model_id,
)

PAYLOAD = Payload.for_model("kinemate-tiny")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def test_payload_bits_round_trip_and_check_bits():
    bits = PAYLOAD.to_bits()
    assert bits.shape == (PAYLOAD_BITS,)
    assert Payload.from_bits(bits) == PAYLOAD
    assert PAYLOAD.model_id == model_id("kinemate-tiny") != model_id("magicanimate")
    for i in (0, 20, 30, 63):  # any single flipped bit is caught by magic or CRC
        bad = bits.copy()
        bad[i] ^= 1
        assert Payload.from_bits(bad) is None
    rng = np.random.default_rng(0)
    assert all(Payload.from_bits(rng.integers(0, 2, 64)) is None for _ in range(200))


def test_level_keeps_two_pixels_per_cell():
    assert level_for(512, 512) == 256
    assert level_for(256, 384) == 128
    assert level_for(200, 300) == 64


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_embed_detect_real_photo(photos, name):
    img = photos[name]
    marked = embed(img, PAYLOAD)
    assert marked.shape == img.shape and marked.dtype == np.uint8
    assert psnr(img, marked) >= 38.0
    found = detect(marked)
    assert found.detected and found.payload == PAYLOAD
    assert found.confidence > 0.999999
    assert not detect(img).detected


def test_embed_detect_demo_reference_photo(demo_inputs):
    from kinemate.io import read_image

    img = cv2.resize(read_image(demo_inputs / "monalisa.png"), (512, 512), interpolation=cv2.INTER_AREA)
    marked = embed(img, PAYLOAD)
    assert psnr(img, marked) >= 38.0
    assert detect(marked).payload == PAYLOAD
    assert not detect(img).detected


def test_synthetic_flat_and_gradient_frames():
    flat = np.full((256, 256, 3), 120, np.uint8)
    yy, xx = np.mgrid[0:256, 0:256]
    grad = np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.uint8)
    for img in (flat, grad):
        assert detect(embed(img, PAYLOAD)).payload == PAYLOAD
        assert not detect(img).detected


@pytest.mark.parametrize(
    "attack",
    ["resize75", "resize125", "crop3_topleft", "crop5_centre", "crop4_one_side", "jpeg80"],
)
def test_survives_resize_crop_jpeg(photos, attack):
    marked = embed(photos["coffee"], PAYLOAD)
    h, w = marked.shape[:2]
    if attack == "resize75":
        out = cv2.resize(marked, (w * 3 // 4, h * 3 // 4), interpolation=cv2.INTER_AREA)
    elif attack == "resize125":
        out = cv2.resize(marked, (w * 5 // 4, h * 5 // 4), interpolation=cv2.INTER_CUBIC)
    elif attack == "crop3_topleft":
        out = marked[int(h * 0.03):, int(w * 0.03):]
    elif attack == "crop5_centre":
        out = marked[int(h * 0.025): h - int(h * 0.025), int(w * 0.025): w - int(w * 0.025)]
    elif attack == "crop4_one_side":
        out = marked[:, int(w * 0.04):]
    else:
        ok, buf = cv2.imencode(".jpg", marked[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    found = detect(np.ascontiguousarray(out))
    assert found.payload == PAYLOAD, f"{attack}: sync z {found.sync_z:.1f}"
    assert found.bit_accuracy(PAYLOAD) == 1.0


def test_convolutional_code_corrects_bit_errors():
    from kinemate.provenance.watermark import CODED_BITS, conv_encode, viterbi_decode

    coded = conv_encode(PAYLOAD.to_bits())
    assert coded.shape == (CODED_BITS,)
    soft = coded.astype(np.float64) * 2 - 1
    assert Payload.from_bits(viterbi_decode(soft)) == PAYLOAD
    rng = np.random.default_rng(3)
    noisy = soft.copy()
    flip = rng.choice(CODED_BITS, size=8, replace=False)  # 8 spread-out raw errors (~6 %)
    noisy[flip] *= -0.5
    assert Payload.from_bits(viterbi_decode(noisy)) == PAYLOAD
    # pure noise never decodes to a valid payload (32 check bits)
    assert all(Payload.from_bits(viterbi_decode(rng.normal(size=CODED_BITS))) is None
               for _ in range(200))
