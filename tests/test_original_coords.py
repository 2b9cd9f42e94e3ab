"""Maps on the original image's pixel grid: the resize, centre crop or letterbox undone
(``Explanation.photo_map``, ``explain --original``: <method>_map_original in the npz and the
panel drawn on the image).

Hand-worked check: a raw map that is linear in the layer's coordinates, f(i, j) = a·i + b·j + c,
is reproduced exactly by bilinear sampling (away from the clamped border half-cell), so the map
on each photo pixel must be f at that pixel's layer coordinates: the pixel centre (x + ½) goes
to the model input as (x + ½)·sx + dx (``Preprocess.geometry``), and to the layer as
model · (layer size / model size) − ½; then normalised with the model-size map's min and max.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from kind_models import dynamic_hw_files
from PIL import Image

import ort_cam
from ort_cam.cli import main
from ort_cam.maps import normalize, to_photo, upsample
from ort_cam.preprocess import Preprocess

LAYER = (8, 8)
MODEL = (32, 32)


def linear_raw() -> np.ndarray:
    i, j = np.meshgrid(np.arange(LAYER[0]), np.arange(LAYER[1]), indexing="ij")
    return 0.7 * i - 0.3 * j + 2.0


def expected(photo_size, pre: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """f at each photo pixel's layer coordinates, normalised; and where both coordinates are
    at least half a cell inside the layer grid (no clamping there)."""
    sx, sy, dx, dy = pre.geometry(photo_size)
    w0, h0 = photo_size
    li = ((np.arange(h0) + 0.5) * sy + dy) * LAYER[0] / MODEL[0] - 0.5
    lj = ((np.arange(w0) + 0.5) * sx + dx) * LAYER[1] / MODEL[1] - 0.5
    f = 0.7 * li[:, None] - 0.3 * lj[None, :] + 2.0
    up = upsample(linear_raw(), MODEL)
    inside = ((li >= 0) & (li <= LAYER[0] - 1))[:, None] & ((lj >= 0) & (lj <= LAYER[1] - 1))
    return (f - up.min()) / (up.max() - up.min() + 1e-8), inside


@pytest.mark.parametrize("resize", ["stretch", "crop", "letterbox"])
@pytest.mark.parametrize("photo_size", [(50, 20), (20, 50), (32, 32)])
def test_photo_map_undoes_the_preprocessing(resize, photo_size):
    pre = Preprocess(size=MODEL, resize=resize)
    got = to_photo(linear_raw(), MODEL, pre.geometry(photo_size), photo_size)
    want, inside = expected(photo_size, pre)
    assert got.shape == (photo_size[1], photo_size[0])
    seen = ~np.isnan(got)
    np.testing.assert_allclose(got[seen & inside], want[seen & inside], rtol=0, atol=1e-12)
    if resize == "crop":  # the margins outside the centre crop are cut away
        sx, sy, dx, dy = pre.geometry(photo_size)
        x = (np.arange(photo_size[0]) + 0.5) * sx + dx
        y = (np.arange(photo_size[1]) + 0.5) * sy + dy
        lost = ((y < 0) | (y > MODEL[0]))[:, None] | ((x < 0) | (x > MODEL[1]))[None, :]
        assert lost.any() and np.array_equal(np.isnan(got), lost)
    else:
        assert seen.all()


def test_photo_map_of_an_unchanged_size_is_the_model_map():
    pre = Preprocess(size=MODEL, resize="stretch")
    raw = np.random.default_rng(0).standard_normal(LAYER)
    got = to_photo(raw, MODEL, pre.geometry((MODEL[1], MODEL[0])), (MODEL[1], MODEL[0]))
    np.testing.assert_allclose(got, normalize(upsample(raw, MODEL)), rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return dynamic_hw_files(tmp_path_factory.mktemp("photo"), "wide.png", (30, 60), seed=1)


def test_explanation_photo_map_and_cli_original(files, tmp_path):
    ex = ort_cam.Explainer(files["model"], "relu", size=(16, 16), cache=False, quiet=True,
                           preprocess={"preset": "raw", "resize": "crop"})
    r = ex.explain(files["img"], steps=2)
    m = r.photo_map("gradcam")
    assert m.shape == (30, 60) and r.photo.size == (60, 30)
    sx, _, dx, _ = ex.preprocess.geometry((60, 30))
    cut = np.isnan(m[15])  # a middle row (the crop cuts a row off the top too)
    x = (np.arange(60) + 0.5) * sx + dx
    assert np.array_equal(cut, (x < 0) | (x > 16)) and 0 < cut.sum() < 60  # a centre crop
    res = CliRunner().invoke(main, ["explain", str(files["model"]), str(files["img"]),
                                    "--layer", "relu", "--size", "16x16", "--preprocess", "raw",
                                    "--resize", "crop", "--steps", "2", "--original",
                                    "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 0, res.output
    z = np.load(tmp_path / "o" / "wide.npz")
    np.testing.assert_array_equal(z["gradcam_map_original"], m)
    assert z["gradcam_map"].shape == (16, 16)
    assert Image.open(tmp_path / "o" / "wide.png").size[0] > 0
    assert json.loads(res.output.splitlines()[-1])["stem"] == "wide"
    res = CliRunner().invoke(main, ["explain", str(files["model"]), str(files["img"]),
                                    "--layer", "relu", "--size", "16x16", "--preprocess", "raw",
                                    "--steps", "2", "--out", str(tmp_path / "p")])
    assert "gradcam_map_original" not in np.load(tmp_path / "p" / "wide.npz").files


def test_photo_map_follows_exif_orientation(files, tmp_path):
    a = np.random.default_rng(2).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide, 20 high; shown 20 wide, 40 high
    Image.fromarray(a).save(tmp_path / "turned.png", exif=exif)
    ex = ort_cam.Explainer(files["model"], "relu", size=(16, 16), cache=False, quiet=True,
                           preprocess="raw")
    assert ex.explain(tmp_path / "turned.png", steps=2).photo_map("gradcam").shape == (40, 20)
