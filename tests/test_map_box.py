"""Boxes from original-image pixels to the model's input grid, through each resize mode:
worked out by hand, then checked against where ``resize_image`` really puts a drawn box."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ort_cam.preprocess import Preprocess


def test_stretch_by_hand():
    pre = Preprocess(size=(50, 50), resize="stretch")
    # 200x100 -> 50x50: x / 4, y / 2
    assert pre.geometry((200, 100)) == (0.25, 0.5, 0.0, 0.0)
    assert pre.map_box((20, 10, 120, 60), (200, 100)) == (5, 5, 30, 30)


def test_crop_by_hand():
    pre = Preprocess(size=(56, 56), resize="crop")  # crop_ratio 0.875: short side to 64
    # 200x100: scale 0.64 -> 128x64, then the centre 56x56 starts at (36, 4)
    assert pre.geometry((200, 100)) == (0.64, 0.64, -36.0, -4.0)
    assert pre.map_box((100, 50, 150, 100), (200, 100)) == (28, 28, 56, 56)  # clipped at 56
    assert pre.map_box((0, 0, 50, 100), (200, 100)) == (0, 0, 0, 56)  # cut off: empty


def test_letterbox_by_hand():
    pre = Preprocess(size=(50, 50), resize="letterbox")
    # 200x100: scale 0.25 -> 50x25, pasted 12 rows down
    assert pre.geometry((200, 100)) == (0.25, 0.25, 0.0, 12.0)
    # y edges 10 -> 14.5 and 60 -> 27: 14.5 rounds half up to 15
    assert pre.map_box((20, 10, 120, 60), (200, 100)) == (5, 15, 30, 27)


@pytest.mark.parametrize("resize", ["stretch", "crop", "letterbox"])
@pytest.mark.parametrize("size", [(300, 200), (200, 300), (123, 77)])
def test_map_box_matches_resize_image(resize, size):
    """A white box drawn in a black image lands where map_box says (within a pixel of
    interpolation blur)."""
    w0, h0 = size
    box = (round(0.3 * w0), round(0.4 * h0), round(0.6 * w0), round(0.9 * h0))
    img = np.zeros((h0, w0, 3), np.uint8)
    img[box[1]:box[3], box[0]:box[2]] = 255
    pre = Preprocess(size=(64, 48), resize=resize)  # H=64, W=48
    out = pre.resize_image(Image.fromarray(img))[..., 0]
    ys, xs = np.nonzero(out > 127)
    seen = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    mapped = pre.map_box(box, (w0, h0))
    assert np.abs(np.subtract(seen, mapped)).max() <= 1, (seen, mapped)
