"""The three methods on tiny hand-set models (tests/cam_models.py), against values worked out
on paper. Linear head, logit score: G = V[c,k]/Z everywhere on the path, Z = 4."""

from __future__ import annotations

import numpy as np
import pytest
from cam_models import A0, A1, BIAS, LAYER, V, X, tiny_cam_model, tiny_cam_model_nhwc
from tolerance import ulps

import ort_cam

ALL = ("gradcam", "igcam", "rsi")


@pytest.fixture(scope="module")
def linear():
    return ort_cam.Explainer(tiny_cam_model(), LAYER, score="logit", quiet=True)


@pytest.fixture(scope="module")
def square():
    return ort_cam.Explainer(tiny_cam_model(square=True), LAYER, score="logit", quiet=True)


def test_gradcam_by_hand(linear):
    # c=1: w = V[1]/Z = [0.125, 0.5];  L = ReLU(0.125·A0 + 0.5·A1)
    r = linear.explain_array(X, baseline_array="zeros", target=1, steps=4, methods=["gradcam"])
    np.testing.assert_allclose(r["gradcam"].raw, [[2.125, 0.5], [0.375, 1.0]], rtol=1e-6)
    # c=0: w = [0.25, -0.25];  L = ReLU(0.25·(A0 − A1)) = ReLU(0.25·[[-3, 1.5], [3, 3]])
    r = linear.explain_array(X, baseline_array="zeros", target=0, steps=4, methods=["gradcam"])
    np.testing.assert_allclose(r["gradcam"].raw, [[0, 0.375], [0.75, 0.75]], atol=1e-7)
    # Normalised map: (L − 0) / (0.75 − 0 + 1e-8)
    np.testing.assert_allclose(r["gradcam"].map, [[0, 0.5], [1, 1]], atol=1e-7)
    # positive: w = mean ReLU(G) = [0.25, 0];  L = 0.25·A0
    r = linear.explain_array(X, baseline_array="zeros", target=0, steps=4, methods=["gradcam"],
                             gradcam_weights="positive")
    np.testing.assert_allclose(r["gradcam"].raw, [[0.25, 0.5], [0.75, 1.0]], rtol=1e-6)


def test_score_and_path_by_hand(linear):
    # y_c(x_l) = V[c]·mean(A_l) + b_c with A_l = (l/m)·A:  mean A0 = 2.5, mean A1 = 1.375.
    r = linear.explain_array(X, baseline_array="zeros", target=0, steps=4, methods=["rsi"])
    ym = 2.5 - 1.375 + 0.1
    np.testing.assert_allclose(r.scores_path, [0.1 + (ym - 0.1) * l / 4 for l in range(5)],
                               rtol=1e-6)
    assert r.score == pytest.approx(ym, rel=1e-6)
    np.testing.assert_allclose(r.scores, [ym, 0.5 * 2.5 + 2 * 1.375 - 0.2, -2.5 + 1.375 + 0.3],
                               rtol=1e-6)


def test_igcam_by_hand(linear):
    # Σ_ij G_l[k] = V[c,k];  Δ_l = (l/m)·A, so L = (1/m) Σ_l (l/m) ReLU(A0 − A1) = (m+1)/(2m)·...
    r = linear.explain_array(X, baseline_array="zeros", target=0, steps=4, methods=["igcam"])
    np.testing.assert_allclose(r["igcam"].raw, [[0, 0.9375], [1.875, 1.875]], atol=1e-6)
    # notebook: Σ_{l=0..m-1} GradCAM(x_l) = Σ (l/m)·ReLU(0.25(A0 − A1)) = 1.5·[[0,.375],[.75,.75]]
    r = linear.explain_array(X, baseline_array="zeros", target=0, steps=4, methods=["igcam"],
                             igcam_variant="notebook")
    np.testing.assert_allclose(r["igcam"].raw, [[0, 0.5625], [1.125, 1.125]], atol=1e-6)


