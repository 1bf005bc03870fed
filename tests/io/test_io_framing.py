import numpy as np
import pytest

from kinemate.errors import UsageError
from kinemate.io import Framing, fit_image, side_by_side


def _marked(w, h):
    img = np.zeros((h, w, 3), np.uint8)
    img[h // 2, w // 2] = 255
    return img


def test_crop_fills_target_centred():
    f = Framing.compute((200, 100), (64, 64), "crop")
    assert f.scaled_wh == (128, 64) and f.offset_xy == (-32, 0)
    out = f.apply(np.full((100, 200, 3), 7, np.uint8))
    assert out.shape == (64, 64, 3) and (out == 7).all()  # no bars when cropping


def test_letterbox_black_bars_and_no_stretch():
    img = np.full((100, 200, 3), 200, np.uint8)
    f = Framing.compute((200, 100), (64, 64), "letterbox")
    assert f.scaled_wh == (64, 32) and f.offset_xy == (0, 16)
    out = f.apply(img)
    assert out.shape == (64, 64, 3)
    assert (out[:16] == 0).all() and (out[48:] == 0).all() and (out[16:48] == 200).all()


@pytest.mark.parametrize("mode", ["crop", "letterbox"])
def test_map_points_follows_pixels(mode):
    src = np.zeros((90, 160, 3), np.uint8)
    src[30:40, 100:110] = 255  # a bright square, centre (105, 35)
    f = Framing.compute((160, 90), (80, 80), mode)
    out = f.apply(src, resample="nearest")
    ys, xs = np.nonzero(out[..., 0] > 127)
    centre = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    np.testing.assert_allclose(f.map_points(np.array([105.0, 35.0])), centre, atol=0.75)
    pts = np.array([[[0.0, 0.0], [160.0, 90.0]]])
    np.testing.assert_allclose(f.unmap_points(f.map_points(pts)), pts)


def test_crop_focus_keeps_point_in_view():
    f = Framing.compute((400, 100), (100, 100), "crop", focus_xy=(380, 50))
    x, _ = f.map_points(np.array([380.0, 50.0]))
    assert 0 <= x < 100
    assert f.offset_xy[0] == 100 - 400  # clamped at the right edge


def test_fit_image_and_errors():
    out = fit_image(_marked(30, 20), (16, 16), "letterbox")
    assert out.shape == (16, 16, 3)
    with pytest.raises(UsageError, match="crop.*letterbox"):
        Framing.compute((10, 10), (5, 5), "stretch")
    with pytest.raises(ValueError):
        Framing.compute((10, 10), (5, 5)).apply(np.zeros((11, 10, 3), np.uint8))


def test_side_by_side_scales_to_one_height():
    a = np.full((100, 50, 3), 10, np.uint8)
    b = np.full((50, 50, 3), 20, np.uint8)
    c = np.full((50, 100), 30, np.uint8)  # gray panel
    grid = side_by_side([a, b, c])
    assert grid.shape == (50, 25 + 50 + 100, 3)
    assert grid[0, 0, 0] == 10 and grid[0, 30, 0] == 20 and grid[0, 100, 2] == 30
    assert side_by_side([a, b], height=200).shape == (200, 100 + 200, 3)
