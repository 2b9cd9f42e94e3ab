"""ROAD and ARCC (ort_cam/audit/metrics.py): values worked out by hand, and pytorch-grad-cam's
own functions (``metrics/road.py``, ``metrics/arcc.py``) as the reference where it has them."""

from __future__ import annotations

import numpy as np
import pytest

from ort_cam.audit.metrics import (
    arcc,
    coherency,
    complexity,
    noisy_linear_impute,
    road_removed,
    road_scores,
)


def test_road_removed_by_hand():
    sal = (np.arange(10) / 9).reshape(2, 5)
    # the 80th percentile of i/9, i = 0..9, is 7.2/9: MoRF removes i = 8, 9
    assert np.flatnonzero(road_removed(sal, 80, most_relevant=True)).tolist() == [8, 9]
    # LeRF: 1 − i/9 ≥ 7.2/9, i.e. i ≤ 1.8
    assert np.flatnonzero(road_removed(sal, 80, most_relevant=False)).tolist() == [0, 1]


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_imputation_by_hand(solver):
    if solver == "direct":  # SciPy's sparse LU: scipy is optional (the cg solver is NumPy's)
        pytest.importorskip("scipy.sparse.linalg")
    img = np.arange(9, dtype=float).reshape(3, 3) ** 2
    # the centre: Σ w·v over the 8 neighbours (edges 1/6, diagonals 1/12; Σ w = 1)
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    edges, diags = img[0, 1] + img[1, 0] + img[1, 2] + img[2, 1], img[0, 0] + img[0, 2] + \
        img[2, 0] + img[2, 2]
    centre = noisy_linear_impute(img, removed, solver=solver)[1, 1]
    assert centre == pytest.approx(edges / 6 + diags / 12)
    # a corner has three neighbours in the grid: (v01/6 + v10/6 + v11/12) / (5/12)
    removed = np.zeros((3, 3), bool)
    removed[0, 0] = True
    want = (img[0, 1] / 6 + img[1, 0] / 6 + img[1, 1] / 12) / (5 / 12)
    assert noisy_linear_impute(img, removed, solver=solver)[0, 0] == pytest.approx(want)
    # two unknowns side by side on a 1×4 strip: u1 = (a + u2)/2, u2 = (u1 + b)/2, i.e. the
    # straight line between a and b; known pixels are kept, channels imputed apart
    strip = np.stack([np.array([[3.0, 0.0, 0.0, 9.0]]), np.array([[1.0, 0.0, 0.0, -2.0]])], -1)
    removed = np.array([[False, True, True, False]])
    out = noisy_linear_impute(strip, removed, solver=solver)
    np.testing.assert_allclose(out[0, :, 0], [3, 5, 7, 9])
    np.testing.assert_allclose(out[0, :, 1], [1, 0, -1, -2])


def test_imputation_noise_touches_only_the_removed_pixels():
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 255, (6, 7, 3))
    removed = rng.uniform(size=(6, 7)) < 0.5
    quiet = noisy_linear_impute(img, removed)
    noisy = noisy_linear_impute(img, removed, noise=2.0, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(noisy[~removed], img[~removed])
    assert 1.0 < np.std(noisy[removed] - quiet[removed]) < 3.0


def test_imputation_solves_pytorch_grad_cams_system():
    """Against the sparse system of pytorch-grad-cam's NoisyLinearImputer (its own
    setup_sparse_system), solved in float64 by scipy: agreement to the solver tolerance."""
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    sparse = pytest.importorskip("scipy.sparse")
    linalg = pytest.importorskip("scipy.sparse.linalg")
    rng = np.random.default_rng(0)
    img = rng.uniform(-2, 2, (3, 23, 17))  # C×H×W, as pytorch-grad-cam takes it
    keep = (rng.uniform(size=(23, 17)) > 0.7).astype(np.float64)
    a, b = road.NoisyLinearImputer.setup_sparse_system(keep, img, road.neighbors_weights)
    solved = linalg.spsolve(sparse.csc_matrix(a), b)  # [n_removed, C]
    ref = img.reshape(3, -1).copy()
    ref[:, np.flatnonzero(keep.reshape(-1) == 0)] = solved.T
    for solver in ("direct", "cg"):
        ours = noisy_linear_impute(img.transpose(1, 2, 0), keep == 0, solver=solver)
        err = np.abs(ours.transpose(2, 0, 1).reshape(3, -1) - ref).max() / np.abs(ref).max()
        assert err < 1e-7, (solver, err)  # cg: tol 1e-8 of the residual


def test_road_matches_pytorch_grad_cam(monkeypatch):
    """ROADCombined of pytorch-grad-cam (its imputation noise set to 0) on a small torch model
    against road_scores with the same score: float32 agreement."""
    torch = pytest.importorskip("torch")
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    monkeypatch.setattr(road.NoisyLinearImputer.__init__, "__defaults__",
                        (0.0, road.neighbors_weights))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3)).eval()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    cam = rng.uniform(size=(12, 12)).astype(np.float32)
    with torch.no_grad():
        ref = road.ROADCombined()(torch.from_numpy(x), cam[None], [ClassifierOutputTarget(1)],
                                  model)[0]

    def score(images):
        with torch.no_grad():
            t = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32))
            return model(t)[:, 1].double().numpy()

    ours = road_scores(score, x[0].transpose(1, 2, 0).astype(np.float64), cam.astype(np.float64))
    assert ours["combined"] == pytest.approx(float(ref), abs=1e-6)
    assert ours["combined"] == pytest.approx((ours["lerf"] - ours["morf"]) / 2)


def test_road_of_a_constant_image_is_zero():
    img = np.full((8, 8, 3), 7.0)
    sal = np.random.default_rng(0).uniform(size=(8, 8))
    r = road_scores(lambda ims: ims.mean(axis=(1, 2, 3)), img, sal)
    assert r == {"morf": pytest.approx(0.0, abs=1e-9), "lerf": pytest.approx(0.0, abs=1e-9),
                 "combined": pytest.approx(0.0, abs=1e-9)}


def test_complexity_coherency_arcc_by_hand():
    sal = np.array([[0.0, 0.5], [1.0, 0.5]])
    assert complexity(sal) == 0.5
    # a map against itself: ρ = 1 (up to the 1e-8 in the denominator); against 1 − itself: −1.
    # That 1e-8 moves the results by 3e-8 (measured, in float64, the same on any CPU): the
    # abs=1e-7 below is that offset, not rounding noise (~1e-16 here)
    assert coherency(sal, sal) == pytest.approx(1.0, abs=1e-7)
    assert coherency(sal, 1 - sal) == pytest.approx(0.0, abs=1e-7)
    # 3 / (1/1 + 1/(1 − 0.5) + 1/clip(2·0.25)) = 3/5
    assert arcc(0.5, 1.0, 0.25) == pytest.approx(0.6, rel=1e-7)
    assert arcc(0.5, 1.0, -0.1) == pytest.approx(0.0, abs=1e-7)  # ROAD clipped at 0


def test_complexity_and_coherency_match_pytorch_grad_cam():
    arcc_mod = pytest.importorskip("pytorch_grad_cam.metrics.arcc")
    rng = np.random.default_rng(4)
    a, b = rng.uniform(size=(2, 9, 11))
    assert complexity(a) == pytest.approx(float(arcc_mod.Complexity()(a[None])[0]), rel=1e-12)
    want = (arcc_mod.batch_pearson_coherency(b[None], a[None])[0] + 1) / 2
    assert coherency(a, b) == pytest.approx(float(want), rel=1e-12)