def test_rsi_selections_by_hand(linear):
    # Baseline: channel 0 = 0.5, channel 1 = 1.0 everywhere (still >= 0: Relu is the identity).
    x0 = np.stack([np.full((2, 2), 0.5), np.full((2, 2), 1.0)])[None].astype(np.float32)
    # IG = (V[0,k]/Z)(A − A_base): IG0 = .25·(A0 − .5) = [[.125,.375],[.625,.875]] (Σ 2.0)
    #                              IG1 = −.25·(A1 − 1) = [[−.75,.125],[.25,0]]
    expected = {
        # all units: w = [2.0/4, −.375/4] = [.5, −.09375]
        "none": [[0.125, 0.953125], [1.5, 1.90625]],
        # IG > 0: w1 = (.125 + .25)/4 = .09375
        "positive": [[0.875, 1.046875], [1.5, 2.09375]],
        # guided drops (0,1) (A − A_base = −.5 < 0) and (1,0) (A = 0): w1 = 0
        "guided": [[0.5, 1.0], [1.5, 2.0]],
    }
    for rule in ("trapezoid", "riemann"):  # G is constant on the path: both rules agree
        for selection, want in expected.items():
            r = linear.explain_array(X, baseline_array=x0, target=0, steps=3, methods=["rsi"],
                                     rsi_rule=rule, rsi_selection=selection)
            np.testing.assert_allclose(r["rsi"].raw, want, atol=1e-6, err_msg=selection)
            # Σ IG = 2.0 − .375 = y_m − y_0 exactly: the gap is float32 rounding only.
            assert r.completeness_gap < 1e-6


def test_completeness_gap_is_one_over_m_for_riemann_on_square_head(square):
    # y = Σ_k V[c,k] mean(A²), A_l = (l/m)A: Riemann IG = (m+1)/m · (y_m − y_0), so gap = 1/m;
    # the trapezoid rule integrates the linear integrand exactly (gap 0).
    for m in (2, 4, 8, 16):
        r = square.explain_array(X, baseline_array="zeros", target=1, steps=m, methods=["rsi"],
                                 rsi_rule="riemann")
        assert r.completeness_gap == pytest.approx(1 / m, rel=1e-5)
        r = square.explain_array(X, baseline_array="zeros", target=1, steps=m, methods=["rsi"])
        assert r.completeness_gap < 1e-5


def test_rsi_rules_differ_by_hand(square):
    # c=1, V[1] = [.5, 2]: trapezoid IG[k] = V[1,k]/4 · A_k², Riemann = (m+1)/m times that.
    # All IG > 0 and A > 0 where IG > 0, so guided = positive = none on this input.
    m = 4
    ig = {"trapezoid": [0.125 * A0**2, 0.5 * A1**2]}
    ig["riemann"] = [a * (m + 1) / m for a in ig["trapezoid"]]
    for rule, (ig0, ig1) in ig.items():
        w = np.array([ig0.mean(), ig1.mean()])
        want = np.maximum(w[0] * A0 + w[1] * A1, 0)
        r = square.explain_array(X, baseline_array="zeros", target=1, steps=m, methods=["rsi"],
                                 rsi_rule=rule, rsi_selection="none")
        np.testing.assert_allclose(r["rsi"].raw, want, rtol=1e-5)


def test_steps_auto_doubles_until_gap_is_below_tolerance(square):
    # Riemann gap = 1/m: 1/8, 1/16 > 5% and 1/32 < 5%, so auto stops at m = 32.
    r = square.explain_array(X, baseline_array="zeros", target=1, steps="auto",
                             methods=["igcam"], rsi_rule="riemann")
    assert r.steps == 32 and len(r.scores_path) == 33
    assert "rsi" not in r.methods and r.completeness_gap is None
    # Grad-CAM alone needs no path: x is run once and m is 0, auto or not
    r = square.explain_array(X, baseline_array="zeros", target=1, steps="auto",
                             methods=["gradcam"], rsi_rule="riemann")
    assert r.steps == 0 and len(r.scores_path) == 1
    r = square.explain_array(X, baseline_array="zeros", target=1, steps="auto", methods=ALL,
                             rsi_rule="riemann", auto_tolerance=0.2)
    assert r.steps == 8 and r.completeness_gap == pytest.approx(1 / 8, rel=1e-5)


