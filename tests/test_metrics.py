"""Audit metrics on cases worked out by hand: inside, outside, half and half, ties, empty
maps and boxes at the border."""

import numpy as np
import pytest

from ort_cam.audit import metrics as M

BOX = (1, 1, 3, 3)  # x0, y0, x1, y1: the centre 2x2 of a 4x4 grid


def inside():
    s = np.zeros((4, 4))
    s[1:3, 1:3] = 1.0
    return s


def test_map_exactly_inside_the_box():
    s = inside()
    assert M.pixel_energy(s, BOX) == 1.0
    assert M.bbox_score(s, BOX) == 1.0
    r = M.region_scores(s, BOX, thresholds=[0.5])
    assert r == {"iou": [1.0], "iob": [1.0], "ior": [1.0]}


def test_map_outside_the_box():
    s = 1.0 - inside()
    assert M.pixel_energy(s, BOX) == 0.0
    assert M.bbox_score(s, BOX) == 0.0
    r = M.region_scores(s, BOX, thresholds=[0.5])
    assert r["iou"] == [0.0] and r["iob"] == [0.0] and r["ior"] == [0.0]


def test_half_and_half():
    s = np.zeros((4, 4))
    s[1:3, 2:4] = 1.0  # columns 2-3: half in the box (column 2), half out (column 3)
    assert M.pixel_energy(s, BOX) == 0.5
    assert M.bbox_score(s, BOX) == 0.5
    r = M.region_scores(s, BOX, thresholds=[0.5, 0.9])
    # |R∩B| = 2, |R| = 4, |B| = 4, |R∪B| = 6
    assert r["iou"] == [pytest.approx(2 / 6)] * 2 and r["iob"] == [0.5, 0.5]
    assert r["ior"] == [0.5, 0.5]
    # graded map: 0.8 inside, 0.4 outside-half; t = 0.5 keeps only the inside half
    s[1:3, 3] = 0.4
    s[1:3, 2] = 0.8
    r = M.region_scores(s, BOX, thresholds=[0.3, 0.5])
    assert r["iob"] == [0.5, 0.5] and r["ior"] == [0.5, 1.0]
    assert M.pixel_energy(s, BOX) == pytest.approx(1.6 / 2.4)


def test_ties_bbox_score_counts_exactly_n_pixels():
    s = np.ones((4, 4))  # all tied: the first n = 4 pixels in order are row 0: none in B
    assert M.bbox_score(s, BOX) == 0.0
    assert M.pixel_energy(s, BOX) == 0.25
    assert M.region_scores(s, BOX, thresholds=[0.5])["iob"] == [1.0]


def test_empty_map():
    s = np.zeros((4, 4))
    assert np.isnan(M.pixel_energy(s, BOX))
    r = M.region_scores(s, BOX, thresholds=[0.5])
    assert r["iou"] == [0.0] and r["iob"] == [0.0] and np.isnan(r["ior"][0])
    assert M.dark_counts([s, inside()], eps=[1e-8, 2.0]) == {1e-8: 1, 2.0: 2}


def test_box_at_and_beyond_the_border():
    s = np.zeros((4, 4))
    s[0, 3] = 1.0  # top-right corner pixel
    box = (3, -2, 7, 1)  # clipped to column 3, row 0
    assert M.box_mask((4, 4), box).sum() == 1
    assert M.pixel_energy(s, box) == 1.0 and M.bbox_score(s, box) == 1.0
    assert M.region_scores(s, box, thresholds=[0.5])["iou"] == [1.0]


def test_average_drop_and_increase_by_hand():
    y, o = [0.8, 0.5, 0.2], [0.4, 0.6, 0.2]
    # drops: 0.4/0.8 = 0.5, 0 (increase), 0  -> mean 1/6; increases: 1 of 3
    drops = [M.confidence_drop(a, b) for a, b in zip(y, o)]
    assert drops == [0.5, 0.0, 0.0]  # 0.8 − 0.4 = 0.4 and 0.4 / 0.8 = 0.5 exactly in binary
    assert np.mean(drops) == pytest.approx(1 / 6)
    increases = [M.confidence_increase(a, b) for a, b in zip(y, o)]
    assert increases == [False, True, False] and np.mean(increases) == pytest.approx(1 / 3)


def test_explanation_maps():
    pixels = np.full((2, 5, 3), 100, np.uint8)
    s = np.array([[0.0, 0.5, 1.0, 0.25, 0.75], [0.1, 0.2, 0.3, 0.4, 0.6]])
    soft = M.explanation_map(pixels, s, "soft")
    np.testing.assert_allclose(soft[..., 1], 100 * s)
    mask = M.explanation_map(pixels, s, "mask", top=0.2)  # 2 of 10 pixels: 1.0 and 0.75
    kept = mask[..., 0] > 0
    assert kept.sum() == 2 and kept[0, 2] and kept[0, 4]


def test_deletion_insertion_helpers():
    s = np.array([[0.9, 0.1], [0.5, 0.3]])
    masks = M.deletion_insertion_orders(s, steps=4)
    assert [int(m.sum()) for m in masks] == [0, 1, 2, 3, 4]
    assert masks[1][0, 0] and masks[2][1, 0] and masks[3][1, 1]
    assert M.curve_auc([1.0, 1.0, 1.0]) == 1.0
    assert M.curve_auc([0.0, 1.0]) == 0.5
    assert M.curve_auc([1.0, 0.5, 0.0, 0.0, 0.0]) == pytest.approx((0.75 + 0.25) / 4)


def test_union_of_boxes_as_a_mask():
    s = inside()
    region = M.boxes_mask((4, 4), [(0, 0, 2, 1), (1, 1, 3, 3)])  # row-0 strip + the centre
    assert region.sum() == 2 + 4
    assert M.pixel_energy(s, region) == 1.0
    # n = 6: the 4 ones are in the region, then ties at 0 by pixel order: (0,0), (0,1) are in
    assert M.bbox_score(s, region) == 1.0
    assert M.region_scores(s, region, thresholds=[0.5]) == {"iou": [4 / 6], "iob": [4 / 6],
                                                            "ior": [1.0]}
    with pytest.raises(ValueError, match="shape"):
        M.pixel_energy(s, np.zeros((3, 3), bool))


def test_deletion_and_insertion_images_by_hand():
    pixels = np.full((2, 2, 3), 100, np.uint8)
    sal = np.array([[0.9, 0.1], [0.5, 0.3]])  # order: (0,0), (1,0), (1,1), (0,1)
    dele, ins = M.deletion_insertion_images(pixels, sal, steps=2)
    assert dele.shape == ins.shape == (3, 2, 2, 3)
    # s = 1 deletes ceil(2/4) = 2 pixels: (0,0) and (1,0)
    np.testing.assert_array_equal(dele[1][..., 0], [[0, 100], [0, 100]])
    np.testing.assert_array_equal(ins[1][..., 0], [[100, 0], [100, 0]])
    assert dele[0].min() == 100 and dele[2].max() == 0
    assert ins[0].max() == 0 and ins[2].min() == 100
    assert M.curve_auc([1.0, 0.5, 0.0]) == 0.5
