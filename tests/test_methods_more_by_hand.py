"""The methods read at l = m of the shared pass (HiResCAM, Grad-CAM element-wise, Grad-CAM++,
XGrad-CAM, LayerCAM, EigenGrad-CAM, Eigen-CAM, KPCA-CAM, FEM) on the tiny square-head model of
tests/cam_models.py, against values worked out on paper.

Square head, logit score, class c = 1 (V[1] = [0.5, 2]): y = Σ_k V[1,k]·mean(A_k²) + b, so
G_k = 2·V[1,k]·A_k / Z with Z = 4, i.e. G_0 = A0/4 and G_1 = A1 (A = x: the Relu is the
identity on these non-negative inputs).
"""

from __future__ import annotations

import numpy as np
import pytest
from cam_models import A0, A1, LAYER, X, tiny_cam_model, tiny_cam_model_nhwc
from tolerance import ulps

import ort_cam
from ort_cam.methods.kpca import kernel_component

G0, G1 = A0 / 4, A1
AT_X = ("hirescam", "gradcam_elementwise", "gradcampp", "xgradcam", "layercam",
        "eigengradcam", "eigencam", "kpcacam", "fem")


@pytest.fixture(scope="module")
def square():
    return ort_cam.Explainer(tiny_cam_model(square=True), LAYER, score="logit", quiet=True)


def _raw(ex, method, target=1, **options):
    r = ex.explain_array(X, baseline_array="zeros", target=target, steps=2, methods=[method],
                         **options)
    return r[method].raw


