"""The panel's colours and drawing: matplotlib's ``jet`` rebuilt without matplotlib, and the
panel drawn with PIL (cells, titles, the dark-map mark, a box, a target's outline)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ort_cam.render import CELL_H, CELL_W, FIREBRICK, colormap, overlay, save_panel
from ort_cam.result import Explanation, MethodResult


def test_jet_is_matplotlibs_colour_for_colour():
    matplotlib = pytest.importorskip("matplotlib")
    values = np.random.default_rng(0).random(100_000)
    values[:5] = [0.0, 1.0, 0.5, 1 / 256, 255 / 256]  # the ends and bin edges
    np.testing.assert_array_equal(colormap(values), matplotlib.colormaps["jet"](values)[..., :3])


def test_overlay_blends_half_and_half_and_keeps_the_image_where_the_map_is_nan():
    pixels = np.full((2, 2, 3), 200, np.uint8)
    heat = np.array([[0.0, 1.0], [np.nan, 0.5]])
    out = overlay(pixels, heat)
    # jet(0) = (0, 0, 0.5) and jet(1) = (0.5, 0, 0), from matplotlib's definition of jet
    for (i, j), color in (((0, 0), [0.0, 0.0, 0.5]), ((0, 1), [0.5, 0.0, 0.0])):
        want = np.round(255 * (0.5 * 200 / 255 + 0.5 * np.array(color)))
        np.testing.assert_array_equal(out[i, j], want)
    np.testing.assert_array_equal(out[1, 0], [200, 200, 200])


def _explanation(dark: bool) -> Explanation:
    ramp = np.linspace(0.0, 1.0, 64 * 48).reshape(48, 64)
    res = MethodResult("gradcam", np.zeros((3, 4)), ramp, dark, {})
    r = Explanation(target=3, label="cat", score=0.5, scores=np.zeros(5),
                    scores_path=np.zeros(1), steps=0, methods={"gradcam": res},
                    score_mode="probability", layer="conv")
    r.pixels = np.full((48, 64, 3), 128, np.uint8)
    return r


@pytest.mark.parametrize("dark", [False, True])
def test_panel_cells_titles_and_the_dark_mark(tmp_path, dark):
    path = save_panel(_explanation(dark), tmp_path / "p.png", box=(8, 8, 40, 30))
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (CELL_H, 2 * CELL_W, 3)  # the input and one overlay
    red = np.all(image[:60, CELL_W:] == FIREBRICK, axis=-1).sum()  # the overlay's title
    assert (red > 20) == dark  # a dark map's title is in firebrick, else in black
    picture = image[80:360, CELL_W + 20:2 * CELL_W - 20].reshape(-1, 3).astype(int)
    assert (np.abs(picture - 128).max(axis=1) > 40).sum() > 1000  # the map's colours
    left = image[80:360, 20:CELL_W - 20].reshape(-1, 3)
    assert np.all(left == 255, axis=1).sum() > 50  # the box's white dashes on the grey input


def test_a_segment_targets_outline_is_drawn_on_the_input(tmp_path):
    r = _explanation(False)
    r.target_record, r.target_kind = {"kind": "segment"}, "segment"
    r.target_mask = np.zeros((4, 4), bool)
    r.target_mask[1:3, 1:3] = True  # a square in the middle of the grid
    plain = np.asarray(Image.open(save_panel(_explanation(False), tmp_path / "a.png")))
    marked = np.asarray(Image.open(save_panel(r, tmp_path / "b.png")))
    changed = np.any(plain[:, :CELL_W] != marked[:, :CELL_W], axis=-1)
    assert changed[60:].sum() > 100  # the outline (title text may differ: the kind is named)
    assert np.all(marked[60:, :CELL_W][changed[60:]] == 255)  # drawn in white
