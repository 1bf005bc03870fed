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


def _inside(f, box):
    (x0, y0), (x1, y1) = f.map_points(np.array([[box[0], box[1]], [box[2], box[3]]]))
    return x0 >= -0.5 and y0 >= -0.5 and x1 <= f.dst_wh[0] + 0.5 and y1 <= f.dst_wh[1] + 0.5


def test_crop_keeping_a_box_fills_and_moves_to_it():
    """A person near the top of a portrait: the centred crop cuts them, the keeping crop
    fills the target just the same and holds their whole box, centred where the image allows."""
    box = (300, 300, 700, 1100)  # in a 1080x1920 portrait
    centred = Framing.compute((1080, 1920), (512, 512), "crop")
    assert not _inside(centred, box)
    f = Framing.compute((1080, 1920), (512, 512), "crop", keep_box=box)
    assert f.scaled_wh == centred.scaled_wh and not f.letterboxed  # same zoom, no bars
    assert _inside(f, box) and f.offset_xy[0] == 0
    cy = f.map_points(np.array([500.0, 700.0]))[1]  # the box centre ...
    assert cy == pytest.approx(256, abs=1)  # ... lands in the middle
    top = Framing.compute((1080, 1920), (512, 512), "crop", keep_box=(300, 0, 700, 400))
    assert top.offset_xy == (0, 0) and _inside(top, (300, 0, 700, 400))  # clamped at the top


def test_crop_keeping_a_box_too_big_shows_bars_and_says_so():
    box = (200, 100, 880, 1800)  # a standing person, taller than a square crop of the photo
    f = Framing.compute((1080, 1920), (512, 512), "crop", keep_box=box)
    assert _inside(f, box) and f.letterboxed
    letterbox = Framing.compute((1080, 1920), (512, 512), "letterbox")
    assert f.scale_xy[1] > letterbox.scale_xy[1]  # scaled down just enough, not all the way
    assert f.scaled_wh[1] > 512 and f.scaled_wh[0] < 512  # cropped top/bottom, bars at the sides
    img = np.full((1920, 1080, 3), 90, np.uint8)
    out = f.apply(img)
    bar = f.offset_xy[0]
    assert bar > 0 and (out[:, :bar - 1] == 0).all() and (out[:, bar + 1:512 - bar - 1] == 90).all()
    # the whole image as the box: exactly the letterbox fit
    whole = Framing.compute((1080, 1920), (512, 512), "crop", keep_box=(0, 0, 1080, 1920))
    assert (whole.scaled_wh, whole.offset_xy) == (letterbox.scaled_wh, letterbox.offset_xy)
    # letterbox ignores the box, and a plain crop never shows bars
    assert Framing.compute((1080, 1920), (512, 512), "letterbox", keep_box=box) == letterbox
    assert not Framing.compute((1080, 1920), (512, 512), "crop").letterboxed


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
