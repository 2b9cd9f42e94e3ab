"""The sanity checks' similarities (ort_cam.audit.similarity, NumPy only): by hand on small
maps, and against SciPy's spearmanr and scikit-image's structural_similarity and hog (test
dependencies; skipped where absent)."""

from __future__ import annotations

import numpy as np
import pytest

from ort_cam.audit import similarity as S


def test_ranks_and_spearman_by_hand():
    np.testing.assert_array_equal(S.rank_average([0.0, 0.0, 1.0, 0.5]), [1.5, 1.5, 4.0, 3.0])
    np.testing.assert_array_equal(S.rank_average([[2.0, 2.0], [2.0, 2.0]]), [2.5] * 4)
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert S.spearman(a, a) == pytest.approx(1.0, abs=1e-15)
    assert S.spearman(a, -a) == pytest.approx(-1.0, abs=1e-15)
    assert S.spearman(a, -a, absolute=True) == pytest.approx(1.0, abs=1e-15)
    # ranks [1, 2, 3, 4] against [2, 1, 4, 3]: Pearson of the ranks = 1 − 6·4/(4·15) = 0.6
    assert S.spearman(a, np.array([[2.0, 1.0], [4.0, 3.0]])) == pytest.approx(0.6, abs=1e-15)
    assert np.isnan(S.spearman(a, np.zeros((2, 2))))  # a constant map has no ranking


def test_a_dark_map_has_no_similarity():
    a = np.random.default_rng(0).random((32, 32))
    assert all(np.isnan(v) for v in S.similarities(a, a, dark=True).values())
    assert S.similarities(a, a) == pytest.approx(dict.fromkeys(S.NAMES, 1.0), abs=1e-12)


def test_ssim_of_one_window_by_hand():
    """A 7x7 pair: one window, SSIM's formula written out with the sample covariance."""
    rng = np.random.default_rng(3)
    x, y = rng.random((7, 7)), rng.random((7, 7))
    n = 49
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    cxy = ((x - mx) * (y - my)).sum() / (n - 1)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    want = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    assert S.ssim(x, y) == pytest.approx(want, abs=1e-14)
    assert S.ssim(x, x) == pytest.approx(1.0, abs=1e-14)


def test_hog_of_a_vertical_edge_by_hand():
    """A step from 0 to 1 between columns 11 and 12 of a 24x24 map: the gradient (centred
    differences) is 1 at columns 11 and 12 and points along x (orientation 0°, bin 0), so
    each cell (r, 1) holds 16 pixels of magnitude 1 of its 64: 0.25 in bin 0, nothing
    elsewhere; the one 3x3 block normalised (0.25·√3 > 0.2 clips every value to 0.2, then
    the L2 norm again): 1/√3 in those three places."""
    x = np.zeros((24, 24))
    x[:, 12:] = 1.0
    h = S.hog(x).reshape(3, 3, 9)  # one block of 3x3 cells
    assert np.count_nonzero(h) == 3 and np.all(h[:, 1, 0] > 0)  # cells (r, 1), bin 0
    np.testing.assert_allclose(h[:, 1, 0], 1 / np.sqrt(3), rtol=1e-9)
    assert S.hog_similarity(x, x) == pytest.approx(1.0, abs=1e-14)
    assert np.isnan(S.hog_similarity(x, np.zeros_like(x)))


def _pairs():
    """Map pairs like the checks compare: normalised, with ties at 0 (ReLU), several sizes."""
    rng = np.random.default_rng(0)
    for shape in [(96, 96), (224, 224), (50, 70), (33, 41)]:
        for _ in range(3):
            a = rng.random(shape)
            b = 0.6 * a + 0.4 * rng.random(shape)
            a[a < 0.3], b[b < 0.35] = 0.0, 0.0
            yield a / a.max(), b / b.max()


def test_spearman_equals_scipy():
    from_scipy = pytest.importorskip("scipy.stats")
    for a, b in _pairs():
        want = from_scipy.spearmanr(a.ravel(), b.ravel())[0]
        assert S.spearman(a, b) == pytest.approx(want, abs=1e-12)
        want_abs = from_scipy.spearmanr(np.abs(a - 0.5).ravel(), np.abs(b - 0.5).ravel())[0]
        assert S.spearman(a - 0.5, b - 0.5, absolute=True) == pytest.approx(want_abs, abs=1e-12)


def test_ssim_equals_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    for a, b in _pairs():
        want = metrics.structural_similarity(a, b, data_range=1.0)
        # both in float64; measured ≤ 1.6e-15 apart (the window sums taken in another order)
        assert S.ssim(a, b) == pytest.approx(want, abs=1e-12)
        flat = metrics.structural_similarity(a.ravel(), b.ravel(), data_range=1.0)
        assert S.ssim(a.ravel(), b.ravel()) == pytest.approx(flat, abs=1e-12)  # 1-D signals


def test_hog_equals_scikit_image():
    feature = pytest.importorskip("skimage.feature")
    for a, b in _pairs():
        mine, theirs = S.hog(a), feature.hog(a)
        assert mine.shape == theirs.shape
        # scikit-image sums each cell's magnitudes in float32 (its Cython `cdef float total`):
        # measured ≤ 3.0e-8 apart on these maps, against 1e-6
        assert np.abs(mine - theirs).max() <= 1e-6
        sk = np.corrcoef(feature.hog(a), feature.hog(b))[0, 1]
        assert S.hog_similarity(a, b) == pytest.approx(sk, abs=1e-6)
