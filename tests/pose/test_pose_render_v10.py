"""ControlNet v1.0's OpenPose drawing (``style="v1.0"``), which Text2Video-Zero's ControlNet
(lllyasviel/sd-controlnet-openpose) was trained on, against the v1.1 drawing kinemate uses
elsewhere: same colours and widths, limbs at 60 % on black, but keypoints drawn first and each
limb blended 0.4 / 0.6 over what is under it."""

from __future__ import annotations

import numpy as np
import pytest

from kinemate.pose.render import draw_pose
from kinemate.pose.skeleton import BODY_COLORS, LIMB_INTENSITY


def _body() -> np.ndarray:
    body = np.zeros((18, 3), np.float32)
    body[1] = (200, 200, 1.0)  # neck
    body[2] = (300, 200, 1.0)  # right shoulder: limb 0 = (1, 2)
    return body


@pytest.mark.parametrize("style", ["v1.0", "v1.1"])
def test_limb_on_black_is_sixty_percent(style):
    canvas = draw_pose(np.zeros((512, 512, 3), np.uint8), {"body": _body()}, style=style)
    limb = canvas[200, 250]
    np.testing.assert_allclose(limb, [c * LIMB_INTENSITY for c in BODY_COLORS[0]], atol=0.5)
    # the limb is 4 px half-width at 512 px, nothing beyond
    assert canvas[197, 250].any() and not canvas[194, 250].any()


def test_v10_blends_limbs_over_keypoints():
    v10 = draw_pose(np.zeros((512, 512, 3), np.uint8), {"body": _body()}, style="v1.0")
    v11 = draw_pose(np.zeros((512, 512, 3), np.uint8), {"body": _body()}, style="v1.1")
    joint, limb = np.array(BODY_COLORS[1]), np.array(BODY_COLORS[0])
    np.testing.assert_array_equal(v11[200, 201], joint)  # v1.1: joints on top
    np.testing.assert_allclose(v10[200, 201], 0.4 * joint + 0.6 * limb, atol=0.5)
    np.testing.assert_array_equal(v10[200, 197], joint)  # the half of the joint off the limb


def test_text2video_zero_draws_bodies_only():
    from kinemate.models.text2video_zero.denoiser import T2VZDenoiser

    assert T2VZDenoiser.pose_render == {"hands": False, "face": False, "style": "v1.0"}
    hand = np.zeros((21, 3), np.float32)
    hand[:, :2], hand[:, 2] = 100, 1.0
    canvas = draw_pose(np.zeros((512, 512, 3), np.uint8), {"body": _body(), "hand_left": hand},
                       **T2VZDenoiser.pose_render)
    assert not canvas[100, 100].any()
    with pytest.raises(ValueError, match="style"):
        draw_pose(np.zeros((8, 8, 3), np.uint8), {"body": _body()}, style="v2")