def test_product_maps_by_hand(square):
    # G ⊙ A = A0²/4 and A1², all ≥ 0: HiResCAM, element-wise and LayerCAM coincide here.
    want = A0**2 / 4 + A1**2  # [[16.25, 1.25], [2.25, 5]]
    np.testing.assert_allclose(want, [[16.25, 1.25], [2.25, 5.0]])
    for m in ("hirescam", "gradcam_elementwise", "layercam"):
        np.testing.assert_allclose(_raw(square, m), want, rtol=1e-6)
    # c = 0 (V[0] = [1, −1]): G_0 = A0/2, G_1 = −A1/2.
    # HiResCAM: ReLU(A0²/2 − A1²/2); element-wise: ReLU(A0²/2) + 0; LayerCAM: ReLU(G_0)·A0.
    np.testing.assert_allclose(_raw(square, "hirescam", 0),
                               np.maximum(A0**2 / 2 - A1**2 / 2, 0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_raw(square, "gradcam_elementwise", 0), A0**2 / 2, rtol=1e-6)
    np.testing.assert_allclose(_raw(square, "layercam", 0), A0**2 / 2, rtol=1e-6)


def test_xgradcam_by_hand(square):
    # w_k = Σ A·G / Σ A: w_0 = (30/4)/10 = 0.75, w_1 = 17.25/5.5
    w0, w1 = (30 / 4) / 10, 17.25 / 5.5
    assert (A0 * G0).sum() == 7.5 and (A1 * G1).sum() == 17.25 and A1.sum() == 5.5
    np.testing.assert_allclose(_raw(square, "xgradcam"), w0 * A0 + w1 * A1, rtol=1e-6)


def test_gradcampp_by_hand(square):
    # α = G²/(2G² + (Σ A)·G³) = 1/(2 + ΣA·G) where G ≠ 0:
    #   channel 0: ΣA = 10, G = A/4 -> α = 1/(2 + 2.5·A0);  channel 1: ΣA = 5.5 -> 1/(2 + 5.5·A1)
    # w_k = Σ α·ReLU(G).
    w0 = sum((a / 4) / (2 + 2.5 * a) for a in (1, 2, 3, 4))
    w1 = 4 / 24 + 0.5 / 4.75 + 0 + 1 / 7.5  # the A1 = 0 cell has G = 0: α = 0
    # exactly 1385/4788 (float64, four terms: rounding ~1e-16; the literal 0.2892647 once here
    # was off in its 7th digit, 0.45 of the rel=1e-6 it was given)
    assert w0 == pytest.approx(1385 / 4788, rel=1e-12)
    np.testing.assert_allclose(_raw(square, "gradcampp"), w0 * A0 + w1 * A1, rtol=1e-6)
    # pytorch-grad-cam's ε in the denominator: 1/(2 + ΣA·G + ε/G²) per unit
    eps = 1e-3
    w0e = sum((a / 4) ** 3 / (2 * (a / 4) ** 2 + 10 * (a / 4) ** 3 + eps) for a in (1, 2, 3, 4))
    w1e = sum(a**3 / (2 * a**2 + 5.5 * a**3 + eps) for a in (4, 0.5, 1))
    np.testing.assert_allclose(_raw(square, "gradcampp", gradcampp_eps=eps),
                               w0e * A0 + w1e * A1, rtol=1e-6)


def test_fem_by_hand(square):
    # k = 2: μ + 2σ is 2.5 + 2·1.118 = 4.74 and 1.375 + 2·1.556 = 4.49: nothing above -> 0
    np.testing.assert_array_equal(_raw(square, "fem"), np.zeros((2, 2)))
    # k = 1: thresholds 3.62 and 2.93; one cell of four above in each channel: w = [1/4, 1/4]
    np.testing.assert_allclose(_raw(square, "fem", fem_k=1.0), (A0 + A1) / 4, rtol=1e-6)


def _top_component(m: np.ndarray) -> np.ndarray:
    """Projection of the centred rows of the Z×2 matrix ``m`` on the top eigenvector of its
    2×2 scatter matrix, from the closed form of a symmetric 2×2 eigenproblem."""
    x = m - m.mean(axis=0)
    (a, b), (_, d) = x.T @ x
    lam = (a + d) / 2 + np.sqrt(((a - d) / 2) ** 2 + b * b)
    v = np.array([b, lam - a])
    return x @ (v / np.linalg.norm(v))


def _oriented(proj: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return proj if np.dot(proj - proj.mean(), reference - reference.mean()) >= 0 else -proj


def test_eigen_maps_by_hand(square):
    cells = np.stack([A0.ravel(), A1.ravel()], axis=1)  # Z×K
    want = _oriented(_top_component(cells), (A0 + A1).ravel())
    np.testing.assert_allclose(_raw(square, "eigencam").ravel(), np.maximum(want, 0), atol=1e-6)
    prod = np.stack([(G0 * A0).ravel(), (G1 * A1).ravel()], axis=1)
    want = _oriented(_top_component(prod), prod.sum(axis=1))
    np.testing.assert_allclose(_raw(square, "eigengradcam").ravel(), np.maximum(want, 0),
                               atol=1e-5)
    assert _raw(square, "eigencam").max() > 0  # the orientation keeps the positive lobe


def test_eigen_smooth_takes_the_component_of_the_weighted_activations(square):
    prod = np.stack([(G0 * A0).ravel(), (G1 * A1).ravel()], axis=1)
    want = np.maximum(_oriented(_top_component(prod), prod.sum(axis=1)), 0).reshape(2, 2)
    np.testing.assert_allclose(_raw(square, "hirescam", eigen_smooth=True), want, atol=1e-5)
    np.testing.assert_allclose(_raw(square, "eigengradcam"), want, atol=1e-5)


def test_kpca_linear_kernel_is_pca(square):
    # Centred linear-kernel PCA: K̃ = XXᵀ, √λ₁·v₁ = σ₁u₁ = X v₁, the Eigen-CAM projection.
    np.testing.assert_allclose(_raw(square, "kpcacam", kpca_kernel="linear"),
                               _raw(square, "eigencam"), atol=1e-6)


def test_kpca_matches_scikit_learn():
    decomposition = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(3)
    a = np.maximum(rng.standard_normal((16, 5, 6)), 0)
    x = a.reshape(16, -1).T
    x = x - x.mean(axis=0)
    for kernel in ("sigmoid", "rbf", "poly", "cosine"):
        ref = decomposition.KernelPCA(n_components=1, kernel=kernel).fit_transform(x)[:, 0]
        ours = kernel_component(a, kernel).ravel()
        # the sign of an eigenvector is a convention: compare up to it
        err = min(np.abs(ours - s * ref).max() for s in (1, -1)) / np.abs(ref).max()
        assert err < 1e-9, (kernel, err)


def test_every_method_at_x_ignores_the_path(square):
    # they read A_m and G_m only: the baseline and the number of steps change nothing
    for m in AT_X:
        a = square.explain_array(X, baseline_array="zeros", target=1, steps=2, methods=[m])
        b = square.explain_array(X, baseline_array=X * 0.5, target=1, steps=5, methods=[m])
        np.testing.assert_allclose(a[m].raw, b[m].raw, rtol=1e-12, atol=1e-12)


# --- the methods that run the model or its head ------------------------------------------
Y1 = 0.5 * (A0**2).mean() + 2 * (A1**2).mean() - 0.2  # y_1 at X: 3.75 + 8.625 − 0.2


def test_ablationcam_by_hand(square):
    # zeroing channel 0 leaves 8.625 − 0.2, channel 1 leaves 3.75 − 0.2:
    # w = (y − y^k)/y = [3.75, 8.625] / 12.175
    assert Y1 == pytest.approx(12.175)
    w0, w1 = 3.75 / Y1, 8.625 / Y1
    np.testing.assert_allclose(_raw(square, "ablationcam"), w0 * A0 + w1 * A1, rtol=1e-6)


def test_layerig_by_hand(square):
    # A' = A(0) = 0 and G(αA) = α·2V[1,k]A_k/Z is linear in α: the trapezoid rule is exact,
    # ∫ α dα = 1/2, so attr_k = A_k · V[1,k]·A_k/Z: A0²/8 and A1²/2.
    attr = A0**2 / 8 + A1**2 / 2
    r = square.explain_array(X, baseline_array="zeros", target=1, steps=3, methods=["layerig"])
    np.testing.assert_allclose(r["layerig"].raw, attr, rtol=1e-6)
    # completeness: Σ attr = y(A) − y(A') = 12.175 − (−0.2)
    assert attr.sum() == pytest.approx(Y1 + 0.2)


def test_scorecam_by_hand(square):
    # the 2×2 layer is the input grid: the masks are the channels scaled to [0, 1]
    masks = [(A0 - 1) / 3, A1 / 4]
    s = np.array([0.5 * ((A0 * mk) ** 2).mean() + 2 * ((A1 * mk) ** 2).mean() - 0.2
                  for mk in masks])
    alpha = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    # float32 model runs and a softmax against float64: measured 2.6e-7 relative (2 ulps);
    # ulps(32) (3.8e-6) is 15x that
    np.testing.assert_allclose(_raw(square, "scorecam"), alpha[0] * A0 + alpha[1] * A1,
                               rtol=ulps(32))


def _finer_t(y: np.ndarray, alpha: float) -> float:
    """pytorch-grad-cam's FinerWeightedTarget for c = 1 against classes 0 and 2."""
    p = np.exp(y - y.max()) / np.exp(y - y.max()).sum()
    return sum(p[d] * (y[1] - alpha * y[d]) for d in (0, 2)) / (p[0] + p[2] + 1e-9)


def test_finercam_by_hand(square):
    v = np.array([[1.0, -1.0], [0.5, 2.0], [-1.0, 1.0]])
    means = np.array([(A0**2).mean(), (A1**2).mean()])
    y = v @ means + np.array([0.1, -0.2, 0.3])
    for alpha in (1.0, 0.5):
        # ∂T/∂y by central differences (independent of the method's analytic form) ...
        h = 1e-6
        dt = np.array([(_finer_t(y + h * e, alpha) - _finer_t(y - h * e, alpha)) / (2 * h)
                       for e in np.eye(3)])
        # ... then Grad-CAM on T: G_k = Σ_i dt_i · 2 v[i,k] A_k / Z; w_k = mean G_k
        w = [(dt @ v[:, k]) * 2 * a.mean() / 4 for k, a in enumerate((A0, A1))]
        want = np.maximum(w[0] * A0 + w[1] * A1, 0)
        np.testing.assert_allclose(_raw(square, "finercam", finer_alpha=alpha), want,
                                   rtol=1e-5, atol=1e-6)


def test_run_methods_see_the_layout():
    """NHWC layer and input (tf2onnx style) give the NCHW network's maps."""
    nchw = ort_cam.Explainer(tiny_cam_model(), LAYER, score="logit", quiet=True)
    nhwc = ort_cam.Explainer(tiny_cam_model_nhwc(), LAYER, score="logit", quiet=True,
                             preprocess={"preset": "raw", "layout": "NHWC", "size": (2, 2)})
    names = ["ablationcam", "scorecam", "finercam", "layerig"]
    a = nchw.explain_array(X, baseline_array="zeros", target=0, steps=2, methods=names)
    b = nhwc.explain_array(X.transpose(0, 2, 3, 1), baseline_array="zeros", target=0, steps=2,
                           methods=names)
    for m in names:
        assert a[m].raw.any(), m
        np.testing.assert_allclose(b[m].raw, a[m].raw, rtol=1e-6, atol=1e-9)


def test_run_methods_batch_and_refuse_without_runs(square):
    # run_batch = 1 (one row per session run) gives the batched maps
    for m in ("ablationcam", "scorecam", "layerig"):
        np.testing.assert_allclose(_raw(square, m, run_batch=1), _raw(square, m), rtol=1e-12)
    from ort_cam.engine import PathState
    from ort_cam.methods import METHODS, MethodOptions

    with pytest.raises(ort_cam.OrtCamError, match="runs the model; use it through an Explainer"):
        METHODS["ablationcam"](PathState(m=1), MethodOptions()).finish()


def test_aug_smooth_keeps_an_equivariant_model_map(square):
    # 1×1 conv, ReLU, mean of squares: flipping x flips every map, scaling x by f scales
    # G⊙A by f²: each of the six normalised maps, flipped back, is the plain one
    names = ["gradcam", "rsi", "hirescam", "ablationcam"]
    plain = square.explain_array(X, baseline_array="zeros", target=1, steps=4, methods=names)
    smooth = square.explain_array(X, baseline_array="zeros", target=1, steps=4, methods=names,
                                  aug_smooth=True)
    for m in names:
        np.testing.assert_allclose(smooth[m].map, plain[m].map, atol=1e-6)
        np.testing.assert_array_equal(smooth[m].raw, plain[m].raw)  # raw: x's own