def test_chunk_size_does_not_change_results():
    x0 = np.full_like(X, 0.25)
    outs = []
    for chunk in (1, 2, 5, None):
        ex = ort_cam.Explainer(tiny_cam_model(square=True, softmax=True), LAYER,
                               chunk_size=chunk, quiet=True)
        outs.append(ex.explain_array(X, baseline_array=x0, target=2, steps=9, methods=ALL))
    for r in outs[1:]:
        for name in ALL:
            np.testing.assert_allclose(r[name].raw, outs[0][name].raw, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(r.scores_path, outs[0].scores_path, rtol=1e-6)
        assert r.completeness_gap == pytest.approx(outs[0].completeness_gap, rel=1e-5)


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_probability_score_against_numpy_reference():
    """Softmax on top of the linear head, against a straightforward NumPy implementation of
    METHODS.md with the analytic gradient dp_c/dA[k,i,j] = Σ_j p_c(δ_cj − p_j) V[j,k] / Z."""
    ex = ort_cam.Explainer(tiny_cam_model(), LAYER, score="probability", quiet=True)
    x0 = np.stack([np.full((2, 2), 0.5), np.full((2, 2), 1.0)])[None].astype(np.float32)
    m, c = 6, 0
    r = ex.explain_array(X, baseline_array=x0, target=c, steps=m, methods=ALL,
                         rsi_selection="none")
    xs = [x0[0] + (l / m) * (X[0] - x0[0]) for l in range(m + 1)]
    As = [np.maximum(x, 0).astype(np.float64) for x in xs]
    Gs, ys = [], []
    for a in As:
        p = _softmax(V.astype(np.float64) @ a.mean(axis=(1, 2)) + BIAS.astype(np.float64))
        dz = p[c] * ((np.arange(3) == c) - p)
        Gs.append(np.broadcast_to((dz @ V)[:, None, None] / 4, a.shape))
        ys.append(p[c])
    np.testing.assert_allclose(r.scores_path, ys, rtol=1e-5)
    gc = np.maximum((Gs[m].mean(axis=(1, 2))[:, None, None] * As[m]).sum(0), 0)
    np.testing.assert_allclose(r["gradcam"].raw, gc, rtol=1e-5)
    ig = sum(np.maximum((Gs[l].sum(axis=(1, 2))[:, None, None] * (As[l] - As[0])).sum(0), 0)
             for l in range(1, m + 1)) / m
    np.testing.assert_allclose(r["igcam"].raw, ig, rtol=1e-5, atol=1e-12)
    IG = sum(0.5 * (Gs[l] + Gs[l - 1]) * (As[l] - As[l - 1]) for l in range(1, m + 1))
    rsi = np.maximum((IG.mean(axis=(1, 2))[:, None, None] * As[m]).sum(0), 0)
    np.testing.assert_allclose(r["rsi"].raw, rsi, rtol=1e-5)
    gap = abs(IG.sum() - (ys[m] - ys[0])) / abs(ys[m] - ys[0])
    assert r.completeness_gap == pytest.approx(gap, rel=1e-3, abs=1e-6)



def test_nhwc_and_nchw_models_give_the_same_maps():
    nchw = ort_cam.Explainer(tiny_cam_model(), LAYER, score="logit", quiet=True)
    nhwc = ort_cam.Explainer(tiny_cam_model_nhwc(), LAYER, score="logit", quiet=True)
    assert nchw.channel_axis == 1 and nhwc.channel_axis == 3
    x0 = np.stack([np.full((2, 2), 0.5), np.full((2, 2), 1.0)])[None].astype(np.float32)
    a = nchw.explain_array(X, baseline_array=x0, target=0, steps=5, methods=ALL)
    b = nhwc.explain_array(X.transpose(0, 2, 3, 1), baseline_array=x0.transpose(0, 2, 3, 1),
                           target=0, steps=5, methods=ALL)
    # Two graphs (Transposes and ReduceMean vs GlobalAveragePool and Gemm) sum in other orders:
    # measured up to 1.2e-7 apart (1 float32 ulp at the scores' scale, 1; relative 8e-7 on a
    # score of 0.15 that cancels). atol ulps(16) (1.9e-6): 16x that.
    for name in ALL:
        np.testing.assert_allclose(b[name].raw, a[name].raw, rtol=1e-6, atol=ulps(16))
    np.testing.assert_allclose(b.scores_path, a.scores_path, rtol=1e-6, atol=ulps(16))


def test_bad_inputs_are_one_line_errors(linear):
    with pytest.raises(ort_cam.OrtCamError, match="NaN"):
        linear.explain_array(np.full_like(X, np.nan), baseline_array="zeros")
    with pytest.raises(ort_cam.OrtCamError, match="shape"):
        linear.explain_array(np.zeros((1, 3, 2, 2), np.float32), baseline_array="zeros")
    with pytest.raises(ort_cam.OrtCamError, match="out of range"):
        linear.explain_array(X, baseline_array="zeros", target=7)
    with pytest.raises(ort_cam.OrtCamError, match="unknown option"):
        linear.explain_array(X, baseline_array="zeros", rsi_rules="riemann")
    with pytest.raises(ort_cam.OrtCamError, match="rsi_selection"):
        linear.explain_array(X, baseline_array="zeros", rsi_selection="all")
    with pytest.raises(ort_cam.OrtCamError, match="unknown method"):
        linear.explain_array(X, baseline_array="zeros", methods=["gradcam++"])
