"""Preprocessing presets, resize modes and metadata, by hand."""

import numpy as np
import pytest
from cam_models import tiny_cam_model
from PIL import Image

from ort_cam.baselines import make_baseline
from ort_cam.errors import InputError, OrtCamError
from ort_cam.preprocess import (
    Preprocess,
    input_geometry,
    load_image,
    read_metadata,
    resolve_preprocess,
    write_metadata,
)


def test_imagenet_values_by_hand():
    pre = Preprocess(size=(2, 2), scale=1 / 255, mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225))
    pixels = np.zeros((2, 2, 3), np.uint8)
    pixels[0, 0] = (255, 0, 51)
    x = pre.normalize(pixels)
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [(1 - 0.485) / 0.229, -0.456 / 0.224,
                                               (0.2 - 0.406) / 0.225], rtol=1e-6)
    np.testing.assert_allclose(x[0, :, 1, 1], [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225],
                               rtol=1e-6)


def test_caffe_bgr_and_nhwc():
    pre = Preprocess(size=(1, 1), scale=1.0, mean=(103.939, 116.779, 123.68), channels="BGR",
                     layout="NHWC")
    x = pre.normalize(np.array([[[10, 20, 30]]], np.uint8))
    assert x.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(x[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)


def test_black_baseline_is_minus_mean_over_std():
    pre = resolve_preprocess(tiny_cam_model(), ["N", 3, 4, 4], "imagenet")
    pixels = np.full((4, 4, 3), 128, np.uint8)
    x0 = make_baseline("black", pixels, pre.normalize(pixels), pre)
    np.testing.assert_allclose(x0[0, :, 0, 0], [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225],
                               rtol=1e-6)
    assert make_baseline("zeros", pixels, pre.normalize(pixels), pre).max() == 0.0
    a = make_baseline("noise", pixels, pre.normalize(pixels), pre, seed=3)
    b = make_baseline("noise", pixels, pre.normalize(pixels), pre, seed=3)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(OrtCamError, match="unknown baseline"):
        make_baseline("white", pixels, pre.normalize(pixels), pre)


def test_resize_modes_geometry():
    img = Image.fromarray(np.arange(40 * 80 * 3, dtype=np.uint8).reshape(40, 80, 3) % 251)
    same = Preprocess(size=(40, 80), resize="stretch").resize_image(img)
    np.testing.assert_array_equal(same, np.asarray(img))  # same size: left unchanged
    crop = Preprocess(size=(28, 28), resize="crop").resize_image(img)
    assert crop.shape == (28, 28, 3)
    box = Preprocess(size=(20, 20), resize="letterbox").resize_image(img)
    # 80x40 fits 20 wide, 10 high: 5 rows of padding above and below.
    assert box.shape == (20, 20, 3)
    assert box[:5].max() == 0 and box[15:].max() == 0 and box[5:15].max() > 0


def test_crop_matches_torchvision_resize_centercrop():
    tf = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    ours = Preprocess(size=(224, 224), resize="crop").resize_image(img)
    ref = np.asarray(tf.CenterCrop(224)(tf.Resize(256)(img)))
    np.testing.assert_array_equal(ours, ref)


def test_metadata_roundtrip_and_precedence():
    model = tiny_cam_model()
    pre = Preprocess(size=(2, 2), scale=1.0, mean=(1, 2, 3), std=(4, 5, 6), channels="BGR")
    write_metadata(model, pre)
    write_metadata(model, pre)  # replaces, does not duplicate
    assert sum(p.key == "ort_cam.preprocess" for p in model.metadata_props) == 1
    assert read_metadata(model) == pre
    assert resolve_preprocess(model, ["N", 3, 2, 2], None) == pre  # stored wins over default
    assert resolve_preprocess(model, ["N", 3, 2, 2], "raw").mean == (0.0, 0.0, 0.0)


def test_input_geometry():
    assert input_geometry(["N", 3, 224, 200]) == ("NCHW", (224, 200))
    assert input_geometry([1, 160, 192, 3]) == ("NHWC", (160, 192))
    assert input_geometry(["N", 3, "h", "w"]) == ("NCHW", None)


def test_bad_images(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(bad)
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="H×W×3"):
        load_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(OrtCamError, match="resize"):
        Preprocess(resize="squash")
